//! End-to-end tests of hopgate over real loopback sockets, with PKI generated per test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod admin;
mod caller_rotation;
mod cancel_burst;
mod curl;
mod demo_export;
mod dns;
mod folded_headers;
mod framing;
mod h1_matrix;
mod h2_matrix;
mod inbound;
mod mcp;
mod metrics;
mod otlp_export;
mod outbound;
mod outbound_edge;
mod path_swaps;
mod reload;
mod rotation;
mod shutdown;
mod slow_heads;
mod streams;
mod streams_grpc;
mod support;
mod svid_matrix;

mod audit;
mod audit_outcomes;
mod audit_seal;
mod audit_stall;
mod audit_trace;
mod policy;
mod policy_reload;
mod token;
mod token_context;
mod tracing_outage;
mod tracing_spans;
mod transactions;
mod workload_api;
mod workload_api_hop;
