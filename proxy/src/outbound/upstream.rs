//! mTLS origination to a destination sidecar: this workload's SVID as client certificate, the
//! server's SVID checked against the route's `identity` exactly (no DNS names), HTTP/2 when the
//! server offers it by ALPN, HTTP/1.1 otherwise.
//!
//! The route's address may be a name: each new connection tries every address it resolves to
//! now, in turn (see [`crate::dns`]), and when none answers, asks for a new lookup. DNS says
//! only where to connect; the server proves who it is by its SVID.
//!
//! One pooled client per route: an HTTP/2 connection is shared by every request to that
//! destination and replaced when it fails or the server closes it; HTTP/1.1 connections are
//! kept alive and reused.
//!
//! **A pool belongs to one identity snapshot.** A hop token's `cnf` names the SVID leaf that
//! minted it, and the receiver checks it against the certificate of the connection the token
//! arrives on. So a token minted after a rotation must not travel on a connection made before
//! it. [`Upstream::send`] takes the identity the token was minted with and picks the pool of
//! that identity: when the SVID (or the bundles) change, the first request minted with the new
//! snapshot starts a new pool, whose connections present the new SVID, and the old pool is kept
//! for requests minted just before the swap. Its connections are not cut: a long stream on one
//! keeps going until it ends, and idle ones close at the pool's idle timeout. The other choice,
//! minting with the SVID of whichever connection hyper picks, would need the token to be signed
//! after the connection is chosen, inside the client; a pool per identity keeps minting where
//! it is and costs one handshake per rotation.
//!
//! Which of the two a destination speaks is learnt once, by a handshake of its own (the probe),
//! before the first request: a pool that learnt it from the first request's connection would
//! let a burst of concurrent first requests open one connection each, because only a client
//! that knows it speaks HTTP/2 waits for one connection instead of racing. After a connection
//! failure the protocol is probed again (the destination may have been replaced).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hopgate_config::{Route, SpiffeId};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header::HOST};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::linger::Linger;
use crate::dns::Resolved;
use crate::http::{Body, RequestError};
use crate::identity::IdentitySnapshot;
use crate::tls::describe_tls_error;

/// The pool's idle connections are closed before a peer sidecar's default idle timeout (60 s)
/// would close them under a request.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// A pooled mTLS client to one route's destination sidecar.
#[derive(Debug)]
pub(crate) struct Upstream {
    target: Arc<Target>,
    response_timeout: Duration,
    /// The pool of the newest identity seen, and the one before it (for requests minted just
    /// before a rotation).
    current: ArcSwapOption<Pool>,
    previous: ArcSwapOption<Pool>,
    // INVARIANT: held while a new pool is made, so two requests seeing a new identity at once
    // make one pool, not two.
    rotating: Mutex<()>,
}

/// Where a route's connections go and whom they must reach.
#[derive(Debug)]
struct Target {
    address: Resolved,
    /// The route's index in `outbound.routes`: which of a snapshot's client configs is ours
    /// (each checks the server's SVID is exactly the route's `identity`).
    index: usize,
    expected: SpiffeId,
    host: String,
    connect_timeout: Duration,
}

/// The clients of one identity snapshot: every connection they make presents its SVID.
struct Pool {
    identity: Arc<IdentitySnapshot>,
    /// For a destination that selected `h2` by ALPN: one shared connection, connects deduplicated.
    h2: Client<MtlsConnector, Body>,
    /// For one that did not: HTTP/1.1 keep-alive connections.
    http1: Client<MtlsConnector, Body>,
    connector: MtlsConnector,
    protocol: AtomicProtocol,
    probe: tokio::sync::Mutex<()>,
}

/// What a destination speaks, as far as the pool knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Protocol {
    /// Not probed yet, or to be probed again after a connection failure.
    Unknown = 0,
    /// It selected `h2` by ALPN.
    H2 = 1,
    /// It did not.
    Http1 = 2,
}

/// A [`Protocol`] read and written by every request of a pool, without a lock.
#[derive(Debug)]
struct AtomicProtocol(AtomicU8);

impl AtomicProtocol {
    fn new(protocol: Protocol) -> Self {
        Self(AtomicU8::new(protocol as u8))
    }

    fn load(&self) -> Protocol {
        match self.0.load(Ordering::Acquire) {
            1 => Protocol::H2,
            2 => Protocol::Http1,
            _ => Protocol::Unknown,
        }
    }

    fn store(&self, protocol: Protocol) {
        self.0.store(protocol as u8, Ordering::Release);
    }
}

/// Makes the TCP + TLS connections for one route, as one identity.
#[derive(Clone)]
struct MtlsConnector {
    target: Arc<Target>,
    config: Arc<ClientConfig>,
}

pin_project! {
    /// A client TLS stream that tells the pool which protocol ALPN chose.
    struct MtlsStream {
        #[pin]
        inner: TlsStream<TcpStream>,
    }
}

// === impl Upstream ===

impl Upstream {
    /// A client for `route`, the `index`th of `outbound.routes`, resolving its address again
    /// every `dns_refresh` when it is a name, connecting to each address within
    /// `connect_timeout` and waiting at most `response_timeout` for a response head. Must be
    /// called on a tokio runtime.
    pub(crate) fn new(
        route: &Route,
        index: usize,
        dns_refresh: Duration,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Self {
            target: Arc::new(Target {
                address: Resolved::new(route.address(), dns_refresh),
                index,
                expected: route.identity().clone(),
                host: route.host().to_owned(),
                connect_timeout,
            }),
            response_timeout,
            current: ArcSwapOption::empty(),
            previous: ArcSwapOption::empty(),
            rotating: Mutex::new(()),
        }
    }

    /// Sends `req` (origin-form, its authority in `authority`) to the destination sidecar on a
    /// connection made with `identity`, the snapshot its hop token was minted with, and returns
    /// the response with the body still streaming.
    ///
    /// # Errors
    /// [`RequestError::UpstreamConnect`] when the connection or the TLS handshake fails (a wrong
    /// server identity among them), [`RequestError::UpstreamTimeout`] when no response head
    /// arrives in time.
    pub(crate) async fn send(
        &self,
        req: Request<Body>,
        authority: Authority,
        identity: &Arc<IdentitySnapshot>,
    ) -> Result<Response<Incoming>, RequestError> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|_| RequestError::Internal("upstream uri"))?;
        // One authority, in the URI: a `Host` beside it would name the host twice on HTTP/2.
        parts.headers.remove(HOST);
        parts.version = Version::HTTP_11;
        let pool = self.pool_for(identity)?;
        let (client, protocol) = pool.client().await?;
        // Dropped before its head (the caller went away), an HTTP/2 call lingers, so that
        // callers leaving together do not trip the destination's rapid-reset guard (DOS-07).
        // An HTTP/1.1 destination has no such guard: its call is cut at once.
        let req = Request::from_parts(parts, body);
        let mut call = Linger::new(client.request(req), protocol == Protocol::H2);
        match tokio::time::timeout(self.response_timeout, &mut call).await {
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(err)) => {
                if err.is_connect() {
                    pool.protocol.store(Protocol::Unknown);
                }
                Err(RequestError::UpstreamConnect(Box::new(err)))
            }
            Err(_) => {
                call.abandon();
                Err(RequestError::UpstreamTimeout)
            }
        }
    }

    /// The pool whose connections present `identity`'s SVID, made on the first request minted
    /// with a new snapshot.
    fn pool_for(&self, identity: &Arc<IdentitySnapshot>) -> Result<Arc<Pool>, RequestError> {
        let owned_by = |slot: &ArcSwapOption<Pool>| {
            slot.load_full()
                .filter(|pool| Arc::ptr_eq(&pool.identity, identity))
        };
        if let Some(pool) = owned_by(&self.current).or_else(|| owned_by(&self.previous)) {
            return Ok(pool);
        }
        let _rotating = self.rotating.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = owned_by(&self.current) {
            return Ok(pool);
        }
        let old = self.current.load_full();
        // The destination has not changed: what it speaks is known already.
        let protocol = old
            .as_ref()
            .map_or(Protocol::Unknown, |pool| pool.protocol.load());
        let pool = Arc::new(Pool::new(&self.target, Arc::clone(identity), protocol)?);
        if old.is_some() {
            tracing::info!(
                route.host = %self.target.host,
                svid.id = %identity.id(),
                "new connections to the destination present the rotated identity; open ones drain"
            );
        }
        self.previous.store(old);
        self.current.store(Some(Arc::clone(&pool)));
        Ok(pool)
    }
}

// === impl Pool ===

impl Pool {
    fn new(
        target: &Arc<Target>,
        identity: Arc<IdentitySnapshot>,
        protocol: Protocol,
    ) -> Result<Self, RequestError> {
        // Built with the snapshot, one per route: never on the request path.
        let config = identity
            .client(target.index)
            .cloned()
            .ok_or(RequestError::Internal("mTLS client config"))?;
        let connector = MtlsConnector {
            target: Arc::clone(target),
            config,
        };
        let client = |http2_only: bool| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(POOL_IDLE)
                .http2_only(http2_only)
                // The request's authority rides in the URI (`:authority` on HTTP/2); HTTP/1.1
                // gets a `Host` made from it.
                .set_host(true)
                .build(connector.clone())
        };
        Ok(Self {
            identity,
            h2: client(true),
            http1: client(false),
            connector,
            protocol: AtomicProtocol::new(protocol),
            probe: tokio::sync::Mutex::new(()),
        })
    }

    /// The client for the destination's protocol, and the protocol, probing it first when
    /// unknown.
    async fn client(&self) -> Result<(&Client<MtlsConnector, Body>, Protocol), RequestError> {
        let known = |protocol| match protocol {
            Protocol::H2 => Some((&self.h2, protocol)),
            Protocol::Http1 => Some((&self.http1, protocol)),
            Protocol::Unknown => None,
        };
        if let Some(client) = known(self.protocol.load()) {
            return Ok(client);
        }
        let _probing = self.probe.lock().await;
        if let Some(client) = known(self.protocol.load()) {
            return Ok(client);
        }
        let stream = self
            .connector
            .clone()
            .connect()
            .await
            .map_err(|err| RequestError::UpstreamConnect(Box::new(err)))?;
        let protocol = if stream.inner().connected().is_negotiated_h2() {
            Protocol::H2
        } else {
            Protocol::Http1
        };
        self.protocol.store(protocol);
        Ok(known(protocol).unwrap_or((&self.http1, Protocol::Http1)))
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("svid", self.identity.id())
            .field("protocol", &self.protocol.load())
            .finish_non_exhaustive()
    }
}

// === impl MtlsConnector ===

impl MtlsConnector {
    /// Tries the route's addresses in turn until one completes the mTLS handshake. Trying the
    /// next address after a wrong identity is safe, because each must prove the route's SPIFFE
    /// ID exactly, and it is what a name whose old address now belongs to someone else needs.
    /// When none succeeds, the name is looked up again soon.
    async fn connect(self) -> io::Result<TokioIo<MtlsStream>> {
        let target = &self.target;
        let resolved = &target.address;
        let addrs = resolved
            .addrs(target.connect_timeout)
            .await
            .inspect_err(|err| {
                tracing::warn!(
                    route.host = %target.host,
                    route.address = %resolved.address(),
                    error = %err,
                    "cannot connect to the destination sidecar"
                );
            })?;
        let mut last = None;
        for &addr in addrs.iter() {
            match self.connect_to(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last = Some(err),
            }
        }
        resolved.connect_failed();
        Err(last.unwrap_or_else(|| io::Error::other("the address resolved to nothing")))
    }

    /// TCP, then the mTLS handshake, with `addr`, each within the connect timeout.
    async fn connect_to(&self, addr: SocketAddr) -> io::Result<TokioIo<MtlsStream>> {
        let target = &self.target;
        let tcp = tokio::time::timeout(target.connect_timeout, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")))
            .inspect_err(|err| {
                tracing::warn!(
                    route.host = %target.host,
                    route.address = %target.address.address(),
                    peer.address = %addr,
                    error = %err,
                    "cannot connect to the destination sidecar"
                );
            })?;
        let _ = tcp.set_nodelay(true);
        // The name is never checked (the SPIFFE ID is); rustls needs one for SNI bookkeeping.
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio::time::timeout(
            target.connect_timeout,
            TlsConnector::from(Arc::clone(&self.config)).connect(name, tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
        .inspect_err(|err| {
            tracing::warn!(
                route.host = %target.host,
                route.address = %target.address.address(),
                peer.address = %addr,
                route.identity = %target.expected,
                error = %describe_tls_error(err),
                "mTLS handshake with the destination sidecar failed"
            );
        })?;
        Ok(TokioIo::new(MtlsStream { inner: tls }))
    }
}

impl tower::Service<Uri> for MtlsConnector {
    type Response = TokioIo<MtlsStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Connects to the route's address, whatever the URI names: the URI carries the authority
    /// the destination app will see, not where its sidecar listens.
    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

impl fmt::Debug for MtlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtlsConnector")
            .field("address", &self.target.address.address().to_string())
            .field("expected", &self.target.expected)
            .finish_non_exhaustive()
    }
}

// === impl MtlsStream ===

impl Connection for MtlsStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.inner.get_ref().1.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl AsyncRead for MtlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl AsyncWrite for MtlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
