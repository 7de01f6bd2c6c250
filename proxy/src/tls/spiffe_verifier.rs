//! SPIFFE X.509-SVID verifiers for rustls: [`SpiffeClientVerifier`] checks a caller's client
//! certificate on the inbound side, [`SpiffeServerVerifier`] checks the server's certificate on
//! the outbound side. This is the only file in hopgate that calls rustls' `dangerous()` (for the
//! outbound client config): every certificate decision hopgate makes is in this file and in
//! `svid_profile.rs`, which it calls.
//!
//! # Order (docs/security.md, "Inbound: the SVID on the handshake")
//!
//! 1. Parse the leaf strictly (x509-parser): no trailing data, no repeated extension, every known
//!    extension parses.
//! 2. Exactly one URI SAN, whatever its scheme; a canonical SPIFFE ID (`SpiffeId::parse`, which
//!    rejects rather than normalises) with a non-root path.
//! 3. Leaf not a CA; key usage present, critical, with `digitalSignature`, without `keyCertSign`
//!    and `cRLSign`; an extended key usage, if present, allows `clientAuth` (inbound) or
//!    `serverAuth` (outbound). Outbound, the ID must equal the route's identity.
//! 4. Pick the bundle by the exact trust domain of that ID. A domain that is not allowed or has
//!    no bundle is rejected; there is no fallback to other domains' roots.
//! 5. RFC 5280 path validation by webpki against that bundle only, intermediates from the
//!    presented chain, time = now.
//! 6. Every intermediate on the validated path has a critical key usage with `keyCertSign`, and
//!    any SPIFFE ID it carries has no path and is in the leaf's trust domain.
//!
//! # What webpki checks, and what this file checks instead
//!
//! Kept from webpki (`EndEntityCert::verify_for_usage`): signatures up to a trust anchor, path
//! building over the presented intermediates, the validity window of every certificate,
//! basic constraints (issuers must be CAs, path length, a CA as end entity is refused), the
//! extended key usage for the side (`client_auth()` / `server_auth()`, required if present),
//! name constraints (URI constraints fail closed) and unknown critical extensions.
//!
//! Replaced or added, because webpki does not do them for SVIDs:
//! - the subject name check: webpki matches DNS names and IP addresses; an SVID is named by its
//!   one URI SAN, so no DNS name is ever checked and the SPIFFE ID rules of steps 2–3 apply;
//! - key usage: webpki ignores it; X509-SVID §4.3 requires it (step 3, step 6);
//! - anchor selection: webpki trusts whatever anchors it is given, so it is only ever given the
//!   anchors of the leaf's own trust domain (step 4);
//! - the SPIFFE ID of signing certificates (X509-SVID §3.2, step 6).
//!
//! Not done: revocation. SPIFFE relies on short-lived SVIDs and its bundles carry no CRLs.
//!
//! Failures are returned as `rustls::Error::InvalidCertificate`: the standard
//! `CertificateError` variants for expiry, unknown issuer and bad signature, and
//! `CertificateError::Other` holding an [`SvidError`] for everything else, so that
//! [`crate::tls::classify_handshake_error`] can tell them apart.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use hopgate_config::{SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::tls::svid_profile::{self, SvidError, Usage};
use crate::tls::{PROTOCOL_VERSIONS, TlsError, TrustBundles, provider};

/// Verifies a client's X.509-SVID against the bundle of its own trust domain, for the inbound
/// side. Client authentication is mandatory.
pub struct SpiffeClientVerifier {
    domains: BTreeMap<TrustDomain, Arc<[TrustAnchor<'static>]>>,
    algorithms: WebPkiSupportedAlgorithms,
}

/// Verifies a server's X.509-SVID for the outbound side: it must carry exactly the expected
/// SPIFFE ID and chain to the bundle of that ID's trust domain. No DNS name is checked.
pub struct SpiffeServerVerifier {
    expected: SpiffeId,
    anchors: Arc<[TrustAnchor<'static>]>,
    algorithms: WebPkiSupportedAlgorithms,
}

// === impl SpiffeClientVerifier ===

impl SpiffeClientVerifier {
    /// A verifier that accepts SVIDs of the `allowed` trust domains, each against its bundle.
    ///
    /// # Errors
    /// [`TlsError::NoAllowedTrustDomains`] when `allowed` is empty and
    /// [`TlsError::MissingBundle`] when an allowed domain has no bundle.
    pub fn new(bundles: &TrustBundles, allowed: &[TrustDomain]) -> Result<Self, TlsError> {
        if allowed.is_empty() {
            return Err(TlsError::NoAllowedTrustDomains);
        }
        let domains = allowed
            .iter()
            .map(|td| {
                let anchors = bundles
                    .shared_anchors(td)
                    .ok_or_else(|| TlsError::MissingBundle(td.clone()))?;
                Ok((td.clone(), anchors))
            })
            .collect::<Result<_, TlsError>>()?;
        Ok(Self {
            domains,
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// Runs every check of the inbound handshake on a chain (leaf first) and returns the
    /// leaf's SPIFFE ID: for certificates that arrive outside a handshake, such as a hop
    /// token's `x5c`, so they are judged by exactly the same rules.
    ///
    /// # Errors
    /// As in the handshake: `rustls::Error::InvalidCertificate` holding a standard
    /// `CertificateError` (expiry, unknown issuer, bad signature) or an [`SvidError`].
    pub fn verify_svid(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, rustls::Error> {
        let leaf = svid_profile::check_leaf(end_entity, Usage::ClientAuth).map_err(invalid)?;
        let td = leaf.id.trust_domain();
        let anchors = self
            .domains
            .get(&td)
            .ok_or_else(|| invalid(SvidError::UntrustedDomain(td.clone())))?;
        let algorithms = &self.algorithms;
        verify_path(
            end_entity,
            intermediates,
            anchors,
            &td,
            now,
            Usage::ClientAuth,
            algorithms,
        )?;
        Ok(leaf.id)
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the client has one SVID to present, and the names would only advertise
        // which trust domains we accept.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_svid(end_entity, intermediates, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("trust_domains", &self.domains.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

// === impl SpiffeServerVerifier ===

impl SpiffeServerVerifier {
    /// A verifier that accepts only an SVID for `expected`, against the bundle of its domain.
    ///
    /// # Errors
    /// [`TlsError::MissingBundle`] when `expected`'s trust domain has no bundle.
    pub fn new(bundles: &TrustBundles, expected: SpiffeId) -> Result<Self, TlsError> {
        let td = expected.trust_domain();
        let anchors = bundles
            .shared_anchors(&td)
            .ok_or(TlsError::MissingBundle(td))?;
        Ok(Self {
            expected,
            anchors,
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let leaf = svid_profile::check_leaf(end_entity, Usage::ServerAuth).map_err(invalid)?;
        if leaf.id != self.expected {
            return Err(invalid(SvidError::UnexpectedId {
                expected: self.expected.clone(),
                presented: leaf.id,
            }));
        }
        let td = leaf.id.trust_domain();
        verify_path(
            end_entity,
            intermediates,
            &self.anchors,
            &td,
            now,
            Usage::ServerAuth,
            &self.algorithms,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// The outbound client config: our SVID as client certificate, the server checked by
/// [`SpiffeServerVerifier`]. The one `dangerous()` call in hopgate: rustls has no safe way to
/// replace its DNS-name server verification.
#[expect(
    clippy::disallowed_methods,
    reason = "the one place hopgate replaces rustls' server verification: with the SPIFFE verifier above"
)]
pub(crate) fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: SpiffeServerVerifier,
    client_cert: Arc<CertifiedKey>,
) -> Result<ClientConfig, rustls::Error> {
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(client_cert))))
}

/// Steps 5 and 6: webpki path validation against `anchors` only, then the SPIFFE rules for the
/// intermediates that validation actually used.
fn verify_path(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'static>],
    td: &TrustDomain,
    now: UnixTime,
    usage: Usage,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<(), rustls::Error> {
    let eku = match usage {
        Usage::ServerAuth => webpki::KeyUsage::server_auth(),
        Usage::ClientAuth | Usage::Both => webpki::KeyUsage::client_auth(),
    };
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(path_error)?;
    let path = cert
        .verify_for_usage(algorithms.all, anchors, intermediates, now, eku, None, None)
        .map_err(path_error)?;
    for signer in path.intermediate_certificates() {
        svid_profile::check_signing_cert(&signer.der(), td).map_err(invalid)?;
    }
    Ok(())
}

fn invalid(err: SvidError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}

/// Maps webpki's verdict: the standard rustls variants where one fits, else an [`SvidError`].
fn path_error(err: webpki::Error) -> rustls::Error {
    let cert_err = match err {
        webpki::Error::CertExpired { time, not_after } => {
            CertificateError::ExpiredContext { time, not_after }
        }
        webpki::Error::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        webpki::Error::UnknownIssuer => CertificateError::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        other => return invalid(SvidError::Path(other)),
    };
    rustls::Error::InvalidCertificate(cert_err)
}

#[cfg(test)]
mod tests;
