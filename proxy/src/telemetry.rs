//! Telemetry: the metrics registry (logs, spans and audit records come with their issues).

pub mod metrics;
