//! The HTTP stages both sides share, in request order: header and path hygiene ([`headers`],
//! [`path`]), the intent headers ([`intent`]), the policy decision ([`authorize`]) and the one
//! error → response map ([`respond`]). Each side's own stages live with it: `inbound/`
//! (the hop token, XFCC, the app) and `outbound/` (the credential swap, the destination).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

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
    }
}

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
        }
    }
}

impl<B: http_body::Body> WithoutTrailers<B> {
    /// Wraps `inner`, and tells whether it failed. A body that has ended already (a `GET`)
    /// cannot fail and is not watched.
    pub fn watched(inner: B) -> (Self, BodyFailure) {
        let failed = (!inner.is_end_stream()).then(Arc::default);
        let failure = BodyFailure(failed.clone());
        (Self { inner, failed }, failure)
    }
}

impl<B: http_body::Body> http_body::Body for WithoutTrailers<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        loop {
            match inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {}
                Poll::Ready(Some(Err(err))) => {
                    if let Some(failed) = this.failed {
                        failed.store(true, Ordering::Release);
                    }
                    return Poll::Ready(Some(Err(err)));
                }
                other => return other,
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
