//! The outbound side: the local app's call, in plain HTTP, to a destination sidecar over mTLS.
//!
//! ```text
//!  app ──http──▶ listener ─▶ route (Host | absolute-form | SO_ORIGINAL_DST) ─▶ strip hop-by-hop
//!      ─▶ credential swap (verify relayed token | origin token, mint for the route) ─▶ egress
//!         Cedar check (policy.outbound) ─▶ mTLS to routes[].address, server SVID = identity
//! ```
//!
//! A request no route matches is answered 403 `no_route`: there is no plaintext fall-through.
//! In transparent mode (`outbound.transparent`) a connection iptables redirected carries its
//! destination in `SO_ORIGINAL_DST`, matched against `routes[].original_dst`; a connection made
//! to the listener itself is routed by `Host`, as in explicit mode.
//!
//! The outbound side shares the inbound side's timeouts and limits (`inbound.timeouts`,
//! `inbound.limits`, or their defaults): `app_connect` bounds the connection to the destination
//! sidecar, `app_response` the wait for its response head.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use hopgate_config::{InboundConfig, InboundLimits, InboundTimeouts, OutboundConfig, Route};
use http::request::Parts;
use http::uri::Authority;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::ConnectionServer;
use crate::dns::Resolved;
use crate::hop::{self, HopTelemetry, HopToken, Known, Parties, Shared};
use crate::http::authorize::{Authorizer, HttpFacts};
use crate::http::{Body, Malformed, RequestError};
use crate::identity::IdentityStore;
use crate::listener::{Accepted, HeadWatch, Listener};
use crate::shutdown;
use crate::streams::{OpenParties, Streams};
use crate::telemetry::metrics::Direction;
use crate::telemetry::trace::HopSpan;
use crate::telemetry::traceparent::CallerTrace;

mod delegate;
mod linger;
mod route;
#[cfg(test)]
mod tests;
mod upstream;

use delegate::Delegation;
pub use delegate::Delegator;
use route::Target;
use upstream::Upstream;

/// The outbound listener, bound and ready to serve.
#[derive(Debug)]
pub struct Outbound {
    listener: Listener,
    server: ConnectionServer,
    transparent: bool,
    side: Arc<OutboundSide>,
}

/// What every outbound request needs, shared by all connections: the outbound [`hop::Side`].
#[derive(Debug)]
struct OutboundSide {
    shared: Shared,
    identity: Arc<IdentityStore>,
    routes: Vec<Arc<Destination>>,
    delegator: Delegator,
}

/// What admitting an outbound request worked out, for sending it.
struct Outgoing {
    destination: Arc<Destination>,
    authority: Authority,
    /// The token, and the identity snapshot it was minted with: that picks the connection
    /// pool, so the token's binding matches the connection it travels on.
    delegation: Delegation,
}

/// What an app connection's requests share: how they find their route, and where they come
/// from.
#[derive(Debug)]
struct AppConn {
    target: Target,
    /// The app's socket address (none on the stack tests' in-memory pipes).
    remote: Option<SocketAddr>,
    /// Its IP, formatted once, for the spans' `client.address`.
    client_ip: Option<Box<str>>,
}

/// A route with its pooled client.
#[derive(Debug)]
struct Destination {
    route: Route,
    /// The route's `original_dst`, resolved when it is a name (transparent mode only).
    original: Option<Resolved>,
    upstream: Upstream,
    /// What its open requests are kept with, made by the first and shared by the next ones
    /// sent under the same SVID.
    open: Mutex<Option<Arc<OpenParties>>>,
}

// === impl Outbound ===

impl Outbound {
    /// Binds the outbound listener, with the timeouts and limits of `inbound` (or their defaults).
    ///
    /// # Errors
    /// The bind error.
    pub(crate) fn bind(
        config: &OutboundConfig,
        inbound: Option<&InboundConfig>,
        identity: Arc<IdentityStore>,
        delegator: Delegator,
        authorizer: Authorizer,
        telemetry: HopTelemetry,
        streams: Streams,
    ) -> io::Result<Self> {
        let defaults = (InboundTimeouts::default(), InboundLimits::default());
        let (timeouts, limits) =
            inbound.map_or((&defaults.0, &defaults.1), |i| (i.timeouts(), i.limits()));
        let listener = Listener::bind(config.listen(), limits.max_connections())?;
        if !config.transparent() {
            for route in config
                .routes()
                .iter()
                .filter(|r| r.original_dst().is_some())
            {
                tracing::warn!(
                    route.host = route.host(),
                    "outbound.routes[].original_dst is only matched with outbound.transparent: true"
                );
            }
        }
        let routes = destinations(config, timeouts);
        Ok(Self {
            listener,
            server: ConnectionServer::new(timeouts, limits),
            transparent: config.transparent(),
            side: Arc::new(OutboundSide {
                shared: Shared::new(authorizer, telemetry, timeouts, limits, streams),
                identity,
                routes,
                delegator,
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

    /// Accepts and serves connections until shutdown is signaled.
    pub async fn serve(self, mut drain: shutdown::Watch) {
        crate::streams::watch(&self.side, &self.side.shared.streams, &drain);
        loop {
            let accepted = tokio::select! {
                () = drain.signaled() => return,
                accepted = self.listener.accept() => accepted,
            };
            let Accepted {
                stream,
                remote,
                permit,
                head,
            } = accepted;
            let (side, server, drain) =
                (Arc::clone(&self.side), self.server.clone(), drain.clone());
            let transparent = self.transparent;
            tokio::spawn(async move {
                // In the connection's task: a route's `original_dst` name may still be
                // waiting for its first DNS answer.
                let target = if transparent {
                    side.original_target(&stream, remote).await
                } else {
                    Target::ByAuthority
                };
                // At the cap, a connection without a request head yet may be told to give its
                // place to a new one (DOS-04).
                let serve = serve_io(
                    side,
                    server,
                    stream,
                    target,
                    Some(remote),
                    drain,
                    head.clone(),
                );
                tokio::select! {
                    () = serve => {}
                    () = head.evicted() => {
                        tracing::debug!(client.addr = %remote, "connection closed at the cap: no request head yet");
                    }
                }
                drop(permit);
            });
        }
    }
}

// === impl Destination ===

impl Destination {
    /// The parties of an open request sent on this route by `own`.
    fn open_parties(&self, own: &hopgate_config::SpiffeId) -> Arc<OpenParties> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match &*open {
            Some(parties) if parties.own == *own => Arc::clone(parties),
            _ => {
                let parties = Arc::new(OpenParties {
                    peer: None,
                    own: own.clone(),
                    dest: Some(self.route.identity().clone()),
                    peer_chain: None,
                });
                *open = Some(Arc::clone(&parties));
                parties
            }
        }
    }
}

/// Every route with its pooled client, in configuration order.
fn destinations(config: &OutboundConfig, timeouts: &InboundTimeouts) -> Vec<Arc<Destination>> {
    config
        .routes()
        .iter()
        .enumerate()
        .map(|(index, route)| {
            Arc::new(Destination {
                route: route.clone(),
                original: route
                    .original_dst()
                    .filter(|_| config.transparent())
                    .map(|dst| Resolved::new(dst, config.dns_refresh())),
                upstream: Upstream::new(
                    route,
                    index,
                    config.dns_refresh(),
                    timeouts.app_connect(),
                    timeouts.app_response(),
                ),
                open: Mutex::default(),
            })
        })
        .collect()
}

/// The app's HTTP over any byte stream (a TCP socket, or an in-memory pipe in the stack
/// tests), each request through the hop runner.
async fn serve_io<IO>(
    side: Arc<OutboundSide>,
    server: ConnectionServer,
    stream: IO,
    target: Target,
    remote: Option<SocketAddr>,
    drain: shutdown::Watch,
    head: HeadWatch,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let accepted = tokio::time::Instant::now();
    let client_ip = remote.map(crate::telemetry::trace::client_ip);
    let conn = Arc::new(AppConn {
        target,
        remote,
        client_ip,
    });
    let service = hyper::service::service_fn(move |req| {
        let side = Arc::clone(&side);
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(hop::serve(&*side, &*conn, req).await) }
    });
    server.serve(stream, service, drain, accepted, head).await;
}

// === impl OutboundSide ===

impl hop::Side for OutboundSide {
    type Conn = AppConn;
    type Admission = Outgoing;
    const DIRECTION: Direction = Direction::Outbound;

    fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The app's address is known before anything is read.
    fn on_start(&self, conn: &AppConn, span: &HopSpan) {
        if let Some(ip) = &conn.client_ip {
            span.record_client(ip);
        }
    }

    /// A tunnel would carry bytes no policy or token ever sees.
    fn screen(&self, parts: &Parts) -> Result<(), RequestError> {
        if parts.method == Method::CONNECT {
            return Err(RequestError::BadRequest(
                Malformed::Method,
                "CONNECT tunnels are not proxied",
            ));
        }
        Ok(())
    }

    /// Router, policy and destination read one authority; the app's credential is verified
    /// and exchanged for a token scoped to the route.
    fn admit(
        &self,
        conn: &AppConn,
        parts: &Parts,
        request: &HttpFacts<'_>,
        trace: Option<&CallerTrace>,
        span: &HopSpan,
    ) -> Result<Outgoing, RequestError> {
        let destination = match conn.target {
            Target::Fixed(route) => route.and_then(|i| self.routes.get(i)),
            Target::ByAuthority => request.authority.and_then(|a| self.by_authority(a)),
        }
        .ok_or(RequestError::NoRoute)?;
        let route = &destination.route;
        let authority = Authority::try_from(request.authority.unwrap_or(route.host()))
            .map_err(|_| RequestError::BadRequest(Malformed::Authority, "invalid authority"))?;
        // The token is bound to the SVID of `identity`, so it must travel on a connection made
        // with that same snapshot (`send` below), whatever rotates in between.
        let delegation = self.delegator.delegate(
            &parts.headers,
            &request.intent,
            route,
            self.identity.snapshot().ok_or(RequestError::NoIdentity)?,
            trace.map(CallerTrace::trace_id_bytes),
        )?;
        span.record_hop(delegation.identity.id(), route.identity());
        Ok(Outgoing {
            destination: Arc::clone(destination),
            authority,
            delegation,
        })
    }

    /// The egress decision reads the token that is about to leave (`policy.outbound`).
    fn parties<'a>(&'a self, conn: &'a AppConn, out: &'a Outgoing) -> Parties<'a> {
        Parties {
            peer: None,
            own: out.delegation.identity.id(),
            dest: out.destination.route.identity(),
            authority: Some(out.authority.as_str()),
            token: Some(HopToken::Minted(&out.delegation.token)),
            route: Some(out.destination.route.host()),
            client_addr: conn.remote,
        }
    }

    fn known(&self, conn: &AppConn) -> Known {
        Known {
            principal: self.identity.snapshot().map(|s| s.id().clone()),
            resource: None,
            client_addr: conn.remote,
        }
    }

    fn open_parties(&self, _conn: &AppConn, out: &Outgoing) -> (Arc<OpenParties>, u64) {
        (
            out.destination.open_parties(out.delegation.identity.id()),
            0,
        )
    }

    /// Only the minted token crosses the hop.
    fn prepare(&self, _conn: &AppConn, out: &Outgoing, parts: &mut Parts) {
        self.delegator.swap(&mut parts.headers, &out.delegation);
    }

    async fn send(
        &self,
        out: &Outgoing,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, RequestError> {
        out.destination
            .upstream
            .send(req, out.authority.clone(), &out.delegation.identity)
            .await
    }
}
