//! Binding and accepting: the connection cap, the eviction of connections that hold a place
//! without sending a request head, and the accept-error back-off.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A bound listener that hands out connections only while under its connection cap.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    headless: Arc<Headless>,
}

/// One accepted connection, holding its place under the cap until dropped.
#[derive(Debug)]
pub struct Accepted {
    /// The socket.
    pub stream: TcpStream,
    /// The client's address.
    pub remote: SocketAddr,
    /// Released when the connection ends.
    pub permit: OwnedSemaphorePermit,
    /// Until its first request head: the connection's claim to its place, which a new
    /// connection takes over at the cap (DOS-04).
    pub head: HeadWatch,
}

/// How long a connection has to send its first request head before a new connection may take
/// its place at the cap: enough for a head already sent to be read under load, far less than
/// `header_read`.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// What [`Headless::evict_oldest`] did.
enum Eviction {
    /// The oldest connection without a head was told to close.
    Done,
    /// The oldest one may be told at this instant.
    At(Instant),
    /// Every connection has sent a head.
    Nobody,
}

/// A connection's link to its listener until its first request head is in: at the connection
/// cap, the oldest connection still without a head gives its place to a new one (DOS-04). A
/// connection that has sent a head keeps its place. The default watches nothing (a connection
/// made in a test, not accepted by a [`Listener`]).
#[derive(Clone, Debug, Default)]
pub struct HeadWatch(Option<Arc<Claim>>);

/// One head-less connection's entry in [`Headless`].
#[derive(Debug)]
struct Claim {
    id: u64,
    registry: Arc<Headless>,
    evict: Notify,
}

/// The accepted connections that have not sent a request head yet, by accept order.
#[derive(Debug, Default)]
struct Headless {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, (Instant, Weak<Claim>)>>,
}

// === impl Listener ===

impl Listener {
    /// Binds `addr` with `SO_REUSEADDR` (a restarted sidecar must not wait out TIME_WAIT).
    ///
    /// # Errors
    /// The bind or listen error, for example the address being in use.
    pub fn bind(addr: SocketAddr, max_connections: usize) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let inner = TcpListener::from_std(socket.into())?;
        Ok(Self {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            headless: Arc::default(),
        })
    }

    /// The bound address (with the real port when bound to port 0).
    ///
    /// # Errors
    /// When the socket has no local address, which a bound socket always has.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Waits for a place under the connection cap, then for a connection.
    ///
    /// At the cap hopgate stops accepting, so new clients wait in the kernel's backlog instead of
    /// being accepted and starved; except that while a connection holds a place without having
    /// sent a request head (a TLS handshake that never ends, a slowloris), one new client is
    /// accepted and the oldest such connection is closed to make room for it (DOS-04). Accept
    /// errors such as `EMFILE` back off (5 ms doubling to 1 s) instead of spinning on a
    /// listener that stays readable.
    pub async fn accept(&self) -> Accepted {
        let mut backoff = Duration::from_millis(5);
        loop {
            let (permit, (stream, remote)) = match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => match self.inner.accept().await {
                    Ok(conn) => (permit, conn),
                    Err(err) => {
                        drop(permit);
                        backoff = accept_failed(&err, backoff).await;
                        continue;
                    }
                },
                Err(_) => {
                    let evictable = self.headless.any();
                    let conn = tokio::select! {
                        // A place freed up: accept as usual.
                        _ = self.permits.acquire() => continue,
                        res = self.inner.accept(), if evictable => res,
                    };
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(err) => {
                            backoff = accept_failed(&err, backoff).await;
                            continue;
                        }
                    };
                    (self.place_for(conn.1).await, conn)
                }
            };
            // Small request/response exchanges must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            return Accepted {
                stream,
                remote,
                permit,
                head: self.headless.register(),
            };
        }
    }

    /// A place for a connection accepted at the cap: the oldest connection still without a
    /// request head gives its own, once it has had [`EVICTABLE_AFTER`] to send one (a burst of
    /// new connections must not close those whose head is only waiting to be read); else the
    /// next place to free up.
    async fn place_for(&self, remote: SocketAddr) -> OwnedSemaphorePermit {
        loop {
            let wait = match self.headless.evict_oldest(EVICTABLE_AFTER) {
                Eviction::Done => {
                    tracing::debug!(client.addr = %remote, "at the connection cap: a connection without a request head gave its place");
                    None
                }
                Eviction::At(when) => Some(when),
                Eviction::Nobody => None,
            };
            let sleep = tokio::time::sleep_until(wait.unwrap_or_else(Instant::now));
            tokio::select! {
                permit = Arc::clone(&self.permits).acquire_owned() => {
                    if let Ok(permit) = permit {
                        return permit;
                    }
                    // The semaphore is never closed; if it were, waiting is all that is left.
                    std::future::pending::<()>().await;
                }
                () = sleep, if wait.is_some() => {}
            }
        }
    }
}

/// Waits out `backoff` after a listener-wide accept error, and returns the next back-off. An
/// error that concerns one connection only is accepted past at once.
async fn accept_failed(err: &io::Error, backoff: Duration) -> Duration {
    if is_connection_error(err) {
        return backoff;
    }
    tracing::warn!(error = %err, backoff_ms = backoff.as_millis(), "accept failed");
    tokio::time::sleep(backoff).await;
    (backoff * 2).min(Duration::from_secs(1))
}

// === impl HeadWatch ===

impl HeadWatch {
    /// The connection's first request head is in: it keeps its place from now on.
    pub fn headed(&self) {
        if let Some(claim) = &self.0 {
            claim.registry.remove(claim.id);
        }
    }

    /// Completes when the listener has given this connection's place to a new connection.
    /// Never completes for a connection that has sent a head, or that no listener watches.
    pub async fn evicted(&self) {
        match &self.0 {
            Some(claim) => claim.evict.notified().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

// === impl Headless ===

impl Headless {
    fn register(self: &Arc<Self>) -> HeadWatch {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let claim = Arc::new(Claim {
            id,
            registry: Arc::clone(self),
            evict: Notify::new(),
        });
        self.lock()
            .insert(id, (Instant::now(), Arc::downgrade(&claim)));
        HeadWatch(Some(claim))
    }

    fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the connection accepted longest ago that has not sent a head to close, if it was
    /// accepted at least `after` ago. A scan, but only at the cap, and the map holds only
    /// head-less connections.
    fn evict_oldest(&self, after: Duration) -> Eviction {
        let mut waiting = self.lock();
        let oldest = waiting
            .iter()
            .min_by_key(|(_, (accepted, _))| *accepted)
            .map(|(id, (accepted, _))| (*id, *accepted));
        let Some((id, accepted)) = oldest else {
            return Eviction::Nobody;
        };
        if accepted.elapsed() < after {
            return Eviction::At(accepted + after);
        }
        if let Some((_, claim)) = waiting.remove(&id) {
            drop(waiting);
            // `notify_one` keeps the wake-up for a task that is not waiting yet.
            if let Some(claim) = claim.upgrade() {
                claim.evict.notify_one();
            }
        }
        Eviction::Done
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, Weak<Claim>)>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Errors that concern one connection, not the listener: accept again at once.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
