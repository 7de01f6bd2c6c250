//! Fuzzes the compact JWS parser behind hop tokens and origin tokens: it must never panic,
//! whatever the bytes, and whatever it accepts must respect the size and `x5c` caps (DOS-11).
//!
//!   cargo +nightly fuzz run hop_token

#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use hopgate_proxy::token::{MAX_TOKEN_LEN, MAX_X5C, OriginVerifier, inspect};
use libfuzzer_sys::fuzz_target;

static ORIGIN: LazyLock<Option<OriginVerifier>> =
    LazyLock::new(|| OriginVerifier::load(&[], Duration::ZERO).ok());

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    if let Ok(token) = inspect(&input) {
        assert!(input.len() <= MAX_TOKEN_LEN);
        assert!(!token.x5c().is_empty() && token.x5c().len() <= MAX_X5C);
        assert!(token.claims().exp() <= 253_402_300_799);
    }
    if let Some(origin) = ORIGIN.as_ref() {
        // No issuer is configured: parsing runs, and nothing can verify.
        assert!(origin.verify(&input, SystemTime::UNIX_EPOCH).is_err());
    }
});
