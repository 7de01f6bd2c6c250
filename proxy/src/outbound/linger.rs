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
//! A call hyper has not yet sent lingers too: still queued for a stream (the connection at the
//! destination's `SETTINGS_MAX_CONCURRENT_STREAMS`), it is opened, taken up and answered in
//! turn like any other, where dropping it could still cost a burst: h2 keeps a queued stream's
//! HEADERS and sends the reset right after them, and a thousand of those in one write are just
//! what the guard counts. At most [`MAX_LINGERING`] calls linger at once in the process; past
//! that a dropped call is reset at once. A call hopgate gives up on itself (its response
//! timeout) is reset at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// How long an abandoned call may wait for its response head.
const LINGER: Duration = Duration::from_secs(1);

/// Abandoned calls lingering at once, in the whole process.
const MAX_LINGERING: usize = 4096;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A call to a destination that lingers when dropped before it completes.
pub(crate) struct Linger<F>
where
    F: Future + Send + Unpin + 'static,
    F::Output: Send + 'static,
{
    /// `None` once it has completed or been abandoned.
    call: Option<F>,
    /// Whether it lingers when dropped, or is reset at once.
    lingers: bool,
}

/// One of the [`MAX_LINGERING`] places, given back when dropped.
struct Place;

// === impl Linger ===

impl<F> Linger<F>
where
    F: Future + Send + Unpin + 'static,
    F::Output: Send + 'static,
{
    /// `call`, lingering when dropped if `lingers`.
    pub(crate) fn new(call: F, lingers: bool) -> Self {
        Self {
            call: Some(call),
            lingers,
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
        let Some(call) = self.call.take().filter(|_| self.lingers) else {
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

    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

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

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_goes_on_until_its_head_arrives() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        let mut linger = Linger::new(fut, true);
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
        drop(Linger::new(fut, true));
        tokio::time::sleep(LINGER + Duration::from_millis(1)).await;
        assert!(done.send(()).is_err(), "the call was dropped");
        assert!(!held.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_does_not_linger_is_reset_when_dropped() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        drop(Linger::new(fut, false));
        assert!(done.send(()).is_err(), "the call was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_call_is_reset_at_once() {
        let held = Arc::new(AtomicBool::new(false));
        let (done, fut) = call(&held);
        Linger::new(fut, true).abandon();
        assert!(done.send(()).is_err(), "the call was dropped");
    }
}
