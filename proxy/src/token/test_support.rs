//! Test support for the token module: an rcgen PKI issuing SVIDs of every key type, verifiers
//! for it, and a forger that signs arbitrary headers and claims with an SVID's key.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hopgate_config::{SpiffeId, TrustDomain};
use rcgen::{CertificateParams, SignatureAlgorithm};
use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};

pub(crate) use crate::test_util::pki::Ca;
use crate::tls::test_support::long_lived;
use crate::tls::{SpiffeClientVerifier, Svid, TrustBundles};
use crate::token::jws::Signer;
use crate::token::{Limits, RejectReason, TokenVerifier, VerifiedClaims, sha256, unix_secs};

pub(crate) const AGENT: &str = "spiffe://example.org/ns/agents/sa/support-agent";
pub(crate) const INFERENCE: &str = "spiffe://example.org/ns/ml/sa/inference";
pub(crate) const CRM: &str = "spiffe://example.org/ns/tools/sa/crm";

/// A CA (root, or intermediate under one) of one trust domain, on the one PKI builder.
pub(crate) struct TestCa(Ca);

// === impl TestCa ===

impl TestCa {
    /// A P-256 root for `td` carrying the trust domain's SPIFFE ID.
    pub(crate) fn new(td: &str) -> Self {
        Self(Ca::new(td))
    }

    /// An intermediate CA under this one.
    pub(crate) fn intermediate(&self) -> Self {
        Self(self.0.intermediate())
    }

    /// The trust domain.
    pub(crate) fn td(&self) -> TrustDomain {
        TrustDomain::parse(self.0.trust_domain()).unwrap()
    }

    /// A P-256 SVID for `id`.
    pub(crate) fn svid(&self, id: &str) -> Svid {
        self.svid_with(id, &rcgen::PKCS_ECDSA_P256_SHA256, |_| {})
    }

    /// An SVID for `id` with a key of `alg`, after `edit` changed the leaf's parameters.
    pub(crate) fn svid_with(
        &self,
        id: &str,
        alg: &'static SignatureAlgorithm,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Svid {
        let (chain, key) = self.leaf(id, alg, edit);
        load_svid(&chain, &key)
    }

    /// A leaf chain (leaf first) and its PKCS#8 key PEM, valid 2020 to 2090, not checked.
    pub(crate) fn leaf(
        &self,
        id: &str,
        alg: &'static SignatureAlgorithm,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (Vec<CertificateDer<'static>>, String) {
        let leaf = self
            .0
            .leaf(id)
            .key_alg(alg)
            .edit(long_lived)
            .edit(edit)
            .build();
        (leaf.chain_der, leaf.key_pem)
    }

    /// Trust bundles holding the roots of `cas`, one trust domain each.
    pub(crate) fn bundles(cas: &[&Self]) -> TrustBundles {
        Ca::bundles(&cas.iter().map(|ca| &ca.0).collect::<Vec<_>>())
    }
}

/// Loads an SVID through the real loader (files in a temporary folder).
pub(crate) fn load_svid(chain: &[CertificateDer<'static>], key_pem: &str) -> Svid {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("svid.pem"), dir.path().join("svid_key.pem"));
    let pem: String = chain.iter().map(|der| pem("CERTIFICATE", der)).collect();
    std::fs::write(&cert, pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    Svid::load(&cert, &key).unwrap()
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// ttl 60 s, leeway 5 s, depth 8: the defaults.
pub(crate) fn limits() -> Limits {
    Limits {
        ttl: Duration::from_secs(60),
        leeway: Duration::from_secs(5),
        max_depth: 8,
    }
}

/// A verifier for tokens to `own`, trusting the trust domains of `cas`.
pub(crate) fn verifier(own: &str, cas: &[&TestCa]) -> TokenVerifier {
    verifier_with(own, cas, limits())
}

/// [`verifier`] keeping `limits` instead of the defaults.
pub(crate) fn verifier_with(own: &str, cas: &[&TestCa], limits: Limits) -> TokenVerifier {
    let bundles = TestCa::bundles(cas);
    let tds: Vec<TrustDomain> = cas.iter().map(|ca| ca.td()).collect();
    let chains = SpiffeClientVerifier::new(&bundles, &tds).unwrap();
    TokenVerifier::new(id(own), Arc::new(chains), limits)
}

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// Now, to the second.
pub(crate) fn now() -> SystemTime {
    crate::token::from_unix_secs(secs(SystemTime::now()))
}

pub(crate) fn secs(t: SystemTime) -> u64 {
    unix_secs(t).unwrap()
}

/// SHA-256 of `svid`'s leaf.
pub(crate) fn leaf_hash(svid: &Svid) -> [u8; 32] {
    sha256(svid.leaf().unwrap())
}

/// Verifies `token` as if `presenter` had presented it over mTLS.
pub(crate) fn present(
    verifier: &TokenVerifier,
    token: &str,
    presenter: &Svid,
    now: SystemTime,
) -> Result<VerifiedClaims, RejectReason> {
    verifier.verify_bound(token, presenter.id(), &leaf_hash(presenter), now)
}

/// The header a minter with `svid` writes.
pub(crate) fn header_for(svid: &Svid) -> Value {
    let alg = Signer::from_svid(svid).unwrap().alg();
    let x5c: Vec<String> = svid.chain().iter().map(|c| STANDARD.encode(c)).collect();
    json!({ "alg": alg.as_str(), "typ": "hop+jwt", "x5c": x5c })
}

/// A valid claim set for a token `svid` mints for `aud` at `now`, acting for itself.
pub(crate) fn claims_for(svid: &Svid, aud: &str, now: SystemTime) -> Value {
    let now = secs(now);
    json!({
        "iss": svid.id().as_str(), "aud": aud, "sub": svid.id().as_str(),
        "iat": now, "nbf": now, "exp": now + 60, "jti": "AAAAAAAAAAAAAAAAAAAAAA",
        "txn": "BBBBBBBBBBBBBBBBBBBBBB", "scope": "read",
        "cnf": { "x5t#S256": URL_SAFE_NO_PAD.encode(leaf_hash(svid)) },
    })
}

/// `header` and `claims` serialised and signed with `svid`'s key.
pub(crate) fn forge(svid: &Svid, header: &Value, claims: &Value) -> String {
    forge_raw(
        svid,
        &serde_json::to_vec(header).unwrap(),
        &serde_json::to_vec(claims).unwrap(),
    )
}

/// Raw header and payload bytes, signed with `svid`'s key.
pub(crate) fn forge_raw(svid: &Svid, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = Signer::from_svid(svid)
        .unwrap()
        .sign(input.as_bytes())
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// `token` with its signature replaced by `sig`.
pub(crate) fn with_signature(token: &str, sig: &[u8]) -> String {
    let input = token.rsplit_once('.').unwrap().0;
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// The signature bytes of `token`.
pub(crate) fn signature_of(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(token.rsplit_once('.').unwrap().1)
        .unwrap()
}

/// `header` and `claims` signed ES256 with the P-256 PKCS#8 key in `key_pem`, for leaves that
/// [`Svid::load`] itself would refuse.
pub(crate) fn forge_with_key(key_pem: &str, header: &Value, claims: &Value) -> String {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject;

    let der = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der()).unwrap();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    );
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A header whose `x5c` is `chain`.
pub(crate) fn header_with_chain(chain: &[CertificateDer<'_>]) -> Value {
    let x5c: Vec<String> = chain.iter().map(|c| STANDARD.encode(c)).collect();
    json!({ "alg": "ES256", "typ": "hop+jwt", "x5c": x5c })
}
