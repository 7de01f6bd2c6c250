//! Fuzzes the origin issuers' JWKS parser (`token.origin.issuers[].jwks_file`, RFC 7517): a file
//! an identity provider publishes and an operator copies in. It must never panic, whatever the
//! bytes; a file it refuses is refused as a JWKS problem (never as unreadable), and a file it
//! loads holds at least one usable key, which verifies no token nobody signed (each of the three
//! algorithms, with and without `kid`, so every fuzzed key meets the signature check).
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run jwks

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::SystemTime;

use hopgate_proxy::fuzzing::origin_verifier;
use hopgate_proxy::token::TokenError;
use libfuzzer_sys::fuzz_target;

/// The JWKS file each input is written to: the parser reads a path, as at startup.
static FILE: LazyLock<PathBuf> = LazyLock::new(|| {
    std::env::temp_dir().join(format!("hopgate-fuzz-jwks-{}.json", std::process::id()))
});

/// Compact JWS of `{"iss":"https://idp.example","aud":"agents","sub":"alice","exp":4102444800}`
/// under `{"alg":A,"kid":"k1"}` and `{"alg":A}`, each with a signature of the right size for
/// its algorithm that no key made.
static TOKENS: LazyLock<Vec<String>> = LazyLock::new(|| {
    const PAYLOAD: &str = "eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlIiwiYXVkIjoiYWdlbnRzIiwic3ViIjoiYWxpY2UiLCJleHAiOjQxMDI0NDQ4MDB9";
    let headers = [
        "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0", // {"alg":"ES256","kid":"k1"}
        "eyJhbGciOiJFUzI1NiJ9",                // {"alg":"ES256"}
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0", // {"alg":"RS256","kid":"k1"}
        "eyJhbGciOiJSUzI1NiJ9",                // {"alg":"RS256"}
        "eyJhbGciOiJQUzI1NiIsImtpZCI6ImsxIn0", // {"alg":"PS256","kid":"k1"}
        "eyJhbGciOiJQUzI1NiJ9",                // {"alg":"PS256"}
    ];
    headers
        .iter()
        .map(|header| {
            // `AQ` repeated: 64 bytes for ES256, 256 for RSA, in canonical base64url.
            let es256 = header.starts_with("eyJhbGciOiJFUzI1Ni");
            let signature = "AQ".repeat(if es256 { 43 } else { 171 });
            format!("{header}.{PAYLOAD}.{signature}")
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    if std::fs::write(&*FILE, data).is_err() {
        return;
    }
    match origin_verifier(&FILE) {
        Ok(verifier) => {
            assert!(!verifier.is_empty(), "a loaded JWKS configures its issuer");
            let now = SystemTime::UNIX_EPOCH;
            for token in TOKENS.iter() {
                assert!(
                    verifier.verify(token, now).is_err(),
                    "a token nobody signed verified: {token}"
                );
            }
        }
        Err(err @ TokenError::Jwks { .. }) => {
            let _ = err.to_string();
        }
        Err(other) => panic!("a readable JWKS file refused as something else: {other}"),
    }
});
