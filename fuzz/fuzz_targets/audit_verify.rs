//! Fuzzes `hopgate audit verify`'s reader of audit logs, which are files anyone may hand it: it
//! must never panic, whatever the bytes, and a log it calls intact without a trust check is never
//! reported as trusted.
//!
//!   cargo +nightly fuzz run audit_verify

#![no_main]

use hopgate_proxy::telemetry::seal::verify::{first_signer, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = verify(data, None) {
        assert!(!report.trusted, "nothing vouched for the signer");
    }
    let _ = first_signer(data);
});
