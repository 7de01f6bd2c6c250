//! Calls whose caller went away before the response head, kept until the destination has taken
//! them up (DOS-07 in docs/security.md, "Cancelled requests").
//!
//! Dropping a forwarded call resets its HTTP/2 stream at once. A server counts the streams reset
//! before it has taken them up (its rapid-reset guard: hopgate's own
//! `inbound.limits.max_pending_resets`, h2's `max_pending_accept_reset_streams`) and closes the
//! connection past a limit, failing every other request on it. Callers that go away together
//! (a load generator stopping with a thousand requests open, a client closing a connection
//! of many streams) make just that pattern on the pooled hop connection: streams opened a moment
//! ago and reset before the destination has read them, all in one burst.
//!
//! So a call dropped while it waits for its head is moved to a task of its own, which waits
//! for the head (the destination has taken the stream up: dropping the response then resets a
//! stream it accepted, which no guard counts) or for [`LINGER`], whichever comes first. The
//! destination and its app go on with the request for at most that long after the caller left.
//!
//! Only a call whose stream is open lingers: one still queued for a stream (the connection at
//! the destination's `SETTINGS_MAX_CONCURRENT_STREAMS`, or still connecting) is dropped at once,
//! and hyper then never opens it. Kept, it would be opened later only to be reset when its
//! linger ends, and a thousand of those ending together are the very burst this avoids. hyper
//! takes a request's body up (drops it, or starts reading it) when it opens the stream, so the
//! body says which: [`Handed`]. At most [`MAX_LINGERING`] calls linger at once in the process;
//! past that a dropped call is reset at once. A call hopgate gives up on itself (its response
//! timeout) is reset at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// How long an abandoned call may wait for its response head.
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// Abandoned calls lingering at once, in the whole process.
pub(crate) const MAX_LINGERING: usize = 4096;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A call to a destination that lingers when dropped before it completes.
pub(crate) struct Linger<F>
where
    F: Future + Send + Unpin + 'static,
    F::Output: Send + 'static,
{
    /// `None` once it has completed or been abandoned.
    call: Option<F>,
    /// Set once the call's stream is open; `None` for a call that never lingers.
    opened: Option<Arc<AtomicBool>>,
}

pin_project! {
    /// A request body that notes when hyper takes it up, which is when it opens the stream.
    pub(crate) struct Handed<B> {
        #[pin]
        inner: B,
        opened: Arc<AtomicBool>,
    }

    impl<B> PinnedDrop for Handed<B> {
        fn drop(this: Pin<&mut Self>) {
            this.opened.store(true, Ordering::Release);
        }
    }
}

/// One of the [`MAX_LINGERING`] places, given back when dropped.
struct Place;

// === impl Linger ===

impl<F> Linger<F>
where
    F: Future + Send + Unpin + 'static,
    F::Output: Send + 'static,
{
    /// `call`, lingering when dropped once `opened` is set (see [`Handed`]); never without it.
    pub(crate) fn new(call: F, opened: Option<Arc<AtomicBool>>) -> Self {
        Self {
            call: Some(call),
            opened,
        }
    }

    /// Drops the call now, resetting its stream: hopgate itself gives up on it.
    pub(crate) fn abandon(mut self) {
        self.call = None;
    }
}

impl<F> Future for Linger<F>
where
    F: Future + Send + Unpin + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Polled again after completing: nothing more will come.
        let Some(call) = self.call.as_mut() else {
            return Poll::Pending;
        };
        let out = ready!(Pin::new(call).poll(cx));
        self.call = None;
        Poll::Ready(out)
    }
}

impl<F> Drop for Linger<F>
where
    F: Future + Send + Unpin + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        let opened = |flag: &Arc<AtomicBool>| flag.load(Ordering::Acquire);
        let Some(call) = self
            .call
            .take()
            .filter(|_| self.opened.as_ref().is_some_and(opened))
        else {
            return;
        };
        // Outside a runtime (it is shutting down) the call is simply reset.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(place) = Place::take() else {
            return;
        };
        runtime.spawn(async move {
            let _place = place;
            // The response, if it comes, is dropped unread.
            let _ = tokio::time::timeout(LINGER, call).await;
        });
    }
}

// === impl Handed ===

impl<B> Handed<B> {
    /// `inner`, and the flag set when hyper takes it up.
    pub(crate) fn new(inner: B) -> (Self, Arc<AtomicBool>) {
        let opened = Arc::new(AtomicBool::new(false));
        let body = Self {
            inner,
            opened: Arc::clone(&opened),
        };
        (body, opened)
    }
}

impl<B: Body> Body for Handed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        this.opened.store(true, Ordering::Release);
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl Place ===

impl Place {
    fn take() -> Option<Self> {
        if LINGERING.fetch_add(1, Ordering::AcqRel) < MAX_LINGERING {
            return Some(Self);
        }
        LINGERING.fetch_sub(1, Ordering::AcqRel);
        None
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        LINGERING.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::{BodyExt, Empty, Full};

    /// A call that completes when `done` is sent, noting whether it was still held then.
    fn call(
        held: &Arc<AtomicBool>,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        impl Future<Output = ()> + Send + Unpin + 'static,
    ) {
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        let flag = Arc::clone(held);
        let call = Box::pin(async move {
            let _ = wait.await;
            flag.store(true, Ordering::SeqCst);
        });
        (done, call)
    }

    fn opened(yes: bool) -> Option<Arc<AtomicBool>> {
        Some(Arc::new(AtomicBool::new(yes)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_whose_stream_is_open_goes_on_until_its_head_arrives() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        let mut linger = Linger::new(fut, opened(true));
        assert!(futures_util::poll!(&mut linger).is_pending());
        drop(linger);
        done.send(()).unwrap();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(
            held.load(Ordering::SeqCst),
            "the call was polled to its end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_is_reset_when_its_linger_ends() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        drop(Linger::new(fut, opened(true)));
        tokio::time::sleep(LINGER + Duration::from_millis(1)).await;
        assert!(done.send(()).is_err(), "the call was dropped");
        assert!(!held.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_still_queued_for_a_stream_is_dropped_at_once() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        drop(Linger::new(fut, opened(false)));
        assert!(done.send(()).is_err(), "the call was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_a_flag_never_lingers() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        drop(Linger::new(fut, None));
        assert!(done.send(()).is_err(), "the call was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_call_is_reset_at_once() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        Linger::new(fut, opened(true)).abandon();
        assert!(done.send(()).is_err(), "the call was dropped");
    }

    #[tokio::test]
    async fn a_handed_body_is_marked_opened_when_read_or_dropped() {
        let (body, flag) = Handed::new(Full::new(bytes::Bytes::from_static(b"x")));
        assert!(!flag.load(Ordering::SeqCst));
        assert!(!body.is_end_stream());
        let mut body = std::pin::pin!(body);
        let _ = body.frame().await;
        assert!(flag.load(Ordering::SeqCst), "read");

        let (body, flag) = Handed::new(Empty::<bytes::Bytes>::new());
        assert!(body.is_end_stream());
        drop(body);
        assert!(flag.load(Ordering::SeqCst), "dropped");
    }
}
