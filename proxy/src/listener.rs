//! Binding and accepting: the connection cap and the accept-error back-off.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A bound listener that hands out connections only while under its connection cap.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
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
    /// being accepted and starved. Accept errors such as `EMFILE` back off (5 ms doubling to 1 s)
    /// instead of spinning on a listener that stays readable.
    pub async fn accept(&self) -> Accepted {
        let mut backoff = Duration::from_millis(5);
        loop {
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                // The semaphore is never closed; if it were, waiting is all that is left.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, remote)) => {
                    // Small request/response exchanges must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return Accepted {
                        stream,
                        remote,
                        permit,
                    };
                }
                Err(err) if is_connection_error(&err) => {}
                Err(err) => {
                    tracing::warn!(error = %err, backoff_ms = backoff.as_millis(), "accept failed");
                    drop(permit);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
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
