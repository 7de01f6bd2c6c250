//! Our own X.509-SVID: the certificate chain and key hopgate presents on both sides.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use hopgate_config::SpiffeId;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls::bundle::read_certificates;
use crate::tls::svid_profile::{self, Usage};
use crate::tls::{TlsError, provider};

/// How far in the future our own SVID's notBefore may be.
const NOT_BEFORE_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// A validated SVID: chain (leaf first), PKCS#8 key, SPIFFE ID and expiry.
///
/// `Debug` never prints the key.
pub struct Svid {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    id: SpiffeId,
    not_after: SystemTime,
    certified_key: Arc<CertifiedKey>,
}

// === impl Svid ===

impl Svid {
    /// Reads a PEM chain (leaf first) and a PKCS#8 PEM key, and checks that they form an SVID
    /// hopgate can present: the leaf passes the X.509-SVID profile (exactly one URI SAN, a
    /// canonical SPIFFE ID with a non-root path, not a CA, critical key usage with
    /// `digitalSignature` only among the signing bits, an EKU, if any, allowing both `clientAuth`
    /// and `serverAuth`), and the key belongs to the leaf.
    ///
    /// # Errors
    /// [`TlsError::Read`], [`TlsError::Pem`], [`TlsError::NoCertificate`],
    /// [`TlsError::NoPrivateKey`], [`TlsError::SeveralPrivateKeys`], [`TlsError::PrivateKey`],
    /// [`TlsError::InvalidSvid`], [`TlsError::Expired`] and [`TlsError::KeyMismatch`], each
    /// naming the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certificates(cert)?;
        // The key file is read only once the chain is known good, as before.
        Self::from_der(chain, cert, || read_pkcs8(key), key)
    }

    /// Checks a chain (leaf first) and the PKCS#8 key `key` yields as [`Svid::load`] does;
    /// errors name `cert_origin` and `key_origin` (a file, or where in a Workload API response
    /// the material came from).
    ///
    /// # Errors
    /// As [`Svid::load`], past reading the files.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        cert_origin: &Path,
        key: impl FnOnce() -> Result<PrivatePkcs8KeyDer<'static>, TlsError>,
        key_origin: &Path,
    ) -> Result<Self, TlsError> {
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate(cert_origin.to_owned()))?;
        let facts = svid_profile::check_leaf(leaf, Usage::Both).map_err(|source| {
            TlsError::InvalidSvid {
                path: cert_origin.to_owned(),
                source,
            }
        })?;
        // An expired SVID would fail every handshake; a reload must keep the last good one
        // instead (a restored backup, a stalled writer).
        if facts.not_after <= SystemTime::now() {
            return Err(TlsError::Expired {
                path: cert_origin.to_owned(),
                not_after: crate::time::rfc3339(facts.not_after),
            });
        }
        // Issuers backdate notBefore a little, but clocks drift: a minute of skew is allowed.
        if facts.not_before > SystemTime::now() + NOT_BEFORE_SKEW {
            return Err(TlsError::NotYetValid {
                path: cert_origin.to_owned(),
                not_before: crate::time::rfc3339(facts.not_before),
            });
        }
        let key_der = key()?;
        let signing_key = provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key_der.clone_key()))
            .map_err(|source| TlsError::PrivateKey {
                path: key_origin.to_owned(),
                source,
            })?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        // An unknown consistency counts as a mismatch: every aws-lc-rs key exposes its SPKI.
        certified_key
            .keys_match()
            .map_err(|_| TlsError::KeyMismatch {
                cert: cert_origin.to_owned(),
                key: key_origin.to_owned(),
            })?;
        Ok(Self {
            chain,
            key: key_der,
            id: facts.id,
            not_after: facts.not_after,
            certified_key: Arc::new(certified_key),
        })
    }

    /// The SVID's SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The leaf's notAfter.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The chain, leaf first, as loaded.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// The private key (PKCS#8 DER), for signing hop tokens. Handle with care: never log it.
    pub fn private_key(&self) -> &PrivatePkcs8KeyDer<'static> {
        &self.key
    }

    /// The chain and signing key in the form rustls presents, built once at load.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified_key)
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The one PKCS#8 key in a PEM file.
fn read_pkcs8(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut keys = PrivatePkcs8KeyDer::pem_slice_iter(&pem);
    let key = match keys.next() {
        Some(Ok(key)) => key,
        Some(Err(source)) => {
            return Err(TlsError::Pem {
                path: path.to_owned(),
                source,
            });
        }
        None => return Err(TlsError::NoPrivateKey(path.to_owned())),
    };
    if keys.next().is_some() {
        return Err(TlsError::SeveralPrivateKeys(path.to_owned()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use rcgen::KeyPair;

    use super::*;
    use crate::tls::test_support::TestCa;

    const ID: &str = "spiffe://example.org/ns/a/sa/b";

    #[test]
    fn a_valid_svid_loads_with_its_id_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = TestCa::new("example.org").leaf(ID).write(dir.path());
        let svid = Svid::load(&cert, &key).unwrap();
        assert_eq!(svid.id().as_str(), ID);
        assert!(svid.not_after() > SystemTime::now());
        assert_eq!(svid.chain().len(), 1);
        assert_eq!(svid.certified_key().cert, svid.chain());
    }

    #[test]
    fn debug_redacts_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = TestCa::new("example.org").leaf(ID);
        let (cert, key) = leaf.write(dir.path());
        let debug = format!("{:?}", Svid::load(&cert, &key).unwrap());
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(
            !debug.contains(&format!("{:?}", leaf.key.secret_pkcs8_der())),
            "{debug}"
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = TestCa::new("example.org").leaf(ID).write(dir.path());
        std::fs::write(&key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = Svid::load(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    }

    #[test]
    fn an_svid_with_a_root_id_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = TestCa::new("example.org").leaf("spiffe://example.org");
        let (cert, key) = leaf.write(dir.path());
        let err = Svid::load(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::InvalidSvid { .. }), "{err:?}");
        assert!(err.to_string().contains("svid.pem"), "{err}");
    }

    #[test]
    fn an_svid_with_two_uri_sans_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = TestCa::new("example.org").leaf_with(ID, |p| {
            p.subject_alt_names.push(rcgen::SanType::URI(
                "spiffe://example.org/x".try_into().unwrap(),
            ));
        });
        let (cert, key) = leaf.write(dir.path());
        let err = Svid::load(&cert, &key).unwrap_err();
        assert!(err.to_string().contains("`2` URI SANs"), "{err}");
    }

    #[test]
    fn a_key_file_without_a_pkcs8_key_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = TestCa::new("example.org").leaf(ID).write(dir.path());
        std::fs::write(&key, "").unwrap();
        let err = Svid::load(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey(_)), "{err:?}");
        assert!(err.to_string().contains("svid_key.pem"), "{err}");
    }

    #[test]
    fn a_key_file_with_two_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = TestCa::new("example.org").leaf(ID);
        let (cert, key) = leaf.write(dir.path());
        std::fs::write(&key, format!("{}{}", leaf.key_pem, leaf.key_pem)).unwrap();
        let err = Svid::load(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::SeveralPrivateKeys(_)), "{err:?}");
    }

    #[test]
    fn an_svid_not_valid_for_another_hour_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = TestCa::new("example.org").leaf_with(ID, |p| {
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now + time::Duration::hours(1);
            p.not_after = now + time::Duration::hours(2);
        });
        let (cert, key) = leaf.write(dir.path());
        let err = Svid::load(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::NotYetValid { .. }), "{err:?}");
        assert!(err.to_string().contains("svid.pem"), "{err}");
    }

    #[test]
    fn an_svid_issued_seconds_ahead_of_this_clock_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = TestCa::new("example.org").leaf_with(ID, |p| {
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now + time::Duration::seconds(20);
            p.not_after = now + time::Duration::hours(1);
        });
        let (cert, key) = leaf.write(dir.path());
        Svid::load(&cert, &key).unwrap();
    }
}
