//! Telemetry: the metrics registry, the audit records and the request spans.

pub mod audit;
mod interner;
pub mod metrics;
mod otlp;
pub mod seal;
pub mod stdout;
pub mod trace;
pub(crate) mod traceparent;

pub(crate) use otlp::CurrentSvid;
