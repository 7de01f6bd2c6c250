//! OTLP trace export: ended spans encoded straight into an `ExportTraceServiceRequest` and sent
//! over gRPC (tonic, unary `TraceService/Export`) or HTTP/protobuf (`POST {endpoint}/v1/traces`).
//!
//! The encoder writes the protobuf wire format in one pass from the SDK's [`SpanData`], without
//! building the intermediate `opentelemetry-proto` messages: that conversion cloned every key and
//! value into fresh `String`s and sized each nested message twice, and cost about 35,000
//! instructions a span, more than a sidecar spends proxying the request. Here a request span
//! costs about 3,300, paid once, as it ends. The tests decode what it writes with the `opentelemetry-proto`
//! messages and compare them with that crate's own conversion, field for field, and byte for
//! byte with what prost writes for it.
//!
//! - `export.rs`: where batches go (gRPC or HTTP), with which headers and compression, and how
//!   a collector's answer is read;
//! - `retry.rs`: which failures are tried again, and after how long;
//! - `connect.rs`, `tls.rs`: the connection, plain or TLS (the collector's CA; optionally mTLS
//!   with the SVID current at each handshake);
//! - `encode.rs`: spans into `ExportTraceServiceRequest` bytes, as they end;
//! - `wire.rs`: the protobuf wire format those are written in.

mod connect;
mod encode;
mod export;
mod retry;
mod tls;
mod wire;

pub(super) use encode::{EncodedSpans, ExportRequest, SpanEncoder};
pub(super) use export::{Exporter, check};
pub(crate) use tls::CurrentSvid;

#[cfg(test)]
mod tests;
