//! hopgate with its SVIDs from a real SPIRE agent (`identity.workload_api`): two sidecars, each
//! running as its own uid and selected by its own registration entry, complete a hop (mTLS, a
//! hop token signed with the SPIRE-issued key, a Cedar decision); SPIRE rotates both SVIDs under
//! continuous traffic with no failed request; and two SPIRE servers federate two trust domains,
//! so a peer of the other domain is admitted through its own bundle only.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::readable::ReadableDir;
use crate::spire::{SpireAgent, SpireServer, wait_for_svid};
use crate::support::client::{Client, Proto};
use crate::support::eventually::eventually;
use crate::support::pki::Ca;
use crate::support::proxy::POLICY_SCHEMA;
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;
use crate::support::workload::plain_request;

const A_UID: u32 = 10101;
const B_UID: u32 = 10102;

/// B's policy: only A may call it.
fn permit(a: &str) -> String {
    format!(
        "@id(\"a-may-call-b\")\npermit (principal == Hop::Workload::\"{a}\", action, resource);\n"
    )
}

fn identity_yaml(socket: &Path) -> String {
    format!(
        "identity:\n  workload_api: {{ socket: 'unix://{}', initial_timeout: 60s }}\n",
        socket.display()
    )
}

/// B: an inbound side in front of `app`, deciding with `policy`.
async fn start_b(configs: &ReadableDir, socket: &Path, app: &Upstream, policy: &str) -> Sidecar {
    configs.write("b/policies/schema.cedarschema", POLICY_SCHEMA);
    configs.write("b/policies/b.cedar", policy);
    let yaml = format!(
        "{}inbound:\n  listen: 127.0.0.1:0\n  app: {}\npolicy:\n  dir: b/policies\nadmin:\n  listen: 127.0.0.1:0\n",
        identity_yaml(socket),
        app.addr
    );
    Sidecar::start_as(B_UID, &configs.write("b.yaml", &yaml)).await
}

/// A: an outbound side with one route, `b.test`, to `b` (whose SVID must name `b_id`).
async fn start_a(configs: &ReadableDir, socket: &Path, b: &Sidecar, b_id: &str) -> Sidecar {
    let yaml = format!(
        "{}inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\n\
         outbound:\n  listen: 127.0.0.1:0\n  routes:\n    - host: b.test\n      address: {}\n      identity: {b_id}\n\
         admin:\n  listen: 127.0.0.1:0\n",
        identity_yaml(socket),
        b.inbound
    );
    Sidecar::start_as(A_UID, &configs.write("a.yaml", &yaml)).await
}

/// A's app calls B through A's outbound side; the hop must answer 200.
async fn assert_hop(a: &Sidecar, b: &Sidecar, path: &str) {
    let reply = plain_request(a.outbound.unwrap(), "GET", "b.test", path, &[]).await;
    let (a, b) = (a.output(), b.output());
    assert_eq!(reply.status, 200, "{reply:?}\nA: {a}\nB: {b}");
}

/// The client certificate B's app was told about, as the XFCC `Hash` of its last request.
fn last_caller_hash(app: &Upstream) -> String {
    let received = app.received();
    let last = received.last().expect("B's app was called");
    let xfcc = last.headers["x-forwarded-client-cert"].to_str().unwrap();
    xfcc.split(';')
        .find_map(|part| part.strip_prefix("Hash="))
        .unwrap()
        .to_owned()
}

fn hash_of_pem(pem: &str) -> String {
    let der = crate::spire::workload_api::certs_der(pem);
    Sha256::digest(&der[0])
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const A_ID: &str = "spiffe://example.org/ns/agents/sa/a";
const B_ID: &str = "spiffe://example.org/ns/tools/sa/b";

/// One SPIRE server and agent for example.org, entries for A and B, and both sidecars on it.
struct OneDomain {
    a: Sidecar,
    b: Sidecar,
    app: Upstream,
    /// What the agent gave A's uid before A started.
    a_svid: crate::spire::workload_api::X509Fetch,
    _spire: (SpireServer, SpireAgent, ReadableDir),
}

impl OneDomain {
    async fn start(svid_ttl: Duration) -> Self {
        let server = SpireServer::start("example.org", svid_ttl).await;
        let agent = SpireAgent::start(&server).await;
        server.register(A_ID, agent.id(), A_UID, &[]).await;
        server.register(B_ID, agent.id(), B_UID, &[]).await;
        let a_svid = wait_for_svid(&agent.socket(), A_UID, A_ID).await;
        wait_for_svid(&agent.socket(), B_UID, B_ID).await;
        let configs = ReadableDir::new();
        let app = Upstream::start().await;
        let b = start_b(&configs, &agent.socket(), &app, &permit(A_ID)).await;
        let a = start_a(&configs, &agent.socket(), &b, B_ID).await;
        Self {
            a,
            b,
            app,
            a_svid,
            _spire: (server, agent, configs),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_with_spire_svids_complete_a_hop_with_a_spire_signed_token_and_cedar() {
    let mesh = OneDomain::start(Duration::from_secs(3600)).await;
    let (a_id, a_svid) = (A_ID, &mesh.a_svid);
    let (a, b, app) = (&mesh.a, &mesh.b, &mesh.app);

    assert_hop(a, b, "/hop").await;
    // B admitted A's hop token (signed with the SPIRE-issued key, its x5c chaining to SPIRE's
    // bundle) and Cedar allowed it by name.
    let record = b
        .wait_for_audit(|r| r["effect"] == "allow" && r["principal"] == a_id)
        .await;
    assert_eq!(
        record["policies"],
        serde_json::json!(["a-may-call-b"]),
        "{record}"
    );
    assert!(record["token_jti"].as_str().is_some(), "{record}");
    // The connection B saw was made with A's SPIRE SVID.
    let first = a_svid.svids.first().unwrap();
    let expected = hash_of_pem(&first.chain_pem);
    // An hour's TTL: the agent hands every process of A's uid the same SVID.
    assert_eq!(last_caller_hash(app), expected);
    let (_, identity) = crate::support::proxy::admin_get(a.admin, "/identity").await;
    let identity: serde_json::Value = serde_json::from_str(&identity).unwrap();
    assert_eq!(identity["source"], "workload_api", "{identity}");
    assert_eq!(identity["spiffe_id"], a_id, "{identity}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_rotates_both_svids_under_continuous_traffic_without_a_failed_request() {
    // A 20 s TTL: SPIRE issues 30 s SVIDs (10 s backdated) and the agent renews them at half
    // life, so each side rotates within about 15 s.
    let mesh = OneDomain::start(Duration::from_secs(20)).await;
    let (a, b, app) = (&mesh.a, &mesh.b, &mesh.app);
    let b_not_after = |body: &str| -> i64 {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["not_after_unix"].as_i64().unwrap()
    };
    let (_, first_b) = crate::support::proxy::admin_get(b.admin, "/identity").await;

    let mut callers = BTreeSet::new();
    let (mut ok, mut failed) = (0, Vec::new());
    let until = Instant::now() + Duration::from_secs(40);
    while Instant::now() < until {
        let reply = plain_request(a.outbound.unwrap(), "GET", "b.test", "/load", &[]).await;
        if reply.status == 200 {
            ok += 1;
            callers.insert(last_caller_hash(app));
        } else {
            failed.push(format!("{reply:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:#?}",
        failed.len(),
        ok + failed.len()
    );
    // New handshakes presented A's new certificate; B's own SVID moved on too.
    assert!(
        callers.len() >= 2,
        "A's SVID never rotated under traffic: {callers:?}"
    );
    let (_, last_b) = crate::support::proxy::admin_get(b.admin, "/identity").await;
    assert!(
        b_not_after(&last_b) > b_not_after(&first_b),
        "{first_b} / {last_b}"
    );
    let (_, metrics) = crate::support::proxy::admin_get(a.admin, "/metrics").await;
    assert!(
        metrics.contains("hopgate_identity_updates_total{source=\"workload_api\",result=\"ok\"}"),
        "{metrics}"
    );
    eprintln!(
        "{ok} requests during rotation, 0 failed, {} caller certificates",
        callers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federated_spire_peer_is_admitted_only_through_its_own_trust_domains_bundle() {
    let home = SpireServer::start("example.org", Duration::from_secs(3600)).await;
    let partner = SpireServer::start("other.org", Duration::from_secs(3600)).await;
    home.federate_with(&partner).await;
    let home_agent = SpireAgent::start(&home).await;
    let partner_agent = SpireAgent::start(&partner).await;
    let (a_id, b_id) = (
        "spiffe://other.org/ns/agents/sa/a",
        "spiffe://example.org/ns/tools/sa/b",
    );
    partner
        .register(a_id, partner_agent.id(), A_UID, &[&home.trust_domain_id()])
        .await;
    home.register(b_id, home_agent.id(), B_UID, &[&partner.trust_domain_id()])
        .await;
    wait_for_svid(&partner_agent.socket(), A_UID, a_id).await;
    let b_fetch = wait_for_svid(&home_agent.socket(), B_UID, b_id).await;
    assert!(
        !b_fetch.federated_bundles.is_empty(),
        "B's entry federates with other.org"
    );

    let configs = ReadableDir::new();
    let app = Upstream::start().await;
    let b = start_b(&configs, &home_agent.socket(), &app, &permit(a_id)).await;
    let a = start_a(&configs, &partner_agent.socket(), &b, b_id).await;
    let b_admin = b.admin;
    let identity: serde_json::Value = eventually(
        Duration::from_secs(30),
        "B never had other.org's bundle",
        || async move {
            let (_, body) = crate::support::proxy::admin_get(b_admin, "/identity").await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (v["trust_domains"].as_array()?.len() == 2).then_some(v)
        },
    )
    .await;
    assert_eq!(
        identity["trust_domains"],
        serde_json::json!(["example.org", "other.org"])
    );

    // other.org's SPIRE-issued SVID, through other.org's bundle: admitted, across the hop.
    assert_hop(&a, &b, "/federated").await;
    // An other.org ID from a CA that is not other.org's: refused at the handshake.
    let impostor = Ca::new("other.org").leaf(a_id).build();
    let client = Client::with_svid(&impostor.chain_pem, &impostor.key_pem, Proto::H1);
    assert!(client.get(b.inbound, "/impostor", &[]).await.is_err());
}
