//! TLS and workload identity (SPIFFE X.509-SVIDs).
//!
//! ```text
//!  svid.pem + svid_key.pem          bundle.pem per trust domain
//!      │ Svid::load (svid.rs)           │ TrustBundles::load (bundle.rs)
//!      └──────────────┬─────────────────┘
//!                     ▼
//!            Identity (one snapshot)  ◄── crate::identity: IdentityStore, on a file change
//!                     │                    (crate::watch: the folders) or on SIGHUP
//!      ┌──────────────┴──────────────────────────┐
//!      ▼                                         ▼
//!  inbound_server_config                    outbound_client_config
//!  SpiffeClientVerifier (spiffe_verifier.rs) SpiffeServerVerifier: exactly the route's ID
//!      │ accept: the acceptor takes one IdentitySnapshot's server config per connection
//!      ▼
//!  PeerIdentity::from_server_connection (peer.rs) ─► authorize, XFCC, hop-token binding
//! ```
//!
//! Every certificate decision lives in `spiffe_verifier.rs` and `svid_profile.rs`; see the
//! former's module docs for the verification order and what webpki does for us. Inbound session
//! resumption is off, so every connection re-proves its certificate against the bundles of the
//! moment. A failed handshake is classified for metrics by [`classify_handshake_error`].

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use hopgate_config::{SpiffeId, TrustDomain};
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::sign::SingleCertAndKey;
use rustls::{CertificateError, ClientConfig, OtherError, ServerConfig, SupportedProtocolVersion};

mod bundle;
mod error;
mod peer;
mod spiffe_verifier;
mod svid;
pub(crate) mod svid_profile;
#[cfg(test)]
pub(crate) mod test_support;

pub use bundle::TrustBundles;
pub(crate) use bundle::read_certificates;
pub use error::TlsError;
pub use peer::PeerIdentity;
pub use spiffe_verifier::{SpiffeClientVerifier, SpiffeServerVerifier};
pub use svid::Svid;
pub use svid_profile::SvidError;

/// TLS 1.3 first; TLS 1.2 for peers that cannot do better.
pub(crate) const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// ALPN in preference order: sidecars speak h2 to each other; HTTP/1.1 stays possible.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One consistent set of identity material: our SVID and the bundles we trust.
#[derive(Debug)]
pub struct Identity {
    svid: Svid,
    bundles: TrustBundles,
    loaded_at: SystemTime,
}

// === impl Identity ===

impl Identity {
    /// A snapshot of `svid` and `bundles`, stamped now.
    pub fn new(svid: Svid, bundles: TrustBundles) -> Self {
        Self {
            svid,
            bundles,
            loaded_at: SystemTime::now(),
        }
    }

    /// Reads the SVID files and every bundle file.
    ///
    /// # Errors
    /// Any [`Svid::load`] or [`TrustBundles::load`] error; each names its file.
    pub fn load(
        cert: &Path,
        key: &Path,
        bundles: &BTreeMap<TrustDomain, PathBuf>,
    ) -> Result<Self, TlsError> {
        Ok(Self::new(
            Svid::load(cert, key)?,
            TrustBundles::load(bundles)?,
        ))
    }

    /// Our SVID.
    pub fn svid(&self) -> &Svid {
        &self.svid
    }

    /// The trust bundles, per trust domain.
    pub fn bundles(&self) -> &TrustBundles {
        &self.bundles
    }

    /// When this snapshot was made.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }
}

/// The inbound server config: our SVID as server certificate; a client SVID of one of the
/// `allowed` trust domains is mandatory ([`SpiffeClientVerifier`]); TLS 1.3 and 1.2; ALPN `h2`
/// then `http/1.1`. Session resumption is off (no session cache, no tickets), so every
/// connection runs the full client certificate check.
///
/// # Errors
/// [`TlsError::NoAllowedTrustDomains`], [`TlsError::MissingBundle`] for an allowed domain
/// without a bundle, [`TlsError::Config`] if rustls refuses the config.
pub fn inbound_server_config(
    identity: &Identity,
    allowed: &[TrustDomain],
) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = SpiffeClientVerifier::new(identity.bundles(), allowed)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            identity.svid().certified_key(),
        )));
    // Resumption would skip the client certificate check, so it is off (docs/security.md,
    // "Inbound: the SVID on the handshake").
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The outbound client config for a connection to the workload `expected`: our SVID as client
/// certificate, the server's SVID must carry exactly `expected` ([`SpiffeServerVerifier`]; no
/// DNS name check); TLS 1.3 and 1.2; ALPN `h2` then `http/1.1`.
///
/// # Errors
/// [`TlsError::MissingBundle`] when `expected`'s trust domain has no bundle,
/// [`TlsError::Config`] if rustls refuses the config.
pub fn outbound_client_config(
    identity: &Identity,
    expected: SpiffeId,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = SpiffeServerVerifier::new(identity.bundles(), expected)?;
    let mut config =
        spiffe_verifier::client_config(provider(), verifier, identity.svid().certified_key())
            .map_err(TlsError::Config)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Why a TLS handshake failed, as the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HandshakeFailureReason {
    /// The client sent no certificate.
    NoClientCert,
    /// The certificate is not a valid X.509-SVID (SAN, key usage, basic constraints, ID syntax).
    InvalidSvid,
    /// The SVID's trust domain is not allowed, or hopgate holds no bundle for it.
    UntrustedDomain,
    /// The chain does not lead to the trust domain's bundle.
    UntrustedChain,
    /// The certificate is outside its validity window.
    Expired,
    /// The handshake did not finish in time.
    Timeout,
    /// Any other TLS or I/O failure during the handshake.
    Protocol,
    /// This sidecar has no usable SVID (withdrawn or expired at the Workload API), so it
    /// refuses the connection before the handshake.
    NoIdentity,
}

impl HandshakeFailureReason {
    /// Every value.
    pub const ALL: [Self; 8] = [
        Self::NoClientCert,
        Self::InvalidSvid,
        Self::UntrustedDomain,
        Self::UntrustedChain,
        Self::Expired,
        Self::Timeout,
        Self::Protocol,
        Self::NoIdentity,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoClientCert => "no_client_cert",
            Self::InvalidSvid => "invalid_svid",
            Self::UntrustedDomain => "untrusted_domain",
            Self::UntrustedChain => "untrusted_chain",
            Self::Expired => "expired",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::NoIdentity => "no_identity",
        }
    }
}

/// Why an inbound handshake failed, from the I/O error tokio-rustls returned.
pub fn classify_handshake_error(err: &io::Error) -> HandshakeFailureReason {
    if err.kind() == io::ErrorKind::TimedOut {
        return HandshakeFailureReason::Timeout;
    }
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map_or(HandshakeFailureReason::Protocol, classify_tls_error)
}

/// A handshake failure in words for a log line: the SVID rule that failed when there is one
/// (`peer presented `spiffe://...`; expected `spiffe://...``), else the error itself.
pub fn describe_tls_error(err: &io::Error) -> String {
    let svid_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                inner.downcast_ref::<SvidError>()
            }
            _ => None,
        });
    match svid_error {
        Some(svid) => format!("invalid peer certificate: {svid}"),
        None => err.to_string(),
    }
}

/// Why a handshake failed, from the rustls error.
pub fn classify_tls_error(err: &rustls::Error) -> HandshakeFailureReason {
    let rustls::Error::InvalidCertificate(cert) = err else {
        return match err {
            rustls::Error::NoCertificatesPresented => HandshakeFailureReason::NoClientCert,
            _ => HandshakeFailureReason::Protocol,
        };
    };
    match cert {
        CertificateError::Other(OtherError(inner)) => inner.downcast_ref::<SvidError>().map_or(
            HandshakeFailureReason::InvalidSvid,
            SvidError::failure_reason,
        ),
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => HandshakeFailureReason::Expired,
        CertificateError::UnknownIssuer
        | CertificateError::BadSignature
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            HandshakeFailureReason::UntrustedChain
        }
        _ => HandshakeFailureReason::InvalidSvid,
    }
}

/// The one crypto provider hopgate uses: aws-lc-rs.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    Arc::clone(&PROVIDER)
}

#[cfg(test)]
mod tests;
