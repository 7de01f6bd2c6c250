//! Test support for the TLS module's unit tests: the shapes its tests use, on the one PKI
//! builder (`crate::test_util::pki`), and in-memory handshakes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hopgate_config::{SpiffeId, TrustDomain};
use rcgen::CertificateParams;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection, Side};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName};

use crate::test_util::pki::{Ca, Leaf};
use crate::tls::Identity;

/// A CA (root or intermediate) that issues test certificates.
pub(crate) struct TestCa(Ca);

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
        Self(Ca::new(td))
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
        Self(
            self.0
                .intermediate_builder()
                .uris(&[uri])
                .edit(edit)
                .build(),
        )
    }

    /// A valid SVID leaf for `id`.
    pub(crate) fn leaf(&self, id: &str) -> TestLeaf {
        self.leaf_with(id, |_| {})
    }

    /// A leaf for `id`, valid 2020 to 2090, after `edit` changed its parameters.
    pub(crate) fn leaf_with(
        &self,
        id: &str,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> TestLeaf {
        TestLeaf::from(self.0.leaf(id).edit(long_lived).edit(edit).build())
    }

    /// The root certificate as a bundle PEM.
    pub(crate) fn bundle_pem(&self) -> String {
        self.0.bundle_pem()
    }

    /// Writes the bundle into `dir` and returns the one-entry bundle map for `td`.
    pub(crate) fn write_bundle(&self, dir: &Path, td: &str) -> BTreeMap<TrustDomain, PathBuf> {
        let path = dir.join(format!("{td}.pem"));
        std::fs::write(&path, self.bundle_pem()).unwrap();
        BTreeMap::from([(TrustDomain::parse(td).unwrap(), path)])
    }
}

/// Valid from 2020 to 2090: a leaf that never expires during a test.
pub(crate) fn long_lived(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
}

// === impl TestLeaf ===

impl From<Leaf> for TestLeaf {
    fn from(leaf: Leaf) -> Self {
        Self {
            chain: leaf.chain_der,
            key: leaf.key_der,
            chain_pem: leaf.chain_pem,
            key_pem: leaf.key_pem,
        }
    }
}

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
