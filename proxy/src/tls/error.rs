//! `TlsError`: every way loading identity material or building a TLS config can fail. Each load
//! error names the file it came from, so an operator can fix it without guessing.

use std::io;
use std::path::PathBuf;

use hopgate_config::TrustDomain;
use thiserror::Error;

use crate::tls::SvidError;

/// Loading an SVID or a bundle, or building a TLS config, failed.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("`{path}` is not valid PEM: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM decoder reported.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate file holds no `CERTIFICATE` section.
    #[error("`{0}` holds no certificate")]
    NoCertificate(PathBuf),
    /// A key file holds no PKCS#8 `PRIVATE KEY` section.
    #[error("`{0}` holds no PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`)")]
    NoPrivateKey(PathBuf),
    /// A key file holds more than one private key.
    #[error("`{0}` holds more than one private key")]
    SeveralPrivateKeys(PathBuf),
    /// The private key is not one the crypto provider can use.
    #[error("cannot use the private key in `{path}`: {source}")]
    PrivateKey {
        /// The key file.
        path: PathBuf,
        /// Why the provider refused it.
        #[source]
        source: rustls::Error,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key in `{key}` does not match the certificate in `{cert}`")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Our own certificate has expired: no peer would accept it.
    #[error("the SVID in `{path}` expired at `{not_after}`")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// Its notAfter, RFC 3339.
        not_after: String,
    },
    /// Our own certificate is not valid yet (past the allowed clock skew): no peer would
    /// accept it.
    #[error("the SVID in `{path}` is not valid before `{not_before}`")]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Its notBefore, RFC 3339.
        not_before: String,
    },
    /// Our own certificate is not a valid X.509-SVID.
    #[error("`{path}` is not a valid X.509-SVID: {source}")]
    InvalidSvid {
        /// The certificate file.
        path: PathBuf,
        /// The broken rule.
        #[source]
        source: SvidError,
    },
    /// A bundle certificate cannot serve as a trust anchor.
    #[error(
        "`{path}` (bundle of `{trust_domain}`) holds a certificate that is not a usable CA: {source}"
    )]
    InvalidBundle {
        /// The bundle file.
        path: PathBuf,
        /// The trust domain the bundle is for.
        trust_domain: TrustDomain,
        /// Why webpki refused it.
        #[source]
        source: webpki::Error,
    },
    /// No trust bundle is configured at all.
    #[error("no trust bundle is configured")]
    NoBundles,
    /// A trust domain we must verify peers of has no bundle.
    #[error("trust domain `{0}` has no bundle")]
    MissingBundle(TrustDomain),
    /// The inbound side was given no trust domain to accept.
    #[error("no trust domain is allowed inbound")]
    NoAllowedTrustDomains,
    /// rustls refused the configuration.
    #[error("cannot build the tls config: {0}")]
    Config(#[source] rustls::Error),
}
