//! The HTTP stages of a hop, in request order: header hygiene ([`headers`]), the policy decision
//! ([`authorize`]), the identity header ([`client_cert`]), forwarding ([`forward`]) and the one
//! error → response map ([`respond`]).

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

pub mod authorize;
pub mod client_cert;
pub mod forward;
pub mod headers;
pub mod respond;

pub use respond::{BoxError, RequestError};

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
