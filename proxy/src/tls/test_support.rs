//! Test support for the TLS module's unit tests: a small rcgen PKI and in-memory handshakes
//! (the e2e suite has the full PKI builder in `tests/e2e/support/pki.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hopgate_config::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection, Side};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};

use crate::tls::Identity;

/// A CA (root or intermediate) that issues test certificates.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// This CA's certificate followed by its parents up to (excluding) the root, DER and PEM.
    chain: Vec<(CertificateDer<'static>, String)>,
    root_pem: String,
}

/// A leaf and its key.
pub(crate) struct TestLeaf {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivatePkcs8KeyDer<'static>,
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

// === impl TestCa ===

impl TestCa {
    /// A root CA for `td`, carrying the trust domain's SPIFFE ID.
    pub(crate) fn new(td: &str) -> Self {
        let params = ca_params(td, &format!("spiffe://{td}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            chain: Vec::new(),
            root_pem: cert.pem(),
        }
    }

    /// An intermediate CA under this one carrying `uri` as its URI SAN.
    pub(crate) fn intermediate(&self, uri: &str) -> Self {
        self.intermediate_with(uri, |_| {})
    }

    /// An intermediate CA for `uri` after `edit` changed its parameters.
    pub(crate) fn intermediate_with(
        &self,
        uri: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Self {
        let mut params = ca_params("intermediate", uri);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain = vec![(cert.der().clone(), cert.pem())];
        chain.extend(self.chain.iter().cloned());
        Self {
            issuer: Issuer::new(params, key),
            chain,
            root_pem: self.root_pem.clone(),
        }
    }

    /// A valid SVID leaf for `id`.
    pub(crate) fn leaf(&self, id: &str) -> TestLeaf {
        self.leaf_with(id, |_| {})
    }

    /// A leaf for `id` after `edit` changed its parameters.
    pub(crate) fn leaf_with(
        &self,
        id: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> TestLeaf {
        let params = leaf_params(id, edit);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let mut chain = vec![(cert.der().clone(), cert.pem())];
        chain.extend(self.chain.iter().cloned());
        TestLeaf {
            key_pem: key.serialize_pem(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            chain_pem: chain.iter().map(|(_, pem)| pem.as_str()).collect(),
            chain: chain.into_iter().map(|(der, _)| der).collect(),
        }
    }

    /// The root certificate as a bundle PEM.
    pub(crate) fn bundle_pem(&self) -> &str {
        &self.root_pem
    }

    /// Writes the bundle to `dir/<td>.pem` and returns the one-entry bundle map.
    pub(crate) fn write_bundle(&self, dir: &Path, td: &str) -> BTreeMap<TrustDomain, PathBuf> {
        let path = dir.join(format!("{td}.pem"));
        std::fs::write(&path, self.bundle_pem()).unwrap();
        BTreeMap::from([(TrustDomain::parse(td).unwrap(), path)])
    }
}

// === impl TestLeaf ===

impl TestLeaf {
    /// The leaf certificate.
    pub(crate) fn cert(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// Writes `svid.pem` and `svid_key.pem` into `dir`.
    pub(crate) fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("svid.pem"), dir.join("svid_key.pem"));
        std::fs::write(&cert, &self.chain_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A signing CA's parameters: `cA=true`, keyCertSign + cRLSign, the SPIFFE ID `uri`.
pub(crate) fn ca_params(cn: &str, uri: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A valid SVID leaf's parameters for `id`, after `edit`.
pub(crate) fn leaf_params(
    id: &str,
    edit: impl FnOnce(&mut CertificateParams),
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    edit(&mut params);
    params
}

/// A loaded [`Identity`] for `id` under a fresh `example.org`-style CA of `id`'s trust domain;
/// the tempdir holding its files must outlive the test.
pub(crate) fn identity(id: &str) -> (Identity, tempfile::TempDir) {
    identity_under(
        &TestCa::new(SpiffeId::parse(id).unwrap().trust_domain_name()),
        id,
    )
}

/// A loaded [`Identity`] for `id` issued by `ca`, trusting `ca`'s trust domain.
pub(crate) fn identity_under(ca: &TestCa, id: &str) -> (Identity, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.leaf(id).write(dir.path());
    let td = SpiffeId::parse(id).unwrap().trust_domain();
    let bundles = ca.write_bundle(dir.path(), td.as_str());
    (Identity::load(&cert, &key, &bundles).unwrap(), dir)
}

/// Runs a handshake in memory; on failure, which side failed and why.
pub(crate) fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), (Side, rustls::Error)> {
    let name = ServerName::try_from("hopgate.test").unwrap();
    let mut client = Connection::Client(ClientConnection::new(client, name).unwrap());
    let mut server = Connection::Server(ServerConnection::new(server).unwrap());
    for _ in 0..16 {
        transfer(&mut client, &mut server).map_err(|e| (Side::Server, e))?;
        transfer(&mut server, &mut client).map_err(|e| (Side::Client, e))?;
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    match (client, server) {
        (Connection::Client(c), Connection::Server(s)) => Ok((c, s)),
        _ => panic!("the connections swapped sides"),
    }
}

/// Moves every pending TLS record from `from` to `to` and lets `to` process them.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}
