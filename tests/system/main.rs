//! System tests: they need root, network namespaces and iptables, so `cargo test --workspace`
//! leaves them out (`test = false` in Cargo.toml) and `./test.sh` runs them explicitly
//! (`cargo test --test system`), as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

// The end-to-end tests' sidecars, PKI and upstreams; only part of it is used here.
#[allow(dead_code, reason = "shared with tests/e2e, which uses the rest")]
#[path = "../e2e/support"]
mod support {
    pub(crate) mod client;
    pub(crate) mod eventually;
    pub(crate) mod idp;
    pub(crate) mod mcp_app;
    pub(crate) mod otlp;
    pub(crate) mod pki;
    pub(crate) mod proxy;
    pub(crate) mod sidecar;
    pub(crate) mod upstream;
    pub(crate) mod workload;
}

mod mesh;
// Fresh network namespaces, and this binary re-executed inside one.
mod netns;
mod readable;

// The SPIRE harness offers more than its own tests use: the proxy's SPIRE tests use the rest.
#[allow(dead_code, reason = "a harness: its tests use part of it")]
mod spire;

mod iptables;
mod jaeger;
mod jaeger_tls;
mod mcp_sdk;
mod spire_hop;
mod tools;
mod transparent;
