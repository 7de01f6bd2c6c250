//! The one PKI builder of hopgate's tests and benches, generated per test with rcgen (ECDSA
//! P-256 unless a leaf asks for another key).
//!
//! ```text
//! let ca = Ca::new("example.org");
//! let leaf = ca.leaf("spiffe://example.org/ns/a/sa/b").no_key_usage().build();
//! let via = ca.intermediate().leaf("spiffe://example.org/ns/a/sa/b").build();
//! let (cert, key) = leaf.write(dir.path());
//! ```
//!
//! Defaults follow the X.509-SVID profile: a CA has `cA=true`, a critical key usage with
//! `keyCertSign` + `cRLSign` and the URI SAN `spiffe://<td>`; a leaf has a subject, one URI SAN,
//! a critical key usage with `digitalSignature`, EKU `serverAuth` + `clientAuth`, and is valid
//! from an hour ago to an hour from now. Every knob breaks exactly one of these.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate authority: a root, or an intermediate below one.
pub struct Ca {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    /// This CA's certificate and those above it, up to but excluding the root (empty for a root).
    chain: Vec<Cert>,
    root: Cert,
}

/// A change to a certificate's parameters beyond the knobs.
type Edit<'a> = Box<dyn FnOnce(&mut CertificateParams) + 'a>;

/// Knobs for an intermediate CA; see [`Ca::intermediate_builder`].
pub struct IntermediateBuilder<'a> {
    parent: &'a Ca,
    uris: Vec<String>,
    is_ca: bool,
    key_usages: Vec<KeyUsagePurpose>,
    edits: Vec<Edit<'a>>,
}

/// Knobs for a leaf; see [`Ca::leaf`].
pub struct LeafBuilder<'a> {
    uris: Vec<String>,
    dns: Vec<String>,
    is_ca: bool,
    key_usages: Vec<KeyUsagePurpose>,
    key_usage: KeyUsageForm,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    signer: Signer<'a>,
    omit_intermediates: bool,
    duplicate_san: bool,
    trailing_data: bool,
    alg: &'static SignatureAlgorithm,
    edits: Vec<Edit<'a>>,
}

/// A built leaf: its chain (leaf first) and key, as PEM and DER.
pub struct Leaf {
    pub chain_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub chain_der: Vec<CertificateDer<'static>>,
    pub key_der: PrivatePkcs8KeyDer<'static>,
}

#[derive(Clone)]
struct Cert {
    der: CertificateDer<'static>,
    pem: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyUsageForm {
    Critical,
    NonCritical,
    Absent,
}

enum Signer<'a> {
    Ca(&'a Ca),
    SelfSigned,
}

// === impl Ca ===

impl Ca {
    /// A root CA for `trust_domain`. Two roots for the same domain have the same subject name
    /// and different keys (an impostor root).
    pub fn new(trust_domain: &str) -> Self {
        let params = ca_params(
            trust_domain,
            &[format!("spiffe://{trust_domain}")],
            true,
            ca_usages(),
        );
        let key = KeyPair::generate().unwrap();
        let cert = Cert::from(params.self_signed(&key).unwrap());
        Self {
            trust_domain: trust_domain.to_owned(),
            issuer: Issuer::new(params, key),
            chain: Vec::new(),
            root: cert,
        }
    }

    /// A well-formed intermediate CA below this one.
    pub fn intermediate(&self) -> Self {
        self.intermediate_builder().build()
    }

    /// An intermediate CA below this one, with knobs.
    pub fn intermediate_builder(&self) -> IntermediateBuilder<'_> {
        IntermediateBuilder {
            parent: self,
            uris: vec![format!("spiffe://{}", self.trust_domain)],
            is_ca: true,
            key_usages: ca_usages(),
            edits: Vec::new(),
        }
    }

    /// A leaf for `uri` (normally a SPIFFE ID) issued by this CA, with knobs.
    pub fn leaf(&self, uri: &str) -> LeafBuilder<'_> {
        let now = OffsetDateTime::now_utc();
        LeafBuilder {
            uris: vec![uri.to_owned()],
            dns: Vec::new(),
            is_ca: false,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            key_usage: KeyUsageForm::Critical,
            ekus: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            not_before: now - Duration::hours(1),
            not_after: now + Duration::hours(1),
            signer: Signer::Ca(self),
            omit_intermediates: false,
            duplicate_san: false,
            trailing_data: false,
            alg: &rcgen::PKCS_ECDSA_P256_SHA256,
            edits: Vec::new(),
        }
    }

    /// The trust domain this CA was made for.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The root certificate as PEM: the trust bundle of this CA's domain.
    pub fn bundle_pem(&self) -> String {
        self.root.pem.clone()
    }

    /// The root certificate as DER.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.der.clone()
    }

    /// Trust bundles holding the roots of `cas`, one trust domain each, through the real
    /// loader.
    pub fn bundles(cas: &[&Self]) -> crate::tls::TrustBundles {
        let dir = tempfile::tempdir().unwrap();
        let files: std::collections::BTreeMap<_, _> = cas
            .iter()
            .map(|ca| {
                let td = hopgate_config::TrustDomain::parse(&ca.trust_domain).unwrap();
                (td, ca.write_bundle(dir.path()))
            })
            .collect();
        crate::tls::TrustBundles::load(&files).unwrap()
    }

    /// Writes the bundle to `dir/<trust domain>.bundle.pem` and returns its path.
    pub fn write_bundle(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}.bundle.pem", self.trust_domain));
        std::fs::write(&path, self.bundle_pem()).unwrap();
        path
    }
}

// === impl IntermediateBuilder ===

impl<'a> IntermediateBuilder<'a> {
    /// Replaces the URI SANs (default: the trust domain's root ID).
    pub fn uris(mut self, uris: &[&str]) -> Self {
        self.uris = uris.iter().map(|u| (*u).to_owned()).collect();
        self
    }

    /// Issues it without `cA=true` (an end entity posing as an issuer).
    pub fn not_ca(mut self) -> Self {
        self.is_ca = false;
        self
    }

    /// Replaces the key usages (default: `keyCertSign`, `cRLSign`).
    pub fn key_usages(mut self, usages: &[KeyUsagePurpose]) -> Self {
        self.key_usages = usages.to_vec();
        self
    }

    /// Changes the parameters beyond the knobs, after them.
    pub fn edit(mut self, edit: impl FnOnce(&mut CertificateParams) + 'a) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Issues the intermediate.
    pub fn build(self) -> Ca {
        let parent = self.parent;
        let name = format!("{} intermediate", parent.trust_domain);
        let mut params = ca_params(&name, &self.uris, self.is_ca, self.key_usages);
        for edit in self.edits {
            edit(&mut params);
        }
        let key = KeyPair::generate().unwrap();
        let cert = Cert::from(params.signed_by(&key, &parent.issuer).unwrap());
        let mut chain = vec![cert];
        chain.extend(parent.chain.iter().cloned());
        Ca {
            trust_domain: parent.trust_domain.clone(),
            issuer: Issuer::new(params, key),
            chain,
            root: parent.root.clone(),
        }
    }
}

// === impl LeafBuilder ===

impl<'a> LeafBuilder<'a> {
    /// Adds another URI SAN (of any scheme).
    pub fn extra_uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.to_owned());
        self
    }

    /// Leaves out every URI SAN (add a DNS name so the SAN extension is not empty).
    pub fn no_uri(mut self) -> Self {
        self.uris.clear();
        self
    }

    /// Adds a DNS name SAN.
    pub fn dns(mut self, name: &str) -> Self {
        self.dns.push(name.to_owned());
        self
    }

    /// Issues the leaf with `cA=true`.
    pub fn marked_ca(mut self) -> Self {
        self.is_ca = true;
        self
    }

    /// Replaces the key usages (default: `digitalSignature`), still critical.
    pub fn key_usages(mut self, usages: &[KeyUsagePurpose]) -> Self {
        self.key_usages = usages.to_vec();
        self
    }

    /// Leaves out the key usage extension.
    pub fn no_key_usage(mut self) -> Self {
        self.key_usage = KeyUsageForm::Absent;
        self
    }

    /// Marks the key usage extension non-critical.
    pub fn non_critical_key_usage(mut self) -> Self {
        self.key_usage = KeyUsageForm::NonCritical;
        self
    }

    /// Replaces the extended key usages (default: `serverAuth`, `clientAuth`; empty = none).
    pub fn eku(mut self, ekus: &[ExtendedKeyUsagePurpose]) -> Self {
        self.ekus = ekus.to_vec();
        self
    }

    /// Sets notBefore.
    pub fn not_before(mut self, at: OffsetDateTime) -> Self {
        self.not_before = at;
        self
    }

    /// Sets notAfter.
    pub fn not_after(mut self, at: OffsetDateTime) -> Self {
        self.not_after = at;
        self
    }

    /// Valid from two hours ago until one hour ago.
    pub fn expired(self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before(now - Duration::hours(2))
            .not_after(now - Duration::hours(1))
    }

    /// Valid from an hour from now.
    pub fn not_yet_valid(self) -> Self {
        let now = OffsetDateTime::now_utc();
        self.not_before(now + Duration::hours(1))
            .not_after(now + Duration::hours(2))
    }

    /// Issues it from `ca` instead (its intermediates go into the chain).
    pub fn signed_by(mut self, ca: &'a Ca) -> Self {
        self.signer = Signer::Ca(ca);
        self
    }

    /// Signs the leaf with its own key; the chain is the leaf alone.
    pub fn self_signed(mut self) -> Self {
        self.signer = Signer::SelfSigned;
        self
    }

    /// Presents the leaf without its intermediates.
    pub fn omit_intermediates(mut self) -> Self {
        self.omit_intermediates = true;
        self
    }

    /// Adds a second subject alternative name extension (a repeated extension).
    pub fn duplicate_san_extension(mut self) -> Self {
        self.duplicate_san = true;
        self
    }

    /// Appends a byte after the certificate's DER.
    pub fn trailing_data(mut self) -> Self {
        self.trailing_data = true;
        self
    }

    /// A key of `alg` (default ECDSA P-256).
    pub fn key_alg(mut self, alg: &'static SignatureAlgorithm) -> Self {
        self.alg = alg;
        self
    }

    /// Changes the parameters beyond the knobs, after them.
    pub fn edit(mut self, edit: impl FnOnce(&mut CertificateParams) + 'a) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Issues the leaf.
    pub fn build(mut self) -> Leaf {
        let mut params = self.params();
        for edit in std::mem::take(&mut self.edits) {
            edit(&mut params);
        }
        let key = KeyPair::generate_for(self.alg).unwrap();
        let (cert, intermediates) = match self.signer {
            Signer::Ca(ca) => (
                params.signed_by(&key, &ca.issuer).unwrap(),
                ca.chain.clone(),
            ),
            Signer::SelfSigned => (params.self_signed(&key).unwrap(), Vec::new()),
        };
        let mut leaf = Cert::from(cert);
        if self.trailing_data {
            let mut der = leaf.der.to_vec();
            der.push(0);
            leaf = Cert::from_der(der);
        }
        let mut chain = vec![leaf];
        if !self.omit_intermediates {
            chain.extend(intermediates);
        }
        Leaf {
            chain_pem: chain.iter().map(|c| c.pem.as_str()).collect(),
            key_pem: key.serialize_pem(),
            cert_der: chain[0].der.clone(),
            chain_der: chain.iter().map(|c| c.der.clone()).collect(),
            key_der: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }

    fn params(&self) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name("workload");
        params.subject_alt_names = self
            .uris
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .chain(
                self.dns
                    .iter()
                    .map(|d| SanType::DnsName(d.as_str().try_into().unwrap())),
            )
            .collect();
        // A leaf says `cA: false` outright, as SPIRE's do (and the `spiffe` crate insists on).
        params.is_ca = if self.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        match self.key_usage {
            KeyUsageForm::Critical => params.key_usages = self.key_usages.clone(),
            KeyUsageForm::NonCritical => {
                params
                    .custom_extensions
                    .push(CustomExtension::from_oid_content(
                        &[2, 5, 29, 15],
                        key_usage_der(&self.key_usages),
                    ))
            }
            KeyUsageForm::Absent => {}
        }
        params.extended_key_usages = self.ekus.clone();
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        if self.duplicate_san {
            let first = self
                .uris
                .first()
                .map_or("spiffe://example.org/dup", String::as_str);
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    &[2, 5, 29, 17],
                    san_der(first),
                ));
        }
        params
    }
}

// === impl Leaf ===

impl Leaf {
    /// The leaf certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The leaf loaded as an SVID, through the real loader.
    pub fn svid(&self) -> crate::tls::Svid {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self.write(dir.path());
        crate::tls::Svid::load(&cert, &key).unwrap()
    }

    /// Writes `svid.pem` (chain) and `svid_key.pem` (PKCS#8) into `dir`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("svid.pem"), dir.join("svid_key.pem"));
        std::fs::write(&cert, &self.chain_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

// === impl Cert ===

impl From<rcgen::Certificate> for Cert {
    fn from(cert: rcgen::Certificate) -> Self {
        Self {
            der: cert.der().clone(),
            pem: cert.pem(),
        }
    }
}

impl Cert {
    fn from_der(der: Vec<u8>) -> Self {
        Self {
            pem: pem("CERTIFICATE", &der),
            der: CertificateDer::from(der),
        }
    }
}

fn ca_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
}

fn ca_params(
    name: &str,
    uris: &[String],
    is_ca: bool,
    usages: Vec<KeyUsagePurpose>,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
        .collect();
    params.is_ca = if is_ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_usages = usages;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(1);
    params
}

fn distinguished_name(cn: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::OrganizationName, "hopgate tests");
    dn.push(DnType::CommonName, cn);
    dn
}

/// The DER of a key usage BIT STRING (RFC 5280 §4.2.1.3), for a hand-made extension.
fn key_usage_der(usages: &[KeyUsagePurpose]) -> Vec<u8> {
    let bits = usages.iter().fold(0u16, |acc, u| {
        let index = match u {
            KeyUsagePurpose::DigitalSignature => 0,
            KeyUsagePurpose::ContentCommitment => 1,
            KeyUsagePurpose::KeyEncipherment => 2,
            KeyUsagePurpose::DataEncipherment => 3,
            KeyUsagePurpose::KeyAgreement => 4,
            KeyUsagePurpose::KeyCertSign => 5,
            KeyUsagePurpose::CrlSign => 6,
            KeyUsagePurpose::EncipherOnly => 7,
            KeyUsagePurpose::DecipherOnly => 8,
        };
        acc | (0x8000 >> index)
    });
    let [hi, lo] = bits.to_be_bytes();
    if lo == 0 {
        vec![
            0x03,
            0x02,
            u8::try_from(hi.trailing_zeros()).unwrap() % 8,
            hi,
        ]
    } else {
        vec![
            0x03,
            0x03,
            u8::try_from(lo.trailing_zeros()).unwrap(),
            hi,
            lo,
        ]
    }
}

/// The DER of a SAN extension value holding one URI.
fn san_der(uri: &str) -> Vec<u8> {
    let mut name = vec![0x86, u8::try_from(uri.len()).unwrap()];
    name.extend_from_slice(uri.as_bytes());
    let mut seq = vec![0x30, u8::try_from(name.len()).unwrap()];
    seq.extend(name);
    seq
}

fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
