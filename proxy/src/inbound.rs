//! The inbound side: a peer sidecar's call, over mTLS, to the local app.
//!
//! ```text
//!  accept ─▶ TLS handshake ─▶ PeerIdentity ─▶ per request, through crate::hop::serve:
//!  (cap)     (SPIFFE verifier)  (verified SVID)   admit: verify the hop token against this peer
//!                                                 prepare: set XFCC; send: forward to the app
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hopgate_config::{InboundConfig, SpiffeId};
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;

use crate::connection::ConnectionServer;
use crate::hop::{self, HopTelemetry, HopToken, Known, Parties, Shared};
use crate::http::authorize::{Authorizer, HttpFacts};
use crate::http::{Body, RequestError};

use crate::identity::IdentityStore;
use crate::listener::Listener;
use crate::shutdown;
use crate::streams::{OpenParties, Streams};
use crate::telemetry::metrics::Direction;
use crate::telemetry::trace::HopSpan;
use crate::telemetry::traceparent::CallerTrace;
use crate::token::VerifiedClaims;

mod accept;
mod app;
mod authenticate;
mod client_cert;
#[cfg(test)]
mod tests;

use accept::{Connection, Peer};
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
    /// Binds the inbound listener; the app's address, when it is a name, is resolved again
    /// every `dns_refresh`.
    ///
    /// # Errors
    /// The bind error.
    pub(crate) fn bind(
        config: &InboundConfig,
        dns_refresh: Duration,
        identity: Arc<IdentityStore>,
        authenticator: Authenticator,
        authorizer: Authorizer,
        telemetry: HopTelemetry,
        streams: Streams,
    ) -> io::Result<Self> {
        let limits = config.limits();
        let timeouts = config.timeouts();
        let listener = Listener::bind(config.listen(), limits.max_connections())?;
        let app_client = App::new(
            config.app(),
            dns_refresh,
            timeouts.app_connect(),
            timeouts.app_response(),
        );
        Ok(Self {
            listener,
            server: ConnectionServer::new(timeouts, limits),
            handshake_timeout: timeouts.header_read(),
            side: Arc::new(InboundSide {
                shared: Shared::new(authorizer, telemetry, timeouts, limits, streams),
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
        crate::streams::watch(&self.side, &self.side.shared.streams, &drain);
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
    fn on_start(&self, peer: &Peer, span: &HopSpan) {
        span.record_hop(peer.identity.id(), peer.own());
        span.record_client(&peer.client_ip);
    }

    /// The hop token must verify against this connection's peer before anything reads it.
    fn admit(
        &self,
        peer: &Peer,
        parts: &Parts,
        _request: &HttpFacts<'_>,
        _trace: Option<&CallerTrace>,
        _span: &HopSpan,
    ) -> Result<Option<VerifiedClaims>, RequestError> {
        // The newest snapshot, per request: new bundles judge the next token's `x5c` at once,
        // and the connection's own chain once per update (RVK-03).
        let generation = self.identity.generation();
        let snapshot = self.identity.snapshot().ok_or(RequestError::NoIdentity)?;
        if !peer.still_trusted(generation, &snapshot) {
            return Err(RequestError::Unauthenticated("trust"));
        }
        self.authenticator
            .authenticate(&parts.headers, &peer.identity, &snapshot)
    }

    fn parties<'a>(&'a self, peer: &'a Peer, token: &'a Option<VerifiedClaims>) -> Parties<'a> {
        Parties {
            peer: Some(peer.identity.id()),
            own: peer.own(),
            dest: peer.own(),
            authority: None,
            token: token.as_ref().map(HopToken::Verified),
            route: None,
            client_addr: Some(peer.remote),
        }
    }

    fn known(&self, peer: &Peer) -> Known {
        Known {
            principal: Some(peer.identity.id().clone()),
            resource: Some(peer.own().clone()),
            client_addr: Some(peer.remote),
        }
    }

    /// The app trusts XFCC to name the caller: whatever the caller sent is replaced by the
    /// identity this connection proved. A hop token still present has just been verified
    /// (aud = this workload), so the app may relay it.
    fn prepare(&self, peer: &Peer, _token: &Option<VerifiedClaims>, parts: &mut Parts) {
        client_cert::set_client_cert_header(
            &mut parts.headers,
            &peer.xfcc,
            self.authenticator.header(),
        );
    }

    fn send(
        &self,
        _token: &Option<VerifiedClaims>,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, RequestError>> + Send {
        self.app_client.forward(req)
    }

    fn peer<'a>(&'a self, peer: &'a Peer) -> Option<&'a SpiffeId> {
        Some(peer.identity.id())
    }

    fn open_parties(
        &self,
        peer: &Peer,
        _token: &Option<VerifiedClaims>,
    ) -> (Arc<OpenParties>, u64) {
        peer.open_parties()
    }
}
