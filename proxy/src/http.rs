//! The HTTP stages both sides share, in request order: header and path hygiene ([`headers`],
//! [`path`]), the intent headers ([`intent`]), the policy decision ([`authorize`]) and the one
//! error → response map ([`respond`]). Each side's own stages live with it: `inbound/`
//! (the hop token, XFCC, the app) and `outbound/` (the credential swap, the destination).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use pin_project_lite::pin_project;

pub mod authorize;
pub mod headers;
pub(crate) mod intent;
pub mod mcp;
pub mod path;
pub mod respond;

pub use respond::{BoxError, Malformed, RequestError};

/// The body type of every request and response hopgate produces: streamed, never buffered.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full (hopgate's own small responses).
pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any streaming body, such as hyper's `Incoming`, without reading it.
pub fn stream_body<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// The body to forward for a caller's request `body`: an empty one when the caller has sent it
/// in full already (a `GET`'s), and the caller's own, watched ([`WithoutTrailers::watched`]),
/// when it is still coming.
///
/// A body sent in full is no longer tied to the caller's connection. Forwarded as it is, it
/// would be asked again when the upstream stream opens, maybe after the caller has gone (a
/// call that waited for a stream, or lingered: `outbound/linger.rs`): by then hyper's body of a
/// reset stream says it has not ended, so the request would go out as HEADERS without
/// END_STREAM followed by a reset, the burst a destination's rapid-reset guard counts (DOS-07).
pub fn forwarded<B>(body: B, idle: Duration) -> (Body, BodyFailure)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if body.is_end_stream() {
        // Boxes a zero-sized `Empty`: no allocation.
        return (Body::default(), BodyFailure::default());
    }
    let (body, failure) = WithoutTrailers::watched(body, idle);
    (stream_body(body), failure)
}

pin_project! {
    /// A request body with its trailers dropped (SMG-16 in docs/security.md).
    ///
    /// A caller could otherwise send `x-forwarded-client-cert` or the hop-token header as a
    /// trailer, after the head was cleaned, and an HTTP/1.1 upstream would receive it. It also
    /// notes when the caller's body fails (a malformed chunk, a connection gone mid-body), so a
    /// send that fails for it is answered 400, not blamed on the upstream.
    #[derive(Debug)]
    pub struct WithoutTrailers<B> {
        #[pin]
        inner: B,
        failed: Option<Arc<AtomicBool>>,
        // How long the body may stall (DOS-02), and the timer while it does.
        idle: Option<Duration>,
        #[pin]
        stall: Option<tokio::time::Sleep>,
    }
}

/// The error of a request body that stalled for `inbound.timeouts.idle`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for the idle timeout")]
pub struct BodyStalled;

/// Whether a request body read through [`WithoutTrailers::watched`] failed.
#[derive(Clone, Debug, Default)]
pub struct BodyFailure(Option<Arc<AtomicBool>>);

impl BodyFailure {
    /// Whether the caller's body failed.
    pub fn failed(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|failed| failed.load(Ordering::Acquire))
    }
}

impl<B> WithoutTrailers<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            failed: None,
            idle: None,
            stall: None,
        }
    }
}

impl<B: http_body::Body> WithoutTrailers<B> {
    /// Wraps `inner`, tells whether it failed, and cuts it once it stalls for `idle` (DOS-02):
    /// the next hop then sees a reset, never a body that looks complete. A body that has ended
    /// already (a `GET`) cannot fail and is not watched.
    pub fn watched(inner: B, idle: Duration) -> (Self, BodyFailure) {
        let failed = (!inner.is_end_stream()).then(Arc::default);
        let failure = BodyFailure(failed.clone());
        let idle = failed.as_ref().map(|_| idle);
        let body = Self {
            inner,
            failed,
            idle,
            stall: None,
        };
        (body, failure)
    }
}

impl<B> http_body::Body for WithoutTrailers<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {}
                Poll::Ready(Some(Ok(frame))) => {
                    // Bytes moved: a stall starts over.
                    this.stall.set(None);
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(err))) => {
                    if let Some(failed) = this.failed {
                        failed.store(true, Ordering::Release);
                    }
                    return Poll::Ready(Some(Err(err.into())));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    let Some(idle) = *this.idle else {
                        return Poll::Pending;
                    };
                    if this.stall.is_none() {
                        this.stall.set(Some(tokio::time::sleep(idle)));
                    }
                    let stalled = this
                        .stall
                        .as_mut()
                        .as_pin_mut()
                        .is_some_and(|stall| stall.poll(cx).is_ready());
                    if !stalled {
                        return Poll::Pending;
                    }
                    if let Some(failed) = this.failed {
                        failed.store(true, Ordering::Release);
                    }
                    return Poll::Ready(Some(Err(Box::new(BodyStalled))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that has ended, until `reset` says its stream was reset: then it has not, and
    /// reading it fails (hyper's body of a reset HTTP/2 stream).
    struct Resettable(Arc<AtomicBool>);

    impl http_body::Body for Resettable {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0.load(Ordering::SeqCst) {
                return Poll::Ready(Some(Err("stream reset".into())));
            }
            Poll::Ready(None)
        }

        fn is_end_stream(&self) -> bool {
            !self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn dos_07_a_body_sent_in_full_is_forwarded_ended_whatever_becomes_of_the_caller() {
        let reset = Arc::new(AtomicBool::new(false));
        let (mut body, failure) = forwarded(Resettable(Arc::clone(&reset)), Duration::from_secs(1));
        reset.store(true, Ordering::SeqCst);
        assert!(http_body::Body::is_end_stream(&body));
        assert!(body.frame().await.is_none(), "no error, no data");
        assert!(!failure.failed());
    }

    #[tokio::test]
    async fn a_body_still_coming_is_forwarded_as_the_callers_and_its_failure_is_told() {
        let reset = Arc::new(AtomicBool::new(true));
        let (mut body, failure) = forwarded(Resettable(reset), Duration::from_secs(1));
        assert!(!http_body::Body::is_end_stream(&body));
        assert!(body.frame().await.is_some_and(|frame| frame.is_err()));
        assert!(failure.failed());
    }
}
