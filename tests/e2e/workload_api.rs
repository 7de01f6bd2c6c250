//! The Workload API identity source (`identity.workload_api`) against the tests' Workload API
//! server (support/workload_api.rs): each fault it produces, with what an operator sees of it.
//! The real SPIRE agent and server are exercised by the system tests.

use std::time::Duration;

use http::StatusCode;

use crate::policy::sample;
use crate::support::client::{Client, Proto};
use crate::support::eventually::eventually;
use crate::support::pki::{Ca, Leaf};
use crate::support::proxy::{Mesh, SERVER_ID, TestProxy};
use crate::support::upstream::Upstream;
use crate::support::workload_api::{Answer, WorkloadApiServer, response};

/// How long an update may take to reach the sidecar (the stream, or a reopen after backoff).
const UPDATE: Duration = Duration::from_secs(10);

/// A mesh, its app and a sidecar whose identity comes from a Workload API server that starts
/// by answering with a fresh `SERVER_ID` SVID.
struct Fixture {
    mesh: Mesh,
    api: WorkloadApiServer,
    proxy: TestProxy,
    _app: Upstream,
}

impl Fixture {
    async fn new() -> Self {
        let mesh = Mesh::new();
        let app = Upstream::start().await;
        let api = WorkloadApiServer::start(Answer::Svid(svid_of(&mesh.ca, &[]))).await;
        let proxy = mesh
            .proxy(app.addr)
            .workload_api(&api.endpoint(), "5s")
            .start()
            .await;
        Self {
            mesh,
            api,
            proxy,
            _app: app,
        }
    }

    async fn status_for(&self, client: &Client) -> Option<StatusCode> {
        client
            .get(self.proxy.inbound, "/", &[])
            .await
            .ok()
            .map(|r| r.status)
    }

    async fn caller_status(&self) -> Option<StatusCode> {
        self.status_for(&self.mesh.client("caller", Proto::H1))
            .await
    }

    async fn metric(&self, series: &str) -> f64 {
        let (_, metrics) = self.proxy.admin_get("/metrics").await;
        sample(&metrics, series)
    }

    async fn identity(&self) -> serde_json::Value {
        let (_, body) = self.proxy.admin_get("/identity").await;
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the sidecar presents `leaf`.
    async fn wait_for_leaf(&self, leaf: &Leaf) {
        let store = &self.proxy.identity;
        eventually(UPDATE, "the new SVID was not applied", || async {
            let snapshot = store.snapshot()?;
            (snapshot.identity().svid().leaf() == Some(leaf.cert())).then_some(())
        })
        .await;
    }

    /// Waits until `/ready` answers `status`; its body.
    async fn wait_for_ready(&self, status: u16) -> serde_json::Value {
        eventually(
            UPDATE,
            format_args!("/ready never answered {status}"),
            || async {
                let (got, body) = self.proxy.admin_get("/ready").await;
                (got == status).then(|| serde_json::from_str(&body).unwrap())
            },
        )
        .await
    }
}

fn svid_of(ca: &Ca, federated: &[&Ca]) -> X509Response {
    let leaf = ca.leaf(SERVER_ID).build();
    response(&leaf, SERVER_ID, ca, federated)
}

type X509Response = crate::support::workload_api::X509SvidResponse;

const OK: &str = r#"hopgate_identity_updates_total{source="workload_api",result="ok"}"#;
const ERROR: &str = r#"hopgate_identity_updates_total{source="workload_api",result="error"}"#;
const WITHDRAWN: &str =
    r#"hopgate_identity_updates_total{source="workload_api",result="withdrawn"}"#;

#[tokio::test]
async fn a_sidecar_serves_with_the_svid_and_bundle_of_the_workload_api() {
    let fx = Fixture::new().await;
    assert_eq!(fx.caller_status().await, Some(StatusCode::OK));
    let identity = fx.identity().await;
    assert_eq!(identity["source"], "workload_api", "{identity}");
    assert_eq!(identity["socket"], fx.api.endpoint(), "{identity}");
    assert_eq!(identity["spiffe_id"], SERVER_ID, "{identity}");
    assert_eq!(
        identity["trust_domains"],
        serde_json::json!(["example.org"])
    );
    assert_eq!(identity["last_update"]["result"], "ok", "{identity}");
    assert_eq!(fx.metric(OK).await, 1.0);
    assert_eq!(fx.metric(WITHDRAWN).await, 0.0);
    // Every call carried the metadata a conforming server insists on.
    assert_eq!(fx.api.calls(), 1);
    assert_eq!(fx.api.refused_without_metadata(), 0);
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_rotated_svid_applies_to_the_next_handshake_without_a_restart() {
    let fx = Fixture::new().await;
    let before = fx.proxy.identity.snapshot().unwrap();
    let open = fx
        .mesh
        .client("kept", Proto::H2)
        .open(fx.proxy.inbound)
        .await
        .unwrap();
    let next = fx.mesh.ca.leaf(SERVER_ID).build();
    fx.api
        .push(Answer::Svid(response(&next, SERVER_ID, &fx.mesh.ca, &[])));
    fx.wait_for_leaf(&next).await;
    assert_ne!(before.identity().svid().leaf(), Some(next.cert()));
    assert_eq!(fx.caller_status().await, Some(StatusCode::OK));
    // The open connection keeps what it proved.
    let mut open = open;
    assert_eq!(open.get("/still", &[]).await.status, StatusCode::OK);
    assert_eq!(fx.metric(OK).await, 2.0);
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_dropped_stream_is_reopened_while_the_last_good_svid_keeps_serving() {
    let fx = Fixture::new().await;
    fx.api.drop_streams();
    assert_eq!(fx.caller_status().await, Some(StatusCode::OK));
    let api = &fx.api;
    eventually(UPDATE, "the stream was not reopened", || async {
        (api.calls() >= 2).then_some(())
    })
    .await;
    // And updates flow on the new stream.
    let next = fx.mesh.ca.leaf(SERVER_ID).build();
    fx.api
        .push(Answer::Svid(response(&next, SERVER_ID, &fx.mesh.ca, &[])));
    fx.wait_for_leaf(&next).await;
    assert_eq!(fx.caller_status().await, Some(StatusCode::OK));
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_withdrawn_svid_turns_ready_503_and_new_handshakes_fail_closed_until_it_returns() {
    let fx = Fixture::new().await;
    fx.api.push(Answer::Denied);
    let ready = fx.wait_for_ready(503).await;
    assert_eq!(ready["reason"], "no_identity", "{ready}");
    // No fallback to the old SVID: the connection is refused.
    assert_eq!(fx.caller_status().await, None);
    let identity = fx.identity().await;
    assert_eq!(identity["spiffe_id"], serde_json::Value::Null, "{identity}");
    assert_eq!(identity["last_update"]["result"], "withdrawn", "{identity}");
    // Counted once, however often the reopened stream says it again.
    let api = &fx.api;
    eventually(UPDATE, "the stream was not reopened", || async {
        (api.calls() >= 3).then_some(())
    })
    .await;
    assert_eq!(fx.metric(WITHDRAWN).await, 1.0);
    assert!(
        fx.metric(r#"hopgate_tls_handshake_failures_total{reason="no_identity"}"#)
            .await
            >= 1.0
    );

    // An SVID issued again (an entry re-created) is taken on the reopened stream.
    fx.api.push(Answer::Svid(svid_of(&fx.mesh.ca, &[])));
    fx.wait_for_ready(200).await;
    assert_eq!(fx.caller_status().await, Some(StatusCode::OK));
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn an_expired_svid_from_the_workload_api_withdraws_the_identity() {
    let fx = Fixture::new().await;
    let expired = fx.mesh.ca.leaf(SERVER_ID).expired().build();
    fx.api.push(Answer::Svid(response(
        &expired,
        SERVER_ID,
        &fx.mesh.ca,
        &[],
    )));
    let ready = fx.wait_for_ready(503).await;
    assert_eq!(ready["reason"], "no_identity", "{ready}");
    assert_eq!(fx.caller_status().await, None);
    let identity = fx.identity().await;
    let error = identity["last_update"]["error"].as_str().unwrap();
    assert!(error.contains("expired"), "{error}");
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn an_unusable_update_keeps_the_last_good_svid_and_is_counted() {
    let fx = Fixture::new().await;
    // The key of another certificate: the SVID cannot be presented.
    let a = fx.mesh.ca.leaf(SERVER_ID).build();
    let b = fx.mesh.ca.leaf(SERVER_ID).build();
    let mut bad = response(&a, SERVER_ID, &fx.mesh.ca, &[]);
    bad.svids[0].x509_svid_key = b.key_der.secret_pkcs8_der().to_vec();
    fx.api.push(Answer::Svid(bad));
    let proxy = &fx.proxy;
    eventually(UPDATE, "the bad update was not counted", || async {
        let (_, metrics) = proxy.admin_get("/metrics").await;
        (sample(&metrics, ERROR) >= 1.0).then_some(())
    })
    .await;
    fx.wait_for_ready(200).await;
    assert_eq!(fx.caller_status().await, Some(StatusCode::OK));
    let identity = fx.identity().await;
    assert_eq!(identity["spiffe_id"], SERVER_ID, "{identity}");
    assert_eq!(identity["last_update"]["result"], "error", "{identity}");
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_federated_bundle_admits_its_domain_only_while_sent_and_only_through_its_own_roots() {
    let fx = Fixture::new().await;
    let other = Ca::new("other.org");
    let partner = other.leaf("spiffe://other.org/ns/p/sa/partner").build();
    let partner = Client::with_svid(&partner.chain_pem, &partner.key_pem, Proto::H1);
    // Before federation: other.org has no bundle here.
    assert_eq!(fx.status_for(&partner).await, None);

    fx.api.push(Answer::Svid(svid_of(&fx.mesh.ca, &[&other])));
    let proxy = &fx.proxy;
    eventually(UPDATE, "the federated bundle was not applied", || async {
        let snapshot = proxy.identity.snapshot()?;
        (snapshot.identity().bundles().trust_domains().len() == 2).then_some(())
    })
    .await;
    assert_eq!(fx.status_for(&partner).await, Some(StatusCode::OK));
    // An other.org SVID signed by example.org's CA is not vouched for by other.org's bundle.
    let forged = fx.mesh.ca.leaf("spiffe://other.org/ns/p/sa/forged").build();
    let forged = Client::with_svid(&forged.chain_pem, &forged.key_pem, Proto::H1);
    assert_eq!(fx.status_for(&forged).await, None);

    // The federation removed: other.org's peers are refused again.
    fx.api.push(Answer::Svid(svid_of(&fx.mesh.ca, &[])));
    let partner = &partner;
    eventually(UPDATE, "the removed federation still admits", || async {
        fx.status_for(partner).await.is_none().then_some(())
    })
    .await;
    assert_eq!(fx.caller_status().await, Some(StatusCode::OK));
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn permission_denied_at_start_fails_startup_naming_the_socket_and_the_registration_entry() {
    let mesh = Mesh::new();
    let app = Upstream::start().await;
    let api = WorkloadApiServer::start(Answer::Denied).await;
    let started = mesh
        .proxy(app.addr)
        .workload_api(&api.endpoint(), "1s")
        .try_start()
        .await;
    let Err(error) = started else {
        panic!("a sidecar without an SVID started");
    };
    let message = error.to_string();
    assert!(message.contains(&api.endpoint()), "{message}");
    assert!(message.contains("registration entry"), "{message}");
    assert!(!error.is_config(), "a runtime failure (exit 1): {message}");
    assert!(api.calls() >= 2, "retried until the timeout");
}

#[tokio::test]
async fn an_unreachable_socket_at_start_fails_startup_naming_it() {
    let mesh = Mesh::new();
    let app = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("absent.sock").display());
    let started = mesh
        .proxy(app.addr)
        .workload_api(&socket, "1s")
        .try_start()
        .await;
    let Err(error) = started else {
        panic!("a sidecar without an SVID started");
    };
    let message = error.to_string();
    assert!(message.contains(&socket), "{message}");
}

// === the SVID matrix, with material delivered by the Workload API ===

/// Pushes each of `cases` as the sidecar's own SVID and checks it is refused: counted as an
/// unusable update, never published, and the last good SVID still serving.
async fn refuses_each(fx: &Fixture, cases: Vec<(&str, Leaf)>) {
    let responses = cases
        .into_iter()
        .map(|(rule, leaf)| (rule, response(&leaf, SERVER_ID, &fx.mesh.ca, &[])))
        .collect();
    refuses_each_response(fx, responses).await;
}

/// [`refuses_each`] for whole responses.
async fn refuses_each_response(fx: &Fixture, cases: Vec<(&str, X509Response)>) {
    let good = fx.proxy.identity.snapshot().unwrap();
    for (n, (rule, answer)) in cases.into_iter().enumerate() {
        fx.api.push(Answer::Svid(answer));
        let want = (n + 1) as f64;
        let proxy = &fx.proxy;
        eventually(UPDATE, format_args!("{rule}: not refused"), || async {
            let (_, metrics) = proxy.admin_get("/metrics").await;
            (sample(&metrics, ERROR) >= want).then_some(())
        })
        .await;
        let now = fx.proxy.identity.snapshot().unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&now, &good),
            "{rule}: a refused SVID was published"
        );
        assert_eq!(fx.caller_status().await, Some(StatusCode::OK), "{rule}");
    }
}

#[tokio::test]
async fn a_malformed_workload_api_response_is_refused_and_the_last_good_svid_kept() {
    let fx = Fixture::new().await;
    let good = || svid_of(&fx.mesh.ca, &[]);
    let with = |edit: fn(&mut X509Response)| {
        let mut response = good();
        edit(&mut response);
        response
    };
    let other = Ca::new("other.org");
    let mut federated_garbage = svid_of(&fx.mesh.ca, &[&other]);
    for bundle in federated_garbage.federated_bundles.values_mut() {
        *bundle = b"not DER".to_vec();
    }
    let cases = vec![
        (
            "an SVID that is not DER",
            with(|r| r.svids[0].x509_svid = b"not a certificate".to_vec()),
        ),
        (
            "a key that is not PKCS#8",
            with(|r| r.svids[0].x509_svid_key = b"not a key".to_vec()),
        ),
        (
            "a bundle that is not DER",
            with(|r| r.svids[0].bundle = vec![0x30, 0x03, 0x02]),
        ),
        ("a federated bundle that is not DER", federated_garbage),
        (
            "a federated bundle for a name that is no trust domain",
            with(|r| {
                r.federated_bundles.insert(
                    "spiffe://Not A Domain".to_owned(),
                    r.svids[0].bundle.clone(),
                );
            }),
        ),
    ];
    refuses_each_response(&fx, cases).await;
    fx.proxy.shutdown().await;
}

#[tokio::test]
async fn a_bad_own_svid_is_refused_whatever_its_source_svid_matrix() {
    let fx = Fixture::new().await;
    let ca = &fx.mesh.ca;
    let cases = vec![
        // X509-SVID §2: exactly one URI SAN.
        (
            "two URI SANs",
            ca.leaf(SERVER_ID)
                .extra_uri("spiffe://example.org/ns/x/sa/y")
                .build(),
        ),
        (
            "no URI SAN",
            ca.leaf(SERVER_ID).no_uri().dns("a.example.org").build(),
        ),
        // SVID-S01, SVID-S07, SVID-S08, SVID-S11: not a canonical workload ID.
        ("SVID-S01 root ID", ca.leaf("spiffe://example.org").build()),
        (
            "SVID-S07 https scheme",
            ca.leaf("https://example.org/ns/a/sa/b").build(),
        ),
        (
            "SVID-S08 upper-case scheme",
            ca.leaf("SPIFFE://example.org/ns/a/sa/b").build(),
        ),
        (
            "SVID-S11 trailing slash",
            ca.leaf("spiffe://example.org/ns/a/").build(),
        ),
        // X509-SVID §4: a leaf is not a CA and may not sign certificates.
        ("a CA leaf", ca.leaf(SERVER_ID).marked_ca().build()),
        ("no key usage", ca.leaf(SERVER_ID).no_key_usage().build()),
        (
            "keyCertSign",
            ca.leaf(SERVER_ID)
                .key_usages(&[
                    rcgen::KeyUsagePurpose::DigitalSignature,
                    rcgen::KeyUsagePurpose::KeyCertSign,
                ])
                .build(),
        ),
        ("not yet valid", ca.leaf(SERVER_ID).not_yet_valid().build()),
    ];
    refuses_each(&fx, cases).await;
    fx.proxy.shutdown().await;
}
