//! Shared support for the end-to-end tests: PKI, the test app, a caller, a sidecar.

pub(crate) mod client;
pub(crate) mod eventually;
pub(crate) mod idp;
pub(crate) mod mcp_app;
pub(crate) mod otlp;
pub(crate) mod pki;
pub(crate) mod proxy;
pub(crate) mod sidecar;
pub(crate) mod stream_app;
pub(crate) mod upstream;
pub(crate) mod workload;
pub(crate) mod workload_api;
