//! The inbound side: a peer sidecar's call, over mTLS, to the local app.
//!
//! ```text
//!  accept ─▶ TLS handshake ─▶ PeerIdentity ─▶ per request, through crate::hop::serve:
//!  (cap)     (SPIFFE verifier)  (verified SVID)   admit: verify the hop token against this peer
//!                                                 prepare: set XFCC; send: forward to the app
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hopgate_config::InboundConfig;
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio_rustls::TlsAcceptor;

use crate::connection::ConnectionServer;
use crate::hop::{self, Hop, HopTelemetry, HopToken, Shared};
use crate::http::authorize::Authorizer;
use crate::http::{Body, RequestError, headers};

use crate::listener::{Accepted, Listener};
use crate::shutdown;
use crate::telemetry::metrics::{Direction, HandshakeFailureReason};
use crate::telemetry::trace::HopSpan;
use crate::tls::{IdentityStore, PeerIdentity, classify_handshake_error};
use crate::token::VerifiedClaims;

mod app;
mod authenticate;
mod client_cert;

pub use app::App;
pub use authenticate::Authenticator;

/// The inbound listener, bound and ready to serve.
#[derive(Debug)]
pub struct Inbound {
    listener: Listener,
    server: ConnectionServer,
    handshake_timeout: Duration,
    side: Arc<InboundSide>,
}

/// What every inbound request needs, shared by all connections: the inbound [`hop::Side`].
#[derive(Debug)]
struct InboundSide {
    shared: Shared,
    identity: Arc<IdentityStore>,
    authenticator: Authenticator,
    app_client: App,
}

// === impl Inbound ===

impl Inbound {
    /// Binds the inbound listener.
    ///
    /// # Errors
    /// The bind error.
    pub fn bind(
        config: &InboundConfig,
        identity: Arc<IdentityStore>,
        authenticator: Authenticator,
        authorizer: Authorizer,
        telemetry: HopTelemetry,
    ) -> io::Result<Self> {
        let limits = config.limits();
        let timeouts = config.timeouts();
        let listener = Listener::bind(config.listen(), limits.max_connections())?;
        let app_client = App::new(
            config.app(),
            timeouts.app_connect(),
            timeouts.app_response(),
        );
        Ok(Self {
            listener,
            server: ConnectionServer::new(timeouts, limits),
            handshake_timeout: timeouts.header_read(),
            side: Arc::new(InboundSide {
                shared: Shared::new(authorizer, telemetry, limits),
                identity,
                authenticator,
                app_client,
            }),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// Never, for a bound listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until shutdown is signaled; the listener closes on return
    /// while spawned connections drain on their own.
    pub async fn serve(self, mut drain: shutdown::Watch) {
        loop {
            let accepted = tokio::select! {
                () = drain.signaled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let conn = Connection {
                side: Arc::clone(&self.side),
                server: self.server.clone(),
                handshake_timeout: self.handshake_timeout,
            };
            tokio::spawn(conn.serve(accepted, drain.clone()));
        }
    }
}

/// A verified connection's facts, shared by its requests.
#[derive(Debug)]
struct Peer {
    identity: PeerIdentity,
    own: hopgate_config::SpiffeId,
    xfcc: http::HeaderValue,
}

/// One accepted TCP connection on its way through the handshake to HTTP.
struct Connection {
    side: Arc<InboundSide>,
    server: ConnectionServer,
    handshake_timeout: Duration,
}

// === impl Connection ===

impl Connection {
    async fn serve(self, accepted: Accepted, drain: shutdown::Watch) {
        let Accepted {
            stream,
            remote,
            permit,
        } = accepted;
        let metrics = &self.side.shared.telemetry.metrics;
        // The config is taken per connection, so a rotated SVID or bundle applies to the next
        // handshake while established connections keep the one they proved themselves with.
        let acceptor = TlsAcceptor::from(self.side.identity.server_config());
        let tls = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                let reason = classify_handshake_error(&err);
                metrics.record_handshake_failure(reason);
                tracing::info!(client.addr = %remote, reason = reason.as_str(), error = %err, "tls handshake failed");
                return;
            }
            Err(_) => {
                metrics.record_handshake_failure(HandshakeFailureReason::Timeout);
                tracing::info!(client.addr = %remote, reason = "timeout", "tls handshake failed");
                return;
            }
        };
        let Some(peer) = PeerIdentity::from_server_connection(tls.get_ref().1) else {
            // The verifier admitted the chain, so this cannot happen; refuse rather than guess.
            metrics.record_handshake_failure(HandshakeFailureReason::InvalidSvid);
            tracing::warn!(client.addr = %remote, "verified connection has no SPIFFE ID");
            return;
        };
        tracing::debug!(client.addr = %remote, peer.id = %peer.id(), "connection accepted");
        // What every request on this connection shares is worked out once: the identities on
        // both ends (as of the handshake) and the identity header the app will receive.
        let own = self.side.identity.current().svid().id().clone();
        let Some(xfcc) = client_cert::client_cert_value(&own, &peer) else {
            tracing::warn!(client.addr = %remote, "peer identity does not fit a header");
            return;
        };
        let peer = Arc::new(Peer {
            identity: peer,
            own,
            xfcc,
        });
        let side = self.side;
        let service = hyper::service::service_fn(move |req| {
            let side = Arc::clone(&side);
            let peer = Arc::clone(&peer);
            async move { Ok::<_, Infallible>(hop::serve(&*side, &*peer, req).await) }
        });
        self.server.serve(tls, service, drain).await;
        drop(permit);
    }
}

// === impl InboundSide ===

impl hop::Side for InboundSide {
    type Conn = Peer;
    /// The hop token, verified against this connection's peer, when the caller sent one.
    type Admission = Option<VerifiedClaims>;
    const DIRECTION: Direction = Direction::Inbound;

    fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The handshake proved who calls whom before the first byte of the request.
    fn on_start(&self, peer: &Peer, req: &Request<Incoming>, span: &HopSpan) {
        let authority = headers::authority(req.uri(), req.headers()).unwrap_or_default();
        span.record_hop(peer.identity.id(), &peer.own, authority);
    }

    /// The hop token must verify against this connection's peer before anything reads it.
    fn admit(
        &self,
        peer: &Peer,
        parts: &mut Parts,
        _span: &HopSpan,
    ) -> Result<Option<VerifiedClaims>, RequestError> {
        self.authenticator
            .authenticate(&parts.headers, &peer.identity, &self.identity)
    }

    fn hop<'a>(&'a self, peer: &'a Peer, token: &'a Option<VerifiedClaims>) -> Hop<'a> {
        Hop {
            caller: peer.identity.id(),
            callee: &peer.own,
            token: token.as_ref().map(HopToken::Verified),
        }
    }

    /// The app trusts XFCC to name the caller: whatever the caller sent is replaced by the
    /// identity this connection proved. A hop token still present has just been verified
    /// (aud = this workload), so the app may relay it.
    fn prepare(&self, peer: &Peer, parts: &mut Parts) {
        client_cert::set_client_cert_header(&mut parts.headers, &peer.xfcc);
    }

    fn send(
        &self,
        _token: Option<VerifiedClaims>,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, RequestError>> + Send {
        self.app_client.forward(req)
    }

    fn log_failure(&self, peer: &Peer, err: &RequestError) {
        tracing::info!(peer.id = %peer.identity.id(), status = err.status().as_u16(), error = %err, "request failed");
    }
}
