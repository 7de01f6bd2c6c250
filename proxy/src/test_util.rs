//! Test support shared by hopgate's unit tests, its integration tests and its benches (the
//! `test-util` feature): the one PKI builder, and the open-request registry driven from a bench.
//! Nothing here is part of the sidecar.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    missing_debug_implementations,
    reason = "test support: a failure here is a broken test, reported by the panic"
)]

pub mod pki;
pub mod streams;
