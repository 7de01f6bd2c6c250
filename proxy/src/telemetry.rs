//! Telemetry: the metrics registry, the audit records and the request spans.

pub mod audit;
pub mod metrics;
mod otlp;
mod recent;
pub mod stdout;
pub mod trace;
pub(crate) mod traceparent;
