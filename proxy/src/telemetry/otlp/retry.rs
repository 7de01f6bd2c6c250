//! Which export failures are worth another try, and how long to wait before it (the OTLP
//! specification's "Retryable Response Codes" and "Failures").
//!
//! - retried: a connection that could not be made or was lost (TLS aside), HTTP 429, 502, 503
//!   and 504, gRPC `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE`,
//!   `DATA_LOSS`, and `RESOURCE_EXHAUSTED` when the collector sends a `RetryInfo`;
//! - dropped at once: any other answer (400, 401, 413, `INVALID_ARGUMENT`, ...) and every TLS
//!   failure (a certificate that does not verify will not verify a second later).
//!
//! Up to [`ATTEMPTS`] tries, waiting 100 ms, then 200 ms (each with jitter, between half and
//! all of it), or what the collector asked for (`Retry-After`, `RetryInfo`), all within the
//! batch's deadline: a wait that would pass it is not taken.

use std::hash::{BuildHasher as _, RandomState};
use std::time::Duration;

/// Tries per batch.
pub(super) const ATTEMPTS: u32 = 3;
/// The first wait; each later one doubles, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Why one try failed, and whether another may succeed.
#[derive(Debug)]
pub(in crate::telemetry) struct Failure {
    pub(super) message: String,
    pub(super) retry: Retry,
}

/// Whether a failed try is worth another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Drop the batch.
    No,
    /// Try again, after the collector's delay when it gave one.
    Yes(Option<Duration>),
}

impl Failure {
    pub(super) fn retryable(message: String, after: Option<Duration>) -> Self {
        Self {
            message,
            retry: Retry::Yes(after),
        }
    }

    pub(super) fn fatal(message: String) -> Self {
        Self {
            message,
            retry: Retry::No,
        }
    }

    /// A failure to reach the collector: retried, unless TLS failed.
    pub(super) fn connection(err: &(dyn std::error::Error + 'static)) -> Self {
        let message = error_chain(err);
        if is_tls(err) {
            Self::fatal(message)
        } else {
            Self::retryable(message, None)
        }
    }
}

/// The wait before try `attempt + 1` (`attempt` counts from 1), or `None` when no try is left.
pub(super) fn wait(attempt: u32, asked: Option<Duration>) -> Option<Duration> {
    if attempt >= ATTEMPTS {
        return None;
    }
    if let Some(asked) = asked {
        return Some(asked);
    }
    let full = FIRST_WAIT
        .saturating_mul(1 << (attempt - 1).min(8))
        .min(MAX_WAIT);
    // Between half and all of it, so sidecars that failed together do not retry together.
    let jitter = RandomState::new().hash_one(attempt) % 1_000;
    let half = full / 2;
    Some(half + half.mul_f64(jitter as f64 / 1_000.0))
}

/// Whether an HTTP status is retried.
pub(super) fn http_retryable(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// `Retry-After` in seconds (an HTTP date is not followed: the backoff applies).
pub(super) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A gRPC status as a [`Failure`].
pub(super) fn grpc(status: &tonic::Status) -> Failure {
    use tonic::Code;
    let message = match std::error::Error::source(status) {
        Some(source) => format!("{status}: {}", error_chain(source)),
        None => status.to_string(),
    };
    if is_tls(status) {
        return Failure::fatal(message);
    }
    let delay = retry_info(status.details());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Failure::retryable(message, delay),
        // Retried only when the collector says when: otherwise it is a limit, not a hiccup.
        Code::ResourceExhausted if delay.is_some() => Failure::retryable(message, delay),
        _ => Failure::fatal(message),
    }
}

/// The `retry_delay` of a `google.rpc.RetryInfo` among the details of a `google.rpc.Status`
/// (`grpc-status-details-bin`).
fn retry_info(details: &[u8]) -> Option<Duration> {
    // Status { code = 1, message = 2, repeated Any details = 3 }
    for (field, any) in fields(details)? {
        let (3, Value::Len(any)) = (field, any) else {
            continue;
        };
        // Any { type_url = 1, value = 2 }
        let any = fields(any)?;
        let is_retry_info = any.iter().any(|(f, v)| {
            *f == 1 && matches!(v, Value::Len(url) if url.ends_with(b"google.rpc.RetryInfo"))
        });
        if !is_retry_info {
            continue;
        }
        // RetryInfo { Duration retry_delay = 1 }, Duration { int64 seconds = 1, int32 nanos = 2 }
        let Some((_, Value::Len(info))) = any.iter().find(|(f, _)| *f == 2) else {
            return None;
        };
        let Some((_, Value::Len(delay))) = fields(info)?.into_iter().find(|(f, _)| *f == 1) else {
            return Some(Duration::ZERO);
        };
        let (mut seconds, mut nanos) = (0u64, 0u32);
        for (field, value) in fields(delay)? {
            match (field, value) {
                (1, Value::Varint(v)) => seconds = v,
                (2, Value::Varint(v)) => nanos = u32::try_from(v).ok()?.min(999_999_999),
                _ => {}
            }
        }
        // A negative delay (a huge unsigned value) is no delay the deadline could allow.
        return Some(Duration::new(seconds.min(u64::from(u32::MAX)), nanos));
    }
    None
}

enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The top-level fields of a protobuf message; `None` if it is malformed.
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, Value<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = varint(&mut buf)?;
        let value = match tag & 7 {
            0 => Value::Varint(varint(&mut buf)?),
            1 | 5 => {
                let n = if tag & 7 == 1 { 8 } else { 4 };
                buf = buf.get(n..)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let (value, rest) = (buf.get(..len)?, buf.get(len..)?);
                buf = rest;
                Value::Len(value)
            }
            _ => return None,
        };
        out.push((tag >> 3, value));
    }
    Some(out)
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Whether TLS failed somewhere in this error's chain: a rustls error, on its own or inside an
/// I/O error (as tokio-rustls and hyper carry it).
fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// An error and its sources as one line (`client error (Connect): tcp connect error: ...`):
/// hyper's own message alone hides the cause, and its `Debug` text is not for logs.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_line = cause.to_string();
        // Some wrappers repeat their source's message; once is enough.
        if !line.ends_with(&cause_line) {
            line.push_str(": ");
            line.push_str(&cause_line);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests;
