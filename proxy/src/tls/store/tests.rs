use std::time::{Duration, Instant};

use super::*;
use crate::tls::outbound_client_config;
use crate::tls::test_support::{TestCa, TestLeaf, handshake, identity_under};

const SERVER: &str = "spiffe://example.org/ns/s/sa/server";
const CLIENT: &str = "spiffe://example.org/ns/c/sa/client";

struct Fixture {
    ca: TestCa,
    dir: tempfile::TempDir,
    files: IdentityFiles,
    metrics: Arc<ProxyMetrics>,
}

impl Fixture {
    fn new() -> Self {
        let ca = TestCa::new("example.org");
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.leaf(SERVER).write(dir.path());
        let bundles = ca.write_bundle(dir.path(), "example.org");
        Self {
            ca,
            dir,
            files: IdentityFiles { cert, key, bundles },
            metrics: Arc::new(ProxyMetrics::new()),
        }
    }

    fn store(&self) -> Arc<IdentityStore> {
        let allowed = vec![TrustDomain::parse("example.org").unwrap()];
        IdentityStore::from_files(self.files.clone(), allowed, Arc::clone(&self.metrics)).unwrap()
    }

    /// Rotates the SVID: a new leaf for the same ID, written the way an agent writes it.
    fn rotate(&self) -> TestLeaf {
        let leaf = self
            .ca
            .leaf_with(SERVER, |p| p.not_after = rcgen::date_time_ymd(2089, 6, 1));
        leaf.write(self.dir.path());
        leaf
    }
}

#[test]
fn a_reload_publishes_the_new_svid_for_new_handshakes_only() {
    let fx = Fixture::new();
    let store = fx.store();
    let before = store.server_config();
    let old_leaf = store.current().svid().leaf().cloned().unwrap();
    let new_leaf = fx.rotate();
    store.reload().unwrap();
    assert_eq!(store.current().svid().leaf(), Some(new_leaf.cert()));
    assert_eq!(store.last_reload().outcome(), &ReloadOutcome::Applied);
    assert_eq!(store.last_reload().error(), None);

    let (client, _d) = identity_under(&fx.ca, CLIENT);
    let server_id = hopgate_config::SpiffeId::parse(SERVER).unwrap();
    let client_cfg = outbound_client_config(&client, server_id).unwrap();
    // A connection accepted with the config taken before the reload keeps the old SVID...
    let (old_conn, _) = handshake(Arc::clone(&client_cfg), before).unwrap();
    assert_eq!(old_conn.peer_certificates().unwrap()[0], old_leaf);
    // ...and the next accepted connection presents the new one.
    let (new_conn, _) = handshake(client_cfg, store.server_config()).unwrap();
    assert_eq!(&new_conn.peer_certificates().unwrap()[0], new_leaf.cert());
    assert!(
        fx.metrics
            .encode()
            .unwrap()
            .contains(r#"hopgate_identity_reloads_total{result="ok"} 1"#)
    );
}

#[test]
fn a_bad_file_keeps_the_last_good_identity_and_reports_the_file() {
    let fx = Fixture::new();
    let store = fx.store();
    let good = store.current();
    std::fs::write(&fx.files.key, "not a key").unwrap();
    let err = store.reload().unwrap_err();
    assert!(matches!(err, TlsError::NoPrivateKey(_)), "{err:?}");
    assert!(Arc::ptr_eq(&store.current(), &good));
    let status = store.last_reload();
    assert!(
        status.error().unwrap().contains("svid_key.pem"),
        "{status:?}"
    );
    assert!(
        fx.metrics
            .encode()
            .unwrap()
            .contains(r#"hopgate_identity_reloads_total{result="error"} 1"#)
    );

    fx.rotate();
    store.reload().unwrap();
    assert!(!Arc::ptr_eq(&store.current(), &good));
    assert_eq!(store.last_reload().outcome(), &ReloadOutcome::Applied);
}

#[test]
fn the_svid_expiry_is_published_on_load_and_reload() {
    let fx = Fixture::new();
    let store = fx.store();
    let expiry = |store: &IdentityStore| {
        let secs = store
            .current()
            .svid()
            .not_after()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!("hopgate_svid_expiry_timestamp_seconds {secs}")
    };
    assert!(fx.metrics.encode().unwrap().contains(&expiry(&store)));
    fx.rotate();
    store.reload().unwrap();
    assert!(fx.metrics.encode().unwrap().contains(&expiry(&store)));
}

#[test]
fn the_watcher_reloads_after_the_files_change() {
    let fx = Fixture::new();
    let store = fx.store();
    let _guard = store.spawn_watcher().unwrap();
    let new_leaf = fx.rotate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.current().svid().leaf() != Some(new_leaf.cert()) {
        assert!(Instant::now() < deadline, "the watcher never reloaded");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}
