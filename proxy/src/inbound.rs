//! The inbound side: a peer sidecar's call, over mTLS, to the local app.
//!
//! ```text
//!  accept ─▶ TLS handshake ─▶ PeerIdentity ─▶ per request: in-flight cap ─▶ strip hop-by-hop
//!  (cap)     (SPIFFE verifier)  (verified SVID)   ─▶ Cedar decision + audit ─▶ set XFCC ─▶ forward to app
//! ```

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopgate_config::InboundConfig;
use hopgate_policy::Direction as PolicyDirection;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::connection::ConnectionServer;
use crate::http::authenticate::Authenticator;
use crate::http::authorize::{Authorizer, TokenSeen};
use crate::http::forward::Forwarder;
use crate::http::{Body, RequestError, WithoutTrailers, client_cert, headers, path, stream_body};
use crate::listener::{Accepted, Listener};
use crate::shutdown;
use crate::telemetry::metrics::{DecisionLabel, Direction, HandshakeFailureReason, ProxyMetrics};
use crate::telemetry::trace::{HopSpan, SpanKind, Tracing, authority};
use crate::tls::{IdentityStore, PeerIdentity, classify_handshake_error};
use crate::token::VerifiedClaims;

/// The inbound listener, bound and ready to serve.
#[derive(Debug)]
pub struct Inbound {
    listener: Listener,
    server: ConnectionServer,
    handshake_timeout: Duration,
    state: Arc<State>,
}

/// What every inbound request needs, shared by all connections.
#[derive(Debug)]
struct State {
    identity: Arc<IdentityStore>,
    authenticator: Authenticator,
    authorizer: Authorizer,
    forwarder: Forwarder,
    tracing: Tracing,
    metrics: Arc<ProxyMetrics>,
    in_flight: Arc<Semaphore>,
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
        tracing: Tracing,
        metrics: Arc<ProxyMetrics>,
    ) -> io::Result<Self> {
        let limits = config.limits();
        let timeouts = config.timeouts();
        let listener = Listener::bind(config.listen(), limits.max_connections())?;
        let forwarder = Forwarder::new(
            config.app(),
            timeouts.app_connect(),
            timeouts.app_response(),
        );
        // One HTTP/2 connection may carry many requests, so requests get their own, larger cap;
        // past it the caller gets a fast 503 rather than an unbounded queue.
        let max_in_flight = limits
            .max_connections()
            .saturating_mul(usize::try_from(limits.max_concurrent_streams()).unwrap_or(1))
            .min(Semaphore::MAX_PERMITS);
        Ok(Self {
            listener,
            server: ConnectionServer::new(timeouts, limits),
            handshake_timeout: timeouts.header_read(),
            state: Arc::new(State {
                identity,
                authenticator,
                authorizer,
                forwarder,
                tracing,
                metrics,
                in_flight: Arc::new(Semaphore::new(max_in_flight)),
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
                state: Arc::clone(&self.state),
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
    state: Arc<State>,
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
        let metrics = &self.state.metrics;
        // The config is taken per connection, so a rotated SVID or bundle applies to the next
        // handshake while established connections keep the one they proved themselves with.
        let acceptor = TlsAcceptor::from(self.state.identity.server_config());
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
        let own = self.state.identity.current().svid().id().clone();
        let Some(xfcc) = client_cert::client_cert_value(&own, &peer) else {
            tracing::warn!(client.addr = %remote, "peer identity does not fit a header");
            return;
        };
        let peer = Arc::new(Peer {
            identity: peer,
            own,
            xfcc,
        });
        let state = self.state;
        let service = hyper::service::service_fn(move |req| {
            let state = Arc::clone(&state);
            let peer = Arc::clone(&peer);
            async move { Ok::<_, Infallible>(state.handle(&peer, req).await) }
        });
        self.server.serve(tls, service, drain).await;
        drop(permit);
    }
}

// === impl State ===

impl State {
    async fn handle(&self, peer: &Peer, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let span = self.tracing.request_span(
            SpanKind::Inbound,
            req.headers(),
            req.method().as_str(),
            req.uri().path(),
            req.version(),
        );
        span.record_hop(peer.identity.id(), &peer.own, authority(&req));
        let (rsp, decision) = match self.forward(peer, req, &span).await {
            Ok(forwarded) => forwarded,
            Err(err) => {
                tracing::info!(peer.id = %peer.identity.id(), status = err.status().as_u16(), error = %err, "request failed");
                span.record_refusal(&err);
                let decision = err.decision();
                (err.into_response(), decision)
            }
        };
        span.record_status(rsp.status().as_u16());
        self.metrics
            .record_request(Direction::Inbound, decision, start.elapsed());
        rsp
    }

    async fn forward(
        &self,
        peer: &Peer,
        req: Request<Incoming>,
        span: &HopSpan,
    ) -> Result<(Response<Body>, DecisionLabel), RequestError> {
        // Held until the response head is back: that is the work an overload must bound.
        let _permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| RequestError::Overloaded)?;
        // Before any work: a request whose audit record could not be kept is not served
        // (`telemetry.audit.when_full: refuse` while stdout is not read).
        self.authorizer.check_audit()?;
        let (mut parts, body) = req.into_parts();
        // Connection-scoped fields describe the caller's hop, not the request (RFC 9110 §7.6.1).
        headers::strip_hop_by_hop(&mut parts.headers)
            .map_err(|_| RequestError::BadRequest("connection header nominates a framing field"))?;
        // The policy reads the path's bytes and one authority; a path the app could resolve
        // differently, or a request naming two hosts, is refused.
        path::check(parts.uri.path()).map_err(RequestError::BadRequest)?;
        headers::check_authority(&parts).map_err(RequestError::BadRequest)?;
        // The hop token must verify against this connection's peer before anything reads it.
        let token =
            self.authenticator
                .authenticate(&parts.headers, &peer.identity, &self.identity)?;
        // The decision reads the head after hygiene and before anything is added, so the policy
        // sees what the caller sent and the app will see; the snapshot is read per request.
        // The token's facts are built only for a reader: a policy or a span.
        let facts = token
            .as_ref()
            .filter(|_| self.authorizer.has_policies() || span.is_enabled())
            .map(VerifiedClaims::facts);
        if let (Some(token), Some(facts)) = (&token, &facts) {
            span.record_token(facts, token.jti(), token.prv());
        }
        let decision = self.authorizer.authorize_token(
            &parts,
            peer.identity.id(),
            &peer.own,
            PolicyDirection::Inbound,
            token
                .as_ref()
                .zip(facts.as_ref())
                .map(|(t, facts)| TokenSeen {
                    facts,
                    jti: t.jti(),
                }),
            span,
        )?;
        // The app trusts XFCC to name the caller: whatever the caller sent is replaced by the
        // identity this connection proved. A hop token still present has just been verified
        // (aud = this workload), so the app may relay it.
        client_cert::set_client_cert_header(&mut parts.headers, &peer.xfcc);
        // Trailers arrive after the head was cleaned: none reach the app, and neither does the
        // header announcing them.
        parts.headers.remove(http::header::TRAILER);
        // The app's spans become children of this hop's span.
        self.tracing.inject(span, &mut parts.headers);
        let req = Request::from_parts(parts, stream_body(WithoutTrailers::new(body)));
        let rsp = self.forwarder.forward(req).await?;
        let (mut parts, body) = rsp.into_parts();
        // The app's own hop-by-hop fields stop here too; a framing field it wrongly nominated
        // is kept, since hyper re-frames the body for the caller anyway.
        let _ = headers::strip_hop_by_hop(&mut parts.headers);
        Ok((Response::from_parts(parts, stream_body(body)), decision))
    }
}
