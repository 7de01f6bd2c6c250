//! Telemetry: the metrics registry and the audit records (spans come with tracing).

pub mod audit;
pub mod metrics;
