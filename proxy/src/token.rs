//! Hop tokens (profile `hop+jwt`, docs/tokens.md): minted on the outbound side for exactly
//! one next hop, verified on the inbound side against the mTLS peer that presented them.
//!
//! ```text
//!  app A ──(hop-token from A's caller | Authorization: Bearer origin JWT | nothing)──▶ A OUTBOUND
//!     RelayCache::parent (accepted by A INBOUND)   OriginVerifier::verify (JWKS file)
//!            │ VerifiedClaims (parent)               │ OriginClaims (sub, scope)
//!            └────────────────┬──────────────────────┘
//!                             ▼
//!          Minter::mint (aud = B, scope ∩ route scopes, act += A, prv, cnf = A's leaf)
//!                             │ MintedToken ── hop-token header over mTLS (A's SVID) ──▶ B INBOUND
//!                             ▼
//!          TokenVerifier::verify_inbound (compact, PeerIdentity of the connection)
//!                             │ VerifiedClaims ── facts() ──▶ Cedar `context.token`
//! ```
//!
//! # Files
//!
//! - `jws.rs`: the only parser of compact JWS (size cap, format, strict base64url, strict JSON
//!   without duplicate members, the `hop+jwt` header) and the only signing/verifying code;
//! - `claims.rs`: the claim set and the `act` walker;
//! - `mint.rs`: [`Minter`], one per SVID (the key is parsed once);
//! - `verify.rs`: [`TokenVerifier`], the only place a [`VerifiedClaims`] is made;
//! - `origin.rs`: [`OriginVerifier`] for end-user tokens from configured issuers;
//! - `relay.rs`: [`RelayCache`], the tokens the inbound side accepted: the only parents the
//!   outbound side relays;
//! - `cache.rs`: the bounded caches: verified tokens (keyed by the SHA-256 of the compact token,
//!   never by signature bytes), validated `x5c` chains, minted tokens.
//!
//! # Verification order (inbound)
//!
//! Cheap and structural first, crypto after, claims last, so a hostile token costs no signature
//! check unless it is well formed and small (DOS-11 in docs/security.md):
//!
//! 1. `too_large`: more than 16 KiB, before anything is decoded;
//! 2. `malformed`: anything but three non-empty (signature aside) base64url parts of the
//!    characters `A–Z a–z 0–9 - _ .`; non-canonical base64url; JSON that is not UTF-8, has
//!    trailing data, nests deeper than 128 or repeats a member at any level; a header with any
//!    parameter besides `alg`, `typ` and `x5c` (so `crit`, `jku`, `x5u`, `jwk`, `kid`, `x5t`,
//!    `b64`, `zip`, `cty` are refused, never honoured); claims of the wrong JSON type;
//!    times that are negative, fractional or past year 9999;
//! 3. `typ`: not exactly `hop+jwt`;
//! 4. `alg`: not exactly one of `ES256`, `ES384`, `PS256`, `EdDSA` (so `none`, `None`, `HS256`,
//!    `RS256`, ... are refused), or not the one the `x5c` leaf's key type dictates;
//! 5. `too_large` again for an `x5c` of more than 5 certificates, `chain` for a missing or empty
//!    one or entries that are not standard base64 DER;
//! 6. `actor` / `depth`: the `act` chain's shape and length;
//! 7. `alg` again when the `x5c` leaf's key type is not the one `alg` is used with, then `chain`:
//!    the `x5c` chain judged by [`crate::tls::SpiffeClientVerifier::verify_svid`] (every
//!    X.509-SVID rule, the bundle of its own trust domain, now);
//! 8. `signature` with the `x5c` leaf's key (ES256/ES384 raw R‖S only), then `chain` again
//!    unless the leaf's SPIFFE ID is `iss`. The signature, and only it, is skipped for a token
//!    on its minter's own connection: `x5c[0]` is the peer's certificate (same SHA-256) and
//!    `iss` and `cnf` name the peer, so the connection authenticated it (CHA-01..03);
//! 9. `audience`, `expired`, `not_yet_valid`, `lifetime`, `actor` (outermost `act.sub` = `iss`);
//! 10. `binding`: `iss` = the peer's SPIFFE ID and `cnf.x5t#S256` = the peer certificate's hash.
//!
//! Steps 1–9 do not depend on the peer, so their outcome is cached by token hash until the token
//! expires; a cache hit re-runs the time checks and step 10. The outcome of step 7's chain
//! validation is also remembered, per exact `x5c`, for at most five minutes and never past a
//! certificate's notAfter: every token of one minter carries the same chain, so a new token from
//! a known peer costs one signature check. A verifier belongs to one set of trust bundles.
//!
//! # The `act` rule, precisely
//!
//! `iss` is always the minting workload. With `act`, its outermost `sub` must be `iss` and every
//! level must be an object whose `sub` is a canonical SPIFFE ID; other members of a level are
//! carried along and ignored (RFC 8693 §4.1, ACT-07). Without `act`, `sub` must equal `iss`
//! (a workload calling on its own behalf, ACT-03); a token for an end user therefore always has
//! `act`, whose innermost actor is the workload that verified the user's origin token. Relaying
//! appends: the child's `act` is `{sub: self, act: <parent act, verbatim>}`, or `{sub: self}`
//! when the parent had none (its `sub` already names the origin workload, so repeating it as an
//! actor would count it twice in `depth` and `hop.chain`). A chain that revisits a workload
//! (A → B → A) is accepted and bounded by `max_depth` (ACT-12, PROFILE).
//!
//! # Rule coverage (docs/security.md)
//!
//! Tests cite their IDs in their names: every JWT-* rule except those below, ACT-01..08,
//! 10..12, CNF-01..03, 05..07 and DOS-11 (`token/tests/`, `jws/tests.rs`, `claims.rs`). Partly
//! covered elsewhere, or not applicable to `hop+jwt`, and why:
//!
//! - JWT-14: three certificate-profile reject cases are tested here (CA leaf, no
//!   `digitalSignature`, two URI SANs); the `x5c` chain goes through the very `verify_svid` the
//!   inbound handshake uses, whose tests (`tls/spiffe_verifier/tests.rs`,
//!   `tls/svid_profile/tests.rs`) cover the rest.
//! - ACT-08: prior actors reach Cedar only as `context.token.actors`; the principal is always the
//!   mTLS peer, which `binding` ties to `iss` = the current actor. The policy side is CED-08.
//! - CNF-04: [`TokenVerifier::verify_inbound`] takes a [`crate::tls::PeerIdentity`], which exists
//!   only for a connection whose client certificate was verified: a request without one cannot
//!   reach the check.
//! - JWT-39 (two tokens in one request), JWT-40 (`jti` replay), TXN-01/02/07/08/10: header
//!   handling belongs to the HTTP layer; hop tokens are audience- and peer-bound and live at most
//!   `token.max_ttl`, so no `jti` replay cache is kept (a replay by another peer fails `binding`).
//! - ACT-09 (`may_act`): hop tokens carry no `may_act`; who may act is Cedar's decision.
//! - ACT-13: there is no requested scope; the route's `scopes` are intersected, never added.
//! - ACT-14, HDR-07: the origin `Authorization` header is removed by the outbound stack.
//! - TXN-03..06, TXN-09, TXN-11: hop tokens are not Transaction Tokens (`typ` differs, so a
//!   `txntoken+jwt` is refused as `typ`, JWT-22); `txn` and `tctx` are copied unchanged.
//! - JWT-46/47 (full Wycheproof and RFC 7520 vector runs) are covered by aws-lc-rs' own tests; we
//!   test the profile decisions on top (raw R‖S lengths, DER, high-S, other algorithms).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

mod cache;
mod claims;
mod jws;
mod known_header;
mod mint;
mod origin;
mod relay;
mod verify;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

pub use claims::Claims;
pub use jws::{Alg, MAX_TOKEN_LEN, MAX_X5C, TYP, UnverifiedToken, inspect};
// The audit seals are signed and verified by the same code as hop tokens.
pub(crate) use jws::{LeafKey, Signer, verify_signature};
pub use mint::{MintRequest, MintedToken, Minter};
pub use origin::{OriginClaims, OriginVerifier};
pub use relay::RelayCache;
pub use verify::{Limits, TokenVerifier, VerifiedClaims};

/// Why a token was refused: the stable reason code of a 401 and of
/// `hopgate_token_rejections_total{reason}` (docs/tokens.md, "Receiver checks and reason codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Error)]
#[error("{}", self.as_str())]
pub enum RejectReason {
    /// Not a well-formed compact JWS with a valid header and claim set.
    Malformed,
    /// `typ` is not `hop+jwt` (or, for origin tokens, is `hop+jwt`).
    Typ,
    /// `alg` is not allowed, or does not match the signing key's type.
    Alg,
    /// The signature does not verify with the key the token names.
    Signature,
    /// `x5c` is not a valid SVID chain of its trust domain, or its SPIFFE ID is not `iss`.
    Chain,
    /// `iss` is not the mTLS peer, or `cnf.x5t#S256` is not the peer certificate's hash.
    Binding,
    /// `aud` is not this workload (or, for origin tokens, not the configured audience).
    Audience,
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` or `iat` is in the future, beyond the leeway.
    NotYetValid,
    /// `exp - iat` exceeds `token.max_ttl`, is not positive, or `exp` is past the signer's
    /// notAfter.
    Lifetime,
    /// The `act` chain is malformed, or its outermost `sub` is not `iss` (or, without `act`,
    /// `sub` is not `iss`).
    Actor,
    /// More actors than `token.max_depth`.
    Depth,
    /// The token exceeds 16 KiB, or `x5c` holds too many certificates.
    TooLarge,
    /// Origin tokens only: `iss` is not a configured issuer.
    Issuer,
    /// Outbound only: the app relays a token this sidecar's inbound side never accepted (or
    /// no longer holds), however well it is signed.
    Relay,
}

/// Why a token could not be minted, or origin keys could not be loaded.
#[derive(Debug, Error)]
pub enum TokenError {
    /// The SVID holds no certificate.
    #[error("SVID has no leaf certificate")]
    NoLeaf,
    /// The SVID chain is longer than a hop token's `x5c` may be.
    #[error("SVID chain has `{0}` certificates; a hop token's `x5c` holds at most {MAX_X5C}")]
    ChainTooLong(usize),
    /// The SVID's key type has no hop token algorithm.
    #[error("SVID key is not of a type hop tokens are signed with: {0}")]
    UnsupportedKey(&'static str),
    /// aws-lc-rs refused the SVID's PKCS#8 key.
    #[error("SVID private key rejected: {0}")]
    KeyRejected(#[source] aws_lc_rs::error::KeyRejected),
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// The signature could not be made.
    #[error("signing the hop token failed")]
    Signing,
    /// The token would be expired at birth: the SVID or the parent token expires now.
    #[error("no lifetime left: the SVID or the parent token expires before `{0}`")]
    NoLifetime(u64),
    /// The system clock reads before 1970.
    #[error("the system clock is before the Unix epoch")]
    Clock,
    /// The claims could not be serialised.
    #[error("claims do not serialise: {0}")]
    Serialize(#[source] serde_json::Error),
    /// An origin issuer's JWKS file cannot be read.
    #[error("cannot read JWKS file `{path}`: {source}")]
    JwksRead {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An origin issuer's JWKS file is not a usable key set.
    #[error("JWKS file `{path}`: {message}")]
    Jwks {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// The reason code of a call without a hop token where `inbound.require_token` demands one.
pub const MISSING_TOKEN: &str = "missing";

/// Every reason code a hop token can be refused with: [`RejectReason`]'s and
/// [`MISSING_TOKEN`], the values of `hopgate_token_rejections_total{reason}`.
pub fn rejection_reasons() -> impl Iterator<Item = &'static str> {
    RejectReason::ALL
        .into_iter()
        .map(RejectReason::as_str)
        .chain([MISSING_TOKEN])
}

// === impl RejectReason ===

impl RejectReason {
    /// Every reason, in verification order.
    pub const ALL: [Self; 14] = [
        Self::TooLarge,
        Self::Malformed,
        Self::Typ,
        Self::Alg,
        Self::Signature,
        Self::Chain,
        Self::Binding,
        Self::Audience,
        Self::Expired,
        Self::NotYetValid,
        Self::Lifetime,
        Self::Actor,
        Self::Depth,
        Self::Issuer,
    ];

    /// The stable reason code (`malformed`, `typ`, `alg`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Typ => "typ",
            Self::Alg => "alg",
            Self::Signature => "signature",
            Self::Chain => "chain",
            Self::Binding => "binding",
            Self::Audience => "audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Lifetime => "lifetime",
            Self::Actor => "actor",
            Self::Depth => "depth",
            Self::TooLarge => "too_large",
            Self::Issuer => "issuer",
            Self::Relay => "relay",
        }
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs(time: SystemTime) -> Option<u64> {
    time.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// The instant `secs` after the Unix epoch.
pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// SHA-256 of `bytes`, by aws-lc (the TLS provider's own, SHA-NI or AVX): a token with its
/// `x5c` chain is some 4 KiB, hashed once where minted and once where received.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; 32];
    // INVARIANT: a SHA-256 digest is 32 bytes, so the lengths match.
    out.copy_from_slice(digest.as_ref());
    out
}
