//! Trust bundles: per trust domain, the CA certificates that domain's SVIDs must chain to.
//!
//! Bundles are kept apart by trust domain so a verifier can pick exactly one of them for a peer
//! (SPIFFE Trust Domain and Bundle §3): a federated domain's roots never vouch for another's SVIDs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hopgate_config::TrustDomain;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::tls::TlsError;

/// The CA certificates of every trust domain hopgate knows, loaded from PEM files.
#[derive(Clone)]
pub struct TrustBundles {
    domains: BTreeMap<TrustDomain, Bundle>,
}

#[derive(Clone)]
struct Bundle {
    certs: Arc<[CertificateDer<'static>]>,
    anchors: Arc<[TrustAnchor<'static>]>,
}

// === impl TrustBundles ===

impl TrustBundles {
    /// Reads one PEM bundle per trust domain. A file may hold several CA certificates.
    ///
    /// # Errors
    /// [`TlsError::NoBundles`] for an empty map; for a file that cannot be read, is not PEM,
    /// holds no certificate or holds one webpki cannot use as a trust anchor, the matching
    /// [`TlsError`] naming that file.
    pub fn load(files: &BTreeMap<TrustDomain, PathBuf>) -> Result<Self, TlsError> {
        if files.is_empty() {
            return Err(TlsError::NoBundles);
        }
        let mut domains = BTreeMap::new();
        for (td, path) in files {
            domains.insert(td.clone(), Bundle::load(td, path)?);
        }
        Ok(Self { domains })
    }

    /// Bundles already read: per trust domain, its CA certificates (DER) and where they came
    /// from, for errors (a Workload API response's `bundle` or `federated_bundles`).
    ///
    /// # Errors
    /// [`TlsError::NoBundles`] for none; [`TlsError::NoCertificate`] for a domain without a
    /// certificate; [`TlsError::InvalidBundle`] for one webpki cannot use as a trust anchor.
    pub fn from_der(
        bundles: impl IntoIterator<Item = (TrustDomain, Vec<CertificateDer<'static>>, PathBuf)>,
    ) -> Result<Self, TlsError> {
        let mut domains = BTreeMap::new();
        for (td, certs, origin) in bundles {
            if certs.is_empty() {
                return Err(TlsError::NoCertificate(origin));
            }
            let bundle = Bundle::from_certs(&td, certs, &origin)?;
            domains.insert(td, bundle);
        }
        if domains.is_empty() {
            return Err(TlsError::NoBundles);
        }
        Ok(Self { domains })
    }

    /// The trust domains that have a bundle, in order.
    pub fn trust_domains(&self) -> Vec<&TrustDomain> {
        self.domains.keys().collect()
    }

    /// The CA certificates of `td`, as loaded.
    pub fn certificates(&self, td: &TrustDomain) -> Option<&[CertificateDer<'static>]> {
        self.domains.get(td).map(|b| &*b.certs)
    }

    /// The trust anchors of `td`, for path validation against that domain only.
    pub fn anchors(&self, td: &TrustDomain) -> Option<&[TrustAnchor<'static>]> {
        self.domains.get(td).map(|b| &*b.anchors)
    }

    /// The anchors of `td`, shared, for a verifier to hold.
    pub(crate) fn shared_anchors(&self, td: &TrustDomain) -> Option<Arc<[TrustAnchor<'static>]>> {
        self.domains.get(td).map(|b| Arc::clone(&b.anchors))
    }
}

impl fmt::Debug for TrustBundles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.domains
                    .iter()
                    .map(|(td, b)| (td.as_str(), b.certs.len())),
            )
            .finish()
    }
}

// === impl Bundle ===

impl Bundle {
    fn load(td: &TrustDomain, path: &Path) -> Result<Self, TlsError> {
        Self::from_certs(td, read_certificates(path)?, path)
    }

    fn from_certs(
        td: &TrustDomain,
        certs: Vec<CertificateDer<'static>>,
        path: &Path,
    ) -> Result<Self, TlsError> {
        let anchors = certs
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|anchor| anchor.to_owned())
                    .map_err(|source| TlsError::InvalidBundle {
                        path: path.to_owned(),
                        trust_domain: td.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            certs: certs.into(),
            anchors: anchors.into(),
        })
    }
}

/// Every `CERTIFICATE` section of a PEM file, in order; at least one.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::TestCa;

    #[test]
    fn a_bundle_file_may_hold_several_roots() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TestCa::new("example.org"), TestCa::new("example.org"));
        let path = dir.path().join("bundle.pem");
        std::fs::write(&path, format!("{}{}", a.bundle_pem(), b.bundle_pem())).unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let bundles = TrustBundles::load(&BTreeMap::from([(td.clone(), path)])).unwrap();
        assert_eq!(bundles.anchors(&td).map(<[_]>::len), Some(2));
        assert_eq!(bundles.certificates(&td).map(<[_]>::len), Some(2));
        assert_eq!(bundles.trust_domains(), [&td]);
    }

    #[test]
    fn an_empty_bundle_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "").unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let err = TrustBundles::load(&BTreeMap::from([(td, path)])).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err:?}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
    }

    #[test]
    fn a_garbled_bundle_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbled.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let err = TrustBundles::load(&BTreeMap::from([(td, path)])).unwrap_err();
        assert!(err.to_string().contains("garbled.pem"), "{err}");
    }

    #[test]
    fn a_certificate_that_is_not_der_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notder.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let td = TrustDomain::parse("example.org").unwrap();
        let err = TrustBundles::load(&BTreeMap::from([(td, path)])).unwrap_err();
        assert!(matches!(err, TlsError::InvalidBundle { .. }), "{err:?}");
        assert!(err.to_string().contains("notder.pem"), "{err}");
    }

    #[test]
    fn a_missing_bundle_file_is_an_error_naming_the_file() {
        let td = TrustDomain::parse("example.org").unwrap();
        let path = PathBuf::from("/nonexistent/hopgate/bundle.pem");
        let err = TrustBundles::load(&BTreeMap::from([(td, path)])).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/hopgate/bundle.pem"),
            "{err}"
        );
    }

    #[test]
    fn no_bundle_at_all_is_an_error() {
        assert!(matches!(
            TrustBundles::load(&BTreeMap::new()),
            Err(TlsError::NoBundles)
        ));
    }
}
