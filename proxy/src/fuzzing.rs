//! Entry points for the cargo-fuzz targets in `fuzz/`, built only with the `fuzzing` feature.
//!
//! Each wrapper reaches a crate-private parser of untrusted input and calls exactly the code the
//! proxy runs, with no logic of its own: what a target finds is a finding in the proxy.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hopgate_config::{SpiffeId, TrustDomain};
use http::HeaderMap;

use crate::telemetry::trace::{HopSpan, SpanKind, Tracing};
use crate::telemetry::traceparent::{CallerTrace, TraceIdHex};
use crate::tls::SvidError;
use crate::tls::svid_profile::{self, Usage};
use crate::token::{OriginVerifier, TokenError};

/// The issuer [`origin_verifier`] configures.
pub const ORIGIN_ISSUER: &str = "https://idp.example";

/// The audience [`origin_verifier`] configures.
pub const ORIGIN_AUDIENCE: &str = "agents";

/// What a leaf that passed the X.509-SVID profile vouches for: its SPIFFE ID, `notBefore` and
/// `notAfter`.
pub type LeafFacts = (SpiffeId, SystemTime, SystemTime);

/// [`OriginVerifier::load`] of one issuer ([`ORIGIN_ISSUER`], [`ORIGIN_AUDIENCE`]) whose JWKS
/// file is `jwks_file`: the origin issuers' JWKS parser.
///
/// # Errors
/// As [`OriginVerifier::load`].
pub fn origin_verifier(jwks_file: &Path) -> Result<OriginVerifier, TokenError> {
    OriginVerifier::from_files(
        std::iter::once((ORIGIN_ISSUER, jwks_file, ORIGIN_AUDIENCE)),
        Duration::ZERO,
    )
}

/// The X.509-SVID profile check of an inbound peer's leaf (client certificate).
///
/// # Errors
/// Why `der` is not an acceptable X.509-SVID.
pub fn check_client_leaf(der: &[u8]) -> Result<LeafFacts, SvidError> {
    svid_profile::check_leaf(der, Usage::ClientAuth).map(|l| (l.id, l.not_before, l.not_after))
}

/// The X.509-SVID profile check of an outbound peer's leaf (server certificate).
///
/// # Errors
/// Why `der` is not an acceptable X.509-SVID.
pub fn check_server_leaf(der: &[u8]) -> Result<LeafFacts, SvidError> {
    svid_profile::check_leaf(der, Usage::ServerAuth).map(|l| (l.id, l.not_before, l.not_after))
}

/// The X.509-SVID profile check of the sidecar's own SVID (presented both ways).
///
/// # Errors
/// Why `der` is not an acceptable X.509-SVID.
pub fn check_own_leaf(der: &[u8]) -> Result<LeafFacts, SvidError> {
    svid_profile::check_leaf(der, Usage::Both).map(|l| (l.id, l.not_before, l.not_after))
}

/// The profile check of a signing certificate of a leaf in trust domain `leaf`.
///
/// # Errors
/// Why `der` is not an acceptable signing certificate for that leaf.
pub fn check_signing_cert(der: &[u8], leaf: &TrustDomain) -> Result<(), SvidError> {
    svid_profile::check_signing_cert(der, leaf)
}

/// The trace id the caller's `traceparent` in `headers` names, as the audit record takes it
/// (`CallerTrace::from_headers`); `None` for a missing or malformed one.
pub fn caller_trace_id(headers: &HeaderMap) -> Option<TraceIdHex> {
    CallerTrace::from_headers(headers).map(|caller| caller.trace_id())
}

/// An inbound request's trace context carried on, as `hop::serve` does it: the `traceparent` of
/// `headers` read once, the request span made its child with the caller's `tracestate`, and the
/// next hop's `traceparent` and `tracestate` written back into `headers`.
pub fn continue_trace(tracing: &Tracing, headers: &mut HeaderMap) -> HopSpan {
    let caller = CallerTrace::from_headers(headers);
    let span = tracing.request_span(
        SpanKind::Inbound,
        caller.as_ref(),
        headers,
        "GET",
        "/",
        http::Version::HTTP_11,
    );
    tracing.inject(&span, headers);
    span
}
