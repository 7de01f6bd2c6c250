//! Serving one accepted, authenticated connection: HTTP/1.1 or HTTP/2 on the same port, with the
//! limits that keep a misbehaving client from holding resources (docs/security.md, "Resource
//! limits and timeouts").

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hopgate_config::{InboundLimits, InboundTimeouts};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use self::heads::FrameHeads;
use crate::http::Body;
use crate::listener::HeadWatch;
use crate::shutdown;

mod heads;

/// Far enough away to never fire (a year).
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The server half of hyper, configured once per listener.
#[derive(Clone, Debug)]
pub struct ConnectionServer {
    builder: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
    header_read: Duration,
}

pin_project! {
    /// An I/O stream that notes when bytes move, for the idle timeout, and when an HTTP/2
    /// request head is left incomplete, for `header_read`.
    #[derive(Debug)]
    struct Activity<T> {
        #[pin]
        inner: T,
        progress: Arc<Progress>,
        heads: FrameHeads,
        // The state last told to `progress`, not to touch it for nothing: whether a header
        // block was open after the last read, and which.
        head_open: bool,
        head_block: u32,
    }
}

/// What a connection's bytes tell its checks.
#[derive(Debug)]
struct Progress {
    /// Bytes moved since the last idle check.
    active: AtomicBool,
    /// When an HTTP/2 header block that is still incomplete started to arrive, in nanoseconds
    /// after `origin`, plus one; 0 while none is.
    head_since: AtomicU64,
    /// Told when `head_since` is set.
    head_open: tokio::sync::Notify,
    origin: tokio::time::Instant,
}

// === impl ConnectionServer ===

impl ConnectionServer {
    /// Builds the HTTP/1.1 + HTTP/2 server with the listener's timeouts and limits.
    pub fn new(timeouts: &InboundTimeouts, limits: &InboundLimits) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let header_bytes = limits.max_header_bytes();
        builder
            .http1()
            .timer(TokioTimer::new())
            // Slowloris (DOS-01): the whole head must arrive within this time.
            .header_read_timeout(timeouts.header_read())
            // DOS-06: the read buffer bounds the request head (hyper answers 431 past it).
            .max_buf_size(header_bytes.max(8192))
            .max_headers(100);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams())
            // Rapid Reset (DOS-07) and MadeYouReset (DOS-09): GOAWAY past these counts.
            .max_pending_accept_reset_streams(limits.max_pending_resets())
            .max_local_error_reset_streams(Some(1024))
            // HPACK bomb and CONTINUATION flood (DOS-08, DOS-10): bound the decoded list.
            .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
            // No server PINGs: hyper sends them even on idle connections, and their bytes would
            // keep an idle HTTP/2 connection alive past the idle timeout forever.
            .keep_alive_interval(None);
        Self {
            builder,
            idle_timeout: timeouts.idle(),
            header_read: timeouts.header_read(),
        }
    }

    /// Serves `io`, accepted at `accepted`, until the client closes, the connection idles out
    /// or shutdown is signaled; on shutdown, in-flight requests finish first (HTTP/2 sends
    /// GOAWAY). A connection whose first request head is not in within `header_read` of its
    /// accept (the TLS handshake counts) is dropped (DOS-01): hyper's own header timeout only
    /// starts once HTTP/1.1 bytes arrive, and nothing bounds HTTP/2 heads. The first head is
    /// reported to `head`, so that the connection keeps its place at the cap (DOS-04).
    pub async fn serve<I, S>(
        &self,
        io: I,
        service: S,
        mut drain: shutdown::Watch,
        accepted: tokio::time::Instant,
        head: HeadWatch,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<Body>,
                Error = Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let progress = Arc::new(Progress {
            active: AtomicBool::new(true),
            head_since: AtomicU64::new(0),
            head_open: tokio::sync::Notify::new(),
            origin: accepted,
        });
        let io = TokioIo::new(Activity {
            inner: io,
            progress: Arc::clone(&progress),
            heads: FrameHeads::default(),
            head_open: false,
            head_block: 0,
        });
        let requests = Arc::new(Requests {
            head,
            ..Requests::default()
        });
        let service = Headed {
            inner: service,
            requests: Arc::clone(&requests),
        };
        let conn = self.builder.serve_connection(io, service);
        tokio::pin!(conn);
        let first_head = tokio::time::sleep_until(accepted + self.header_read);
        tokio::pin!(first_head);
        let mut waiting_for_head = true;
        let mut idle = tokio::time::interval(self.idle_timeout);
        idle.tick().await;
        let mut closing = false;
        // Armed while an HTTP/2 header block is incomplete: a later request's head gets
        // `header_read` too.
        let late_head = tokio::time::sleep(FOREVER);
        tokio::pin!(late_head);
        let mut head_watched = false;
        // Armed when an idle connection is asked to close: one that still does not finish (a
        // stream that never ends) is dropped after one more idle period.
        let hard_stop = tokio::time::sleep(FOREVER);
        tokio::pin!(hard_stop);
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(err) = res {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = &mut hard_stop => {
                    tracing::debug!("dropping a connection that did not close when idle");
                    return;
                }
                () = &mut first_head, if waiting_for_head => {
                    // The head may have come in while the deadline ran: looked at only now.
                    waiting_for_head = false;
                    if !requests.headed.load(Ordering::Relaxed) {
                        tracing::debug!("dropping a connection that sent no request head in time");
                        return;
                    }
                }
                () = progress.head_open.notified(), if !head_watched => {
                    if let Some(since) = progress.head_started() {
                        head_watched = true;
                        late_head.as_mut().reset(since + self.header_read);
                    }
                }
                () = &mut late_head, if head_watched => {
                    // Looked at only now: the head may have completed meanwhile.
                    match progress.head_started() {
                        None => head_watched = false,
                        Some(since) if since.elapsed() >= self.header_read => {
                            tracing::debug!("dropping a connection whose request head did not arrive in time");
                            return;
                        }
                        Some(since) => late_head.as_mut().reset(since + self.header_read),
                    }
                }
                () = drain.signaled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = idle.tick(), if !closing => {
                    // No bytes moved for a whole interval (DOS-02), or no request was open or
                    // started in it: HTTP/2 PINGs alone do not keep a connection alive.
                    let moved = progress.active.swap(false, Ordering::Relaxed);
                    let started = requests.started.swap(false, Ordering::Relaxed);
                    let open = requests.open.load(Ordering::Relaxed) > 0;
                    if !moved || !(started || open) {
                        tracing::debug!("closing idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        hard_stop
                            .as_mut()
                            .reset(tokio::time::Instant::now() + self.idle_timeout);
                    }
                }
            }
        }
    }
}

/// What a connection's requests tell its idle checks.
#[derive(Debug, Default)]
struct Requests {
    /// A whole request head has arrived.
    headed: AtomicBool,
    /// Told of the first head.
    head: HeadWatch,
    /// A request started since the last idle check.
    started: AtomicBool,
    /// Requests whose response has not ended.
    open: AtomicUsize,
}

/// Holds a request open in [`Requests`] until its response (or its refusal) ends.
#[derive(Debug)]
struct OpenRequest(Arc<Requests>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A service that counts its calls into [`Requests`].
#[derive(Debug)]
struct Headed<S> {
    inner: S,
    requests: Arc<Requests>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Headed<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<Held<B>>;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let requests = &self.requests;
        if !requests.headed.load(Ordering::Relaxed) {
            requests.headed.store(true, Ordering::Relaxed);
            requests.head.headed();
        }
        requests.started.store(true, Ordering::Relaxed);
        requests.open.fetch_add(1, Ordering::Relaxed);
        Counted {
            inner: self.inner.call(req),
            open: Some(OpenRequest(Arc::clone(requests))),
        }
    }
}

pin_project! {
    /// A request's response future, then its body, holding the request open.
    struct Counted<F> {
        #[pin]
        inner: F,
        open: Option<OpenRequest>,
    }
}

impl<F, B, E> Future for Counted<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Held<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(result) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        let open = this.open.take();
        Poll::Ready(result.map(|rsp| rsp.map(|inner| Held { inner, _open: open })))
    }
}

pin_project! {
    /// A response body that holds its request open until it is dropped.
    struct Held<B> {
        #[pin]
        inner: B,
        _open: Option<OpenRequest>,
    }
}

impl<B: http_body::Body> http_body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// === impl Progress ===

impl Progress {
    /// An HTTP/2 header block was left incomplete by a read (`true`), or completed (`false`).
    fn head_in_progress(&self, open: bool) {
        if open {
            let since = self.origin.elapsed().as_nanos();
            let since = u64::try_from(since)
                .unwrap_or(u64::MAX - 1)
                .saturating_add(1);
            self.head_since.store(since, Ordering::Relaxed);
            self.head_open.notify_one();
        } else {
            self.head_since.store(0, Ordering::Relaxed);
        }
    }

    /// When the incomplete header block started to arrive, if one is.
    fn head_started(&self) -> Option<tokio::time::Instant> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(self.origin + Duration::from_nanos(since - 1)),
        }
    }
}

// === impl Activity ===

impl<T: AsyncRead> AsyncRead for Activity<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Some(read) = buf.filled().get(before..).filter(|read| !read.is_empty()) {
            this.progress.active.store(true, Ordering::Relaxed);
            let open = this.heads.feed(read);
            // A read that completed one head and left the next one open starts a new clock.
            let block = this.heads.block();
            if open != *this.head_open || (open && block != *this.head_block) {
                *this.head_open = open;
                *this.head_block = block;
                this.progress.head_in_progress(open);
            }
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for Activity<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.progress.active.store(true, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.progress.active.store(true, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
