use std::time::{Duration, Instant};

use hopgate_config::{SpiffeId, TrustDomain};

use super::*;
use crate::tls::test_support::{TestCa, TestLeaf, handshake, identity_under};
use crate::tls::{TlsError, outbound_client_config};
use crate::token::Limits;

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
        self.store_deriving(None, vec![])
    }

    fn store_deriving(
        &self,
        mint_ttl: Option<Duration>,
        routes: Vec<SpiffeId>,
    ) -> Arc<IdentityStore> {
        let derived = Derived {
            allowed: vec![TrustDomain::parse("example.org").unwrap()],
            limits: Limits {
                ttl: Duration::from_secs(300),
                leeway: Duration::from_secs(30),
                max_depth: 8,
            },
            mint_ttl,
            routes,
        };
        IdentityStore::from_files(self.files.clone(), derived, Arc::clone(&self.metrics)).unwrap()
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
    let before = store.snapshot().unwrap().server_config();
    let old_leaf = store
        .snapshot()
        .unwrap()
        .identity()
        .svid()
        .leaf()
        .cloned()
        .unwrap();
    let new_leaf = fx.rotate();
    store.reload().unwrap();
    assert_eq!(
        store.snapshot().unwrap().identity().svid().leaf(),
        Some(new_leaf.cert())
    );
    assert_eq!(store.last_reload().outcome(), &ReloadOutcome::Applied);
    assert_eq!(store.last_reload().error(), None);

    let (client, _d) = identity_under(&fx.ca, CLIENT);
    let server_id = SpiffeId::parse(SERVER).unwrap();
    let client_cfg = outbound_client_config(&client, server_id).unwrap();
    // A connection accepted with the config taken before the reload keeps the old SVID...
    let (old_conn, _) = handshake(Arc::clone(&client_cfg), before).unwrap();
    assert_eq!(old_conn.peer_certificates().unwrap()[0], old_leaf);
    // ...and the next accepted connection presents the new one.
    let (new_conn, _) = handshake(client_cfg, store.snapshot().unwrap().server_config()).unwrap();
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
    let good = store.snapshot().unwrap();
    std::fs::write(&fx.files.key, "not a key").unwrap();
    let err = store.reload().unwrap_err();
    assert!(
        matches!(err, IdentityError::Tls(TlsError::NoPrivateKey(_))),
        "{err:?}"
    );
    assert!(Arc::ptr_eq(&store.snapshot().unwrap(), &good));
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
    assert!(!Arc::ptr_eq(&store.snapshot().unwrap(), &good));
    assert_eq!(store.last_reload().outcome(), &ReloadOutcome::Applied);
}

#[test]
fn the_svid_expiry_is_published_on_load_and_reload() {
    let fx = Fixture::new();
    let store = fx.store();
    let expiry = |store: &IdentityStore| {
        let secs = store
            .snapshot()
            .unwrap()
            .identity()
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
    while store.snapshot().unwrap().identity().svid().leaf() != Some(new_leaf.cert()) {
        assert!(Instant::now() < deadline, "the watcher never reloaded");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn a_reload_publishes_the_minter_verifier_and_route_clients_of_the_new_svid_together() {
    let fx = Fixture::new();
    let route = SpiffeId::parse(CLIENT).unwrap();
    let store = fx.store_deriving(Some(Duration::from_secs(60)), vec![route.clone()]);
    let before = store.snapshot().unwrap();
    assert!(before.minter().is_some() && before.client(0).is_some());
    assert!(before.client(1).is_none(), "one client config per route");
    let new_leaf = fx.rotate();
    store.reload().unwrap();
    let after = store.snapshot().unwrap();
    assert_eq!(after.identity().svid().leaf(), Some(new_leaf.cert()));
    // Everything derived is new with it: nothing of the old snapshot is paired with the new SVID.
    assert!(!Arc::ptr_eq(
        after.client(0).unwrap(),
        before.client(0).unwrap()
    ));
    let minted = |snapshot: &IdentitySnapshot| {
        let token = snapshot
            .minter()
            .unwrap()
            .mint(crate::token::MintRequest {
                aud: &route,
                parent: None,
                origin: None,
                route_scopes: &[],
                tctx: None,
                trace: None,
            })
            .unwrap();
        token.claims().cnf_x5t_s256().to_owned()
    };
    assert_ne!(
        minted(&before),
        minted(&after),
        "the new minter binds the new leaf"
    );
    // Without an outbound side there is nothing to mint with, and no client to build.
    let inbound_only = fx.store().snapshot().unwrap();
    assert!(inbound_only.minter().is_none() && inbound_only.client(0).is_none());
}
