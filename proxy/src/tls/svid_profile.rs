//! The X.509-SVID certificate profile, checked on one certificate at a time.
//!
//! These are the SVID rules that RFC 5280 path validation (webpki) does not make (docs/security.md,
//! "Inbound: the SVID on the handshake", whose step numbers are used below): exactly one URI SAN
//! holding a canonical SPIFFE ID with a non-root path, a leaf that is not a CA, a critical key
//! usage with `digitalSignature` and without `keyCertSign`/`cRLSign`, and signing certificates
//! whose SPIFFE ID (if any) has no path and sits in the leaf's trust domain. The parse is strict
//! (step 1): trailing data, a repeated extension or an extension that does not parse rejects the
//! certificate.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hopgate_config::{SpiffeId, SpiffeIdError, TrustDomain};
use thiserror::Error;
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::tls::HandshakeFailureReason;

/// Why a certificate is not an acceptable X.509-SVID.
///
/// Carried inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))` so a failed
/// handshake can be classified ([`crate::tls::classify_handshake_error`]).
#[derive(Error)]
pub enum SvidError {
    /// The DER does not parse as an X.509 certificate.
    #[error("certificate does not parse: {0}")]
    BadDer(#[source] X509Error),
    /// Bytes follow the certificate's outer `SEQUENCE`.
    #[error("certificate has `{0}` bytes of trailing data")]
    TrailingData(usize),
    /// An extension appears twice (RFC 5280 §4.2).
    #[error("certificate repeats extension `{0}`")]
    DuplicateExtension(String),
    /// A known extension does not parse.
    #[error("certificate extension `{0}` does not parse")]
    MalformedExtension(String),
    /// The subject alternative name extension holds an entry that does not decode.
    #[error("certificate has a subject alternative name that does not decode")]
    MalformedSan,
    /// Not exactly one URI SAN (X509-SVID §2).
    #[error("certificate has `{0}` URI SANs; an X.509-SVID has exactly one")]
    UriSanCount(usize),
    /// The URI SAN is not a canonical SPIFFE ID (SPIFFE-ID §2; never normalised).
    #[error("URI SAN `{uri}` is not a canonical SPIFFE ID: {source}")]
    SpiffeId {
        /// The URI SAN as presented.
        uri: String,
        /// What is wrong with it.
        #[source]
        source: SpiffeIdError,
    },
    /// A workload SVID names only a trust domain (X509-SVID §3.1).
    #[error("SPIFFE ID `{0}` has no path; a workload SVID needs one")]
    RootId(String),
    /// The subject is empty but the SAN extension is not critical (X509-SVID §3.1).
    #[error("subject is empty but the subject alternative name extension is not critical")]
    NonCriticalSan,
    /// The leaf has basic constraints `cA=true` (X509-SVID §4.1).
    #[error("leaf certificate is a CA (`cA=true`)")]
    CaLeaf,
    /// No key usage extension (X509-SVID §4.3).
    #[error("key usage extension is missing")]
    MissingKeyUsage,
    /// The key usage extension is not critical (X509-SVID §4.3).
    #[error("key usage extension is not critical")]
    NonCriticalKeyUsage,
    /// The leaf's key usage lacks `digitalSignature` (X509-SVID §4.3).
    #[error("key usage lacks `digitalSignature`")]
    MissingDigitalSignature,
    /// The leaf's key usage has a signing-certificate bit (X509-SVID §4.3).
    #[error("leaf key usage has `{0}`, which only signing certificates may carry")]
    SigningKeyUsage(&'static str),
    /// The extended key usage does not allow what the certificate is used for (X509-SVID §4.4).
    #[error("extended key usage lacks `{0}`")]
    ExtendedKeyUsage(&'static str),
    /// The SVID's trust domain is not trusted by this verifier, or has no bundle.
    #[error("trust domain `{0}` is not trusted here")]
    UntrustedDomain(TrustDomain),
    /// The server's SVID names another workload than the route expects.
    #[error("peer presented `{presented}`; expected `{expected}`")]
    UnexpectedId {
        /// The SPIFFE ID the route names.
        expected: SpiffeId,
        /// The SPIFFE ID the peer's SVID carries.
        presented: SpiffeId,
    },
    /// RFC 5280 path validation against the trust domain's bundle failed.
    #[error("certificate path does not validate: {0}")]
    Path(#[source] webpki::Error),
    /// A signing certificate carries a SPIFFE ID with a path (X509-SVID §3.2).
    #[error("signing certificate carries `{0}`; a signing certificate's SPIFFE ID has no path")]
    SigningCertPath(String),
    /// A signing certificate carries a SPIFFE ID of another trust domain (X509-SVID §3.2).
    #[error("signing certificate carries `{id}`, outside the leaf's trust domain `{leaf}`")]
    SigningCertDomain {
        /// The signing certificate's URI SAN.
        id: String,
        /// The leaf's trust domain.
        leaf: TrustDomain,
    },
    /// A signing certificate lacks a critical key usage with `keyCertSign` (X509-SVID §4.3).
    #[error("signing certificate lacks a critical key usage with `keyCertSign`")]
    SigningCertKeyUsage,
}

/// What a leaf SVID is about to be used for; decides the extended key usage it must allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    /// A peer's client certificate on the inbound side.
    ClientAuth,
    /// A peer's server certificate on the outbound side.
    ServerAuth,
    /// Our own SVID, presented both ways.
    Both,
}

/// The facts a leaf that passed the profile checks vouches for.
#[derive(Debug)]
pub(crate) struct SvidLeaf {
    pub(crate) id: SpiffeId,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

// === impl SvidError ===

impl std::fmt::Debug for SvidError {
    // rustls renders `CertificateError::Other` with `Debug`; the message reads better in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl SvidError {
    /// The handshake failure label this error counts under.
    pub fn failure_reason(&self) -> HandshakeFailureReason {
        match self {
            Self::UntrustedDomain(_) => HandshakeFailureReason::UntrustedDomain,
            Self::Path(_)
            | Self::SigningCertPath(_)
            | Self::SigningCertDomain { .. }
            | Self::SigningCertKeyUsage => HandshakeFailureReason::UntrustedChain,
            Self::BadDer(_)
            | Self::TrailingData(_)
            | Self::DuplicateExtension(_)
            | Self::MalformedExtension(_)
            | Self::MalformedSan
            | Self::UriSanCount(_)
            | Self::SpiffeId { .. }
            | Self::RootId(_)
            | Self::NonCriticalSan
            | Self::CaLeaf
            | Self::MissingKeyUsage
            | Self::NonCriticalKeyUsage
            | Self::MissingDigitalSignature
            | Self::SigningKeyUsage(_)
            | Self::ExtendedKeyUsage(_)
            | Self::UnexpectedId { .. } => HandshakeFailureReason::InvalidSvid,
        }
    }
}

// === checks ===

/// Checks a leaf against the X.509-SVID profile (steps 1–3) and returns its SPIFFE ID.
pub(crate) fn check_leaf(der: &[u8], usage: Usage) -> Result<SvidLeaf, SvidError> {
    let cert = parse_strict(der)?;
    let id = single_spiffe_id(&cert)?;
    if id.is_root() {
        return Err(SvidError::RootId(id.to_string()));
    }
    let bc = cert
        .basic_constraints()
        .map_err(|_| malformed("2.5.29.19"))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::CaLeaf);
    }
    let ku = cert.key_usage().map_err(|_| malformed("2.5.29.15"))?;
    let ku = ku.ok_or(SvidError::MissingKeyUsage)?;
    if !ku.critical {
        return Err(SvidError::NonCriticalKeyUsage);
    }
    if !ku.value.digital_signature() {
        return Err(SvidError::MissingDigitalSignature);
    }
    if ku.value.key_cert_sign() {
        return Err(SvidError::SigningKeyUsage("keyCertSign"));
    }
    if ku.value.crl_sign() {
        return Err(SvidError::SigningKeyUsage("cRLSign"));
    }
    check_extended_key_usage(&cert, usage)?;
    Ok(SvidLeaf {
        id,
        not_before: system_time(cert.validity().not_before.timestamp()),
        not_after: system_time(cert.validity().not_after.timestamp()),
    })
}

/// Checks an intermediate that path validation used (step 6): a critical key usage with
/// `keyCertSign`, and every SPIFFE ID it carries canonical, without a path and in the leaf's
/// trust domain (X509-SVID §3.2, PROFILE: "SHOULD be in the leaf's trust domain" made a MUST).
pub(crate) fn check_signing_cert(der: &[u8], leaf: &TrustDomain) -> Result<(), SvidError> {
    let cert = parse_strict(der)?;
    let ku = cert.key_usage().map_err(|_| malformed("2.5.29.15"))?;
    if !ku.is_some_and(|ku| ku.critical && ku.value.key_cert_sign()) {
        return Err(SvidError::SigningCertKeyUsage);
    }
    for uri in uri_sans(&cert)?
        .into_iter()
        .filter(|uri| is_spiffe_scheme(uri))
    {
        let id = parse_id(uri)?;
        if !id.is_root() {
            return Err(SvidError::SigningCertPath(id.to_string()));
        }
        if id.trust_domain_name() != leaf.as_str() {
            return Err(SvidError::SigningCertDomain {
                id: id.to_string(),
                leaf: leaf.clone(),
            });
        }
    }
    Ok(())
}

fn parse_strict(der: &[u8]) -> Result<X509Certificate<'_>, SvidError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|err| {
        SvidError::BadDer(match err {
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
            x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
        })
    })?;
    if !rest.is_empty() {
        return Err(SvidError::TrailingData(rest.len()));
    }
    let mut seen = HashSet::new();
    for ext in cert.extensions() {
        if !seen.insert(&ext.oid) {
            return Err(SvidError::DuplicateExtension(ext.oid.to_id_string()));
        }
        if matches!(ext.parsed_extension(), ParsedExtension::ParseError { .. }) {
            return Err(SvidError::MalformedExtension(ext.oid.to_id_string()));
        }
    }
    Ok(cert)
}

/// The leaf's one URI SAN as a canonical SPIFFE ID. Every URI SAN counts, whatever its scheme
/// (X509-SVID §2), and the ID is parsed, never normalised.
fn single_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    match uri_sans(cert)?.as_slice() {
        [uri] => parse_id(uri),
        uris => Err(SvidError::UriSanCount(uris.len())),
    }
}

/// Every URI SAN; an undecodable SAN entry or a SAN extension without names rejects the
/// certificate, as does an empty subject without a critical SAN (X509-SVID §3.1).
fn uri_sans<'a>(cert: &X509Certificate<'a>) -> Result<Vec<&'a str>, SvidError> {
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|_| malformed("2.5.29.17"))?
    else {
        return Ok(Vec::new());
    };
    if san.value.general_names.is_empty() {
        return Err(SvidError::MalformedSan);
    }
    if !san.critical && cert.subject().iter().next().is_none() {
        return Err(SvidError::NonCriticalSan);
    }
    let mut uris = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(uri) => uris.push(*uri),
            GeneralName::Invalid(..) => return Err(SvidError::MalformedSan),
            _ => {}
        }
    }
    Ok(uris)
}

fn parse_id(uri: &str) -> Result<SpiffeId, SvidError> {
    SpiffeId::parse(uri).map_err(|source| SvidError::SpiffeId {
        uri: uri.to_owned(),
        source,
    })
}

fn check_extended_key_usage(cert: &X509Certificate<'_>, usage: Usage) -> Result<(), SvidError> {
    let eku = cert
        .extended_key_usage()
        .map_err(|_| malformed("2.5.29.37"))?;
    // X509-SVID §4.4: the extension is optional; when present it must allow the use at hand.
    let Some(eku) = eku else {
        return Ok(());
    };
    let (client, server) = match usage {
        Usage::ClientAuth => (true, false),
        Usage::ServerAuth => (false, true),
        Usage::Both => (true, true),
    };
    if client && !eku.value.client_auth {
        return Err(SvidError::ExtendedKeyUsage("clientAuth"));
    }
    if server && !eku.value.server_auth {
        return Err(SvidError::ExtendedKeyUsage("serverAuth"));
    }
    Ok(())
}

/// Whether a URI uses the SPIFFE scheme in any letter case: such a URI must be canonical.
fn is_spiffe_scheme(uri: &str) -> bool {
    uri.get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("spiffe:"))
}

fn malformed(oid: &str) -> SvidError {
    SvidError::MalformedExtension(oid.to_owned())
}

fn system_time(unix: i64) -> SystemTime {
    u64::try_from(unix).map_or(UNIX_EPOCH, |secs| UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests;
