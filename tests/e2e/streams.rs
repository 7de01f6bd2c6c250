//! Open streams are decided again when what admitted them changes, and only those that no
//! longer pass are cut (docs/security.md, "Open streams and revocation", RVK-01..05): an HTTP/2
//! stream with `RST_STREAM(CANCEL)` while the others on its connection go on, an HTTP/1.1 one by
//! closing its connection mid-body. Each cut has its `stream_closed` audit record and counter.
//!
//! Also `inbound.streams.max_age`, and the load figure: 1,000 open streams re-decided by
//! reloads that change nothing for them, none cut, new requests timed before and during.
//!
//! The app is a [`StreamApp`]: every SSE stream is fed event by event by the test, so "the other
//! stream goes on" is an event released after the cut and received.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::outbound::claims;
use crate::policy::{PERMIT_EXAMPLE_ORG, id, sample};
use crate::support::client::{Client, Conn, Proto};
use crate::support::eventually::eventually;
use crate::support::pki::Ca;
use crate::support::proxy::{Mesh, POLICY_SCHEMA, POLICY_YAML, SERVER_ID, TestProxy};
use crate::support::stream_app::{
    End, Events, Running, StreamApp, closed_sum, closed_total, cut_record, mint, policy_status,
    request_record, wait_for_new_digest,
};
use crate::support::workload::{Workloads, workload_id};

const MINUTE: Duration = Duration::from_secs(60);
/// The documented bound on a cut after the change that calls for it.
const BOUND: Duration = Duration::from_secs(1);
const RESET: Result<String, End> = Err(End::Reset(h2::Reason::CANCEL));

/// A sidecar in front of `app` with `inbound` keys, deciding with the shipped schema, a permit
/// for the trust domain and `files`.
async fn sidecar(mesh: &Mesh, app: &StreamApp, inbound: &str, files: &[(&str, &str)]) -> TestProxy {
    mesh.write_policies(&[
        ("schema.cedarschema", POLICY_SCHEMA),
        ("mesh.cedar", PERMIT_EXAMPLE_ORG),
    ]);
    mesh.write_policies(files);
    let builder = mesh.proxy(app.addr).inbound_yaml(inbound);
    builder.top_yaml(POLICY_YAML).start().await
}

/// A forbid of the calls to `path`.
fn forbid_path(policy_id: &str, path: &str) -> String {
    format!(
        "@id(\"{policy_id}\")\nforbid (principal, action, resource) when {{ context.http.path == \"{path}\" }};\n"
    )
}

/// Asserts `events` receives an event released now: it is still open.
async fn still_open(app: &StreamApp, events: &mut Events, key: &str, data: &str) {
    assert!(app.send(key, data), "{key} is gone at the app");
    assert_eq!(events.next().await, Ok(data.to_owned()), "{key}");
}

async fn open_h2(mesh: &Mesh, name: &str, proxy: &TestProxy) -> Conn {
    let conn = mesh.client(name, Proto::H2).open(proxy.inbound).await;
    conn.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_01_revoking_a_txn_cuts_its_sse_stream_over_h2_and_spares_the_other() {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "", &[]).await;
    let leaf = mesh.leaf("caller");
    let (token_a, token_b) = (
        mint(&leaf, SERVER_ID, MINUTE),
        mint(&leaf, SERVER_ID, MINUTE),
    );
    let txn = claims(&token_a)["txn"].as_str().unwrap().to_owned();
    assert_ne!(claims(&token_b)["txn"], txn.as_str());
    let client = Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H2);
    let mut conn = client.open(proxy.inbound).await.unwrap();
    let mut a = Events::open(&mut conn, "a", &[("hop-token", &token_a)]).await;
    let mut b = Events::open(&mut conn, "b", &[("hop-token", &token_b)]).await;
    still_open(&app, &mut a, "a", "before").await;

    let written = Instant::now();
    let entry = format!("- txn: {txn}\n  reason: incident 4711\n");
    mesh.write_policies(&[("revocations.yaml", &entry)]);
    let end = a.next().await;
    let latency = written.elapsed();
    eprintln!("RVK-01 h2: revocations.yaml written to RST_STREAM: {latency:?}");
    assert_eq!(end, RESET);
    assert!(latency <= BOUND, "took {latency:?}");
    // The other stream of the same connection goes on.
    still_open(&app, &mut b, "b", "after the cut").await;

    let request = request_record(&proxy.audit, "txn", &txn);
    cut_record(&proxy.audit, &request, "revoked", "unauthenticated").await;
    assert_eq!(closed_total(proxy.admin, "revoked").await, 1.0);
    assert_eq!(closed_sum(proxy.admin).await, 1.0);
    assert_eq!(policy_status(proxy.admin).await["revocations"], 1);
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(sample(&metrics, "hopgate_revocations_loaded"), 1.0);
    // A new request of that transaction is refused, on the same connection; another is not.
    let refused = conn.get("/again", &[("hop-token", &token_a)]).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.json()["reason"], "revoked");
    let other = conn.get("/other", &[("hop-token", &token_b)]).await;
    assert_eq!(other.status, 200, "{:?}", other.body);
    // The sidecar stopped reading the app's side of the cut stream too.
    eventually(
        Duration::from_secs(5),
        "the app's stream a is read on",
        || std::future::ready(app.dropped("a").then_some(())),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_01_revoking_a_txn_closes_its_http1_sse_connection_mid_body_and_spares_the_others() {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "", &[]).await;
    let leaf = mesh.leaf("caller");
    let (token_a, token_b) = (
        mint(&leaf, SERVER_ID, MINUTE),
        mint(&leaf, SERVER_ID, MINUTE),
    );
    let txn = claims(&token_a)["txn"].as_str().unwrap().to_owned();
    let client = Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H1);
    let mut conn_a = client.open(proxy.inbound).await.unwrap();
    let mut conn_b = client.open(proxy.inbound).await.unwrap();
    let mut a = Events::open(&mut conn_a, "a", &[("hop-token", &token_a)]).await;
    let mut b = Events::open(&mut conn_b, "b", &[("hop-token", &token_b)]).await;
    still_open(&app, &mut a, "a", "before").await;

    let written = Instant::now();
    let entry = format!("- txn: {txn}\n  reason: incident 4711\n");
    mesh.write_policies(&[("revocations.yaml", &entry)]);
    let end = a.next().await;
    let latency = written.elapsed();
    eprintln!("RVK-01 HTTP/1.1: revocations.yaml written to the broken body: {latency:?}");
    assert!(matches!(end, Err(End::Broken(_))), "{end:?}");
    assert!(latency <= BOUND, "took {latency:?}");
    still_open(&app, &mut b, "b", "after the cut").await;
    let unrelated = client.get(proxy.inbound, "/unrelated", &[]).await.unwrap();
    assert_eq!(unrelated.status, 200);
    let refused = client
        .get(proxy.inbound, "/again", &[("hop-token", &token_a)])
        .await
        .unwrap();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["reason"], "revoked");

    let request = request_record(&proxy.audit, "txn", &txn);
    cut_record(&proxy.audit, &request, "revoked", "unauthenticated").await;
    assert_eq!(closed_sum(proxy.admin).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_02_a_reload_that_forbids_an_open_streams_call_cuts_it_with_reason_policy() {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "", &[]).await;
    let mut conn = open_h2(&mesh, "caller", &proxy).await;
    let mut a = Events::open(&mut conn, "a", &[]).await;
    let mut b = Events::open(&mut conn, "b", &[]).await;

    let written = Instant::now();
    mesh.write_policies(&[("cut.cedar", &forbid_path("no-stream-a", "/sse/a"))]);
    let end = a.next().await;
    let latency = written.elapsed();
    eprintln!("RVK-02: forbid written to RST_STREAM: {latency:?}");
    assert_eq!(end, RESET);
    assert!(latency <= BOUND, "took {latency:?}");
    still_open(&app, &mut b, "b", "after the cut").await;

    let request = request_record(&proxy.audit, "path", "/sse/a");
    let closed = cut_record(&proxy.audit, &request, "policy", "deny").await;
    assert_eq!(closed["policies"], serde_json::json!(["no-stream-a"]));
    assert_eq!(closed_total(proxy.admin, "policy").await, 1.0);
    assert_eq!(closed_sum(proxy.admin).await, 1.0);
    let again = conn.send("/sse/a", &[]).await.unwrap();
    assert_eq!(again.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_02_a_reload_that_changes_nothing_for_an_open_stream_leaves_it_open() {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "", &[]).await;
    let mut conn = open_h2(&mesh, "caller", &proxy).await;
    let mut a = Events::open(&mut conn, "a", &[]).await;
    let mut canary = Events::open(&mut conn, "canary", &[]).await;
    let mut h1 = mesh
        .client("caller", Proto::H1)
        .open(proxy.inbound)
        .await
        .unwrap();
    let mut h = Events::open(&mut h1, "h", &[]).await;

    // An unrelated permit: every open stream is decided again, and passes.
    let before = policy_status(proxy.admin).await["digest"].clone();
    let unrelated = format!(
        "@id(\"unrelated\")\npermit (principal == Hop::Workload::\"{}\", action, resource);\n",
        id("nobody")
    );
    mesh.write_policies(&[("unrelated.cedar", &unrelated)]);
    let status = wait_for_new_digest(proxy.admin, &before).await;
    assert!(
        status["policy_ids"]
            .as_array()
            .unwrap()
            .contains(&"unrelated".into())
    );
    still_open(&app, &mut a, "a", "after the permit").await;
    still_open(&app, &mut h, "h", "after the permit").await;

    // A forbid of the canary alone: once it is cut, both sweeps are over, and a and h passed.
    mesh.write_policies(&[("canary.cedar", &forbid_path("no-canary", "/sse/canary"))]);
    assert_eq!(canary.next().await, RESET);
    still_open(&app, &mut a, "a", "after the forbid").await;
    still_open(&app, &mut h, "h", "after the forbid").await;
    assert_eq!(closed_total(proxy.admin, "policy").await, 1.0);
    assert_eq!(closed_sum(proxy.admin).await, 1.0);
    // A stream left alone still ends whole.
    app.end("a");
    assert_eq!(a.next().await, Err(End::Clean));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_03_replacing_the_bundle_cuts_the_stream_of_a_peer_it_no_longer_trusts_with_reason_trust()
 {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "", &[]).await;
    // Two roots for example.org, then only the new one: callers of the old CA lose trust.
    let new_ca = Ca::new("example.org");
    let bundle = mesh.dir.path().join("bundle.pem");
    let both = format!("{}{}", mesh.ca.bundle_pem(), new_ca.bundle_pem());
    std::fs::write(&bundle, both).unwrap();
    proxy.identity.reload().unwrap();
    let kept = new_ca.leaf(&id("kept")).build();
    let kept = Client::with_svid(&kept.chain_pem, &kept.key_pem, Proto::H2);
    let mut kept_conn = kept.open(proxy.inbound).await.unwrap();
    let mut old_conn = open_h2(&mesh, "old", &proxy).await;
    let mut old = Events::open(&mut old_conn, "old", &[]).await;
    let mut new = Events::open(&mut kept_conn, "new", &[]).await;

    std::fs::write(&bundle, new_ca.bundle_pem()).unwrap();
    let written = Instant::now();
    proxy.identity.reload().unwrap();
    let end = old.next().await;
    let latency = written.elapsed();
    eprintln!("RVK-03: bundle replaced to RST_STREAM: {latency:?}");
    assert_eq!(end, RESET);
    assert!(latency <= BOUND, "took {latency:?}");
    still_open(&app, &mut new, "new", "after the cut").await;

    let request = request_record(&proxy.audit, "path", "/sse/old");
    cut_record(&proxy.audit, &request, "trust", "unauthenticated").await;
    assert_eq!(closed_total(proxy.admin, "trust").await, 1.0);
    assert_eq!(closed_sum(proxy.admin).await, 1.0);
    // The connection itself is no longer trusted with a request.
    let refused = old_conn.get("/again", &[]).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.json()["reason"], "trust");
    assert_eq!(kept_conn.get("/again", &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_03_a_stream_is_cut_when_its_peers_svid_expires_with_reason_trust() {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "", &[]).await;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let not_after = now + time::Duration::seconds(2);
    let leaf = mesh.ca.leaf(&id("brief")).not_after(not_after).build();
    let client = Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H2);
    let mut conn = client.open(proxy.inbound).await.unwrap();
    let mut a = Events::open(&mut conn, "a", &[]).await;
    let end = a.next().await;
    let late = time::OffsetDateTime::now_utc() - not_after;
    eprintln!("RVK-03: stream cut {late} after its peer's notAfter");
    assert_eq!(end, RESET);
    assert!(
        late.is_positive() && late <= BOUND,
        "cut {late} after notAfter"
    );
    let request = request_record(&proxy.audit, "path", "/sse/a");
    cut_record(&proxy.audit, &request, "trust", "unauthenticated").await;
    let refused = conn.get("/again", &[]).await;
    assert_eq!(refused.status, 401, "{:?}", refused.body);
    assert_eq!(refused.json()["reason"], "trust");
}

/// caller (client only) → server, both with `token.ttl: 2s` and `max_ttl: 10s`; the caller's
/// routes `short.svc` (`token_ttl: 2s`) and `long.svc` (`token_ttl: 10s`); the server, in front
/// of `app`, with `token.leeway: 0s`.
async fn token_chain(app: &StreamApp) -> (Workloads, Running, Running) {
    let mesh = Workloads::new();
    let identity = |name: &str| {
        let dir = mesh.dir_of(name);
        std::fs::create_dir_all(&dir).unwrap();
        mesh.ca.leaf(&workload_id(name)).build().write(&dir);
        format!(
            "identity:\n  svid: {{ cert: {name}/svid.pem, key: {name}/svid_key.pem }}\n  bundles: {{ example.org: bundle.pem }}\nadmin:\n  listen: 127.0.0.1:0\n"
        )
    };
    let server_yaml = format!(
        "{}inbound:\n  listen: 127.0.0.1:0\n  app: {}\ntoken:\n  ttl: 2s\n  max_ttl: 10s\n  leeway: 0s\n",
        identity("server"),
        app.addr
    );
    let path = mesh.dir.path().join("server.yaml");
    std::fs::write(&path, server_yaml).unwrap();
    let server = Running::start(&path).await;
    let route = |host: &str, ttl: &str| {
        format!(
            "    - host: {host}\n      address: {}\n      identity: {}\n      token_ttl: {ttl}\n",
            server.inbound.unwrap(),
            workload_id("server")
        )
    };
    let caller_yaml = format!(
        "{}outbound:\n  listen: 127.0.0.1:0\n  routes:\n{}{}token:\n  ttl: 2s\n  max_ttl: 10s\n",
        identity("caller"),
        route("short.svc", "2s"),
        route("long.svc", "10s")
    );
    let path = mesh.dir.path().join("caller.yaml");
    std::fs::write(&path, caller_yaml).unwrap();
    let caller = Running::start(&path).await;
    (mesh, caller, server)
}

/// The token's lifetime (`exp - iat`) and `exp`.
fn lifetime(token: &str) -> (u64, u64) {
    let claims = claims(token);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    (exp - iat, exp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_04_an_open_stream_is_cut_at_its_route_tokens_exp_with_reason_token_expired() {
    let app = StreamApp::start().await;
    let (_mesh, caller, server) = token_chain(&app).await;
    let opened = Instant::now();
    let mut short = Events::open_plain(caller.outbound.unwrap(), "short.svc", "short").await;
    let (ttl, exp) = lifetime(&app.hop_token("short"));
    assert_eq!(ttl, 2, "the route's token_ttl");
    still_open(&app, &mut short, "short", "before exp").await;

    // The caller's app talks HTTP/1.1 to its sidecar: the server's reset reaches it as a
    // connection closed mid-body.
    let end = short.next().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let past_exp = now.checked_sub(Duration::from_secs(exp));
    eprintln!(
        "RVK-04: stream open {:?}, cut {past_exp:?} after its token's exp",
        opened.elapsed()
    );
    assert!(matches!(end, Err(End::Broken(_))), "{end:?}");
    let past_exp = past_exp.expect("cut before the token's exp");
    assert!(past_exp <= BOUND, "cut {past_exp:?} after exp");

    let request = request_record(&server.audit, "path", "/sse/short");
    let closed = cut_record(&server.audit, &request, "token_expired", "unauthenticated").await;
    assert!(
        closed["duration_us"].as_u64().unwrap() >= 1_000_000,
        "{closed}"
    );
    assert_eq!(closed_total(server.admin, "token_expired").await, 1.0);
    assert_eq!(closed_sum(server.admin).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_04_a_route_with_a_longer_token_ttl_keeps_its_stream_open_past_the_default_ttl() {
    let app = StreamApp::start().await;
    let (_mesh, caller, server) = token_chain(&app).await;
    let opened = Instant::now();
    let mut long = Events::open_plain(caller.outbound.unwrap(), "long.svc", "long").await;
    assert_eq!(
        lifetime(&app.hop_token("long")).0,
        10,
        "the route's token_ttl"
    );

    // Twice the default token.ttl of both sidecars.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(opened.elapsed())).await;
    still_open(&app, &mut long, "long", "at 4 s").await;
    eprintln!(
        "RVK-04: the long route's stream open at {:?}",
        opened.elapsed()
    );
    assert_eq!(closed_sum(server.admin).await, 0.0);
    assert_eq!(closed_sum(caller.admin).await, 0.0);
    app.end("long");
    assert_eq!(long.next().await, Err(End::Clean));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_05_an_invalid_revocations_file_keeps_the_last_good_list_and_is_reported() {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let leaf = mesh.leaf("caller");
    let (revoked, other) = (
        mint(&leaf, SERVER_ID, MINUTE),
        mint(&leaf, SERVER_ID, MINUTE),
    );
    let txn = claims(&revoked)["txn"].as_str().unwrap().to_owned();
    let good = format!("- txn: {txn}\n  reason: incident 4711\n");
    let proxy = sidecar(&mesh, &app, "", &[("revocations.yaml", &good)]).await;
    let client = Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H2);
    let check = async |what: &str| {
        let reply = client
            .get(proxy.inbound, "/", &[("hop-token", &revoked)])
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{what}: {:?}", reply.body);
        assert_eq!(reply.json()["reason"], "revoked", "{what}");
        let reply = client
            .get(proxy.inbound, "/", &[("hop-token", &other)])
            .await;
        assert_eq!(reply.unwrap().status, 200, "{what}");
    };
    check("the good list").await;
    let before = policy_status(proxy.admin).await;
    assert_eq!(before["revocations"], 1, "{before}");

    let invalid = [
        ("bad YAML", format!("- txn: [{txn}\n  reason: oops\n")),
        (
            "an unknown key",
            format!("- txnid: {txn}\n  reason: typo\n"),
        ),
        (
            "two keys",
            format!("- txn: {txn}\n  jti: abc\n  reason: both\n"),
        ),
        ("an empty file", String::new()),
    ];
    for (what, content) in &invalid {
        let errors = reload_errors(&proxy).await;
        mesh.write_policies(&[("revocations.yaml", content)]);
        eventually(
            Duration::from_secs(5),
            format_args!("{what}: no failed reload counted"),
            || async { (reload_errors(&proxy).await > errors).then_some(()) },
        )
        .await;
        let status = policy_status(proxy.admin).await;
        assert_eq!(status["last_reload"]["result"], "error", "{what}: {status}");
        let error = status["last_reload"]["error"].as_str().unwrap();
        assert!(error.contains("revocations.yaml"), "{what}: {error}");
        assert_eq!(status["digest"], before["digest"], "{what}: {status}");
        assert_eq!(status["revocations"], 1, "{what}: {status}");
        let (_, metrics) = proxy.admin_get("/metrics").await;
        assert_eq!(
            sample(&metrics, "hopgate_revocations_loaded"),
            1.0,
            "{what}"
        );
        check(what).await;
    }

    // An empty list, written as one: the revocation is lifted.
    mesh.write_policies(&[("revocations.yaml", "[]\n")]);
    let status = wait_for_new_digest(proxy.admin, &before["digest"]).await;
    assert_eq!(status["last_reload"]["result"], "ok", "{status}");
    assert_eq!(status["revocations"], 0, "{status}");
    let reply = client
        .get(proxy.inbound, "/", &[("hop-token", &revoked)])
        .await;
    assert_eq!(reply.unwrap().status, 200);
}

async fn reload_errors(proxy: &TestProxy) -> f64 {
    let (_, metrics) = proxy.admin_get("/metrics").await;
    sample(&metrics, r#"hopgate_policy_reloads_total{result="error"}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_max_age_of_1s_cuts_an_open_sse_stream_with_reason_max_age() {
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "  streams: { max_age: 1s }\n", &[]).await;
    let mut conn = open_h2(&mesh, "caller", &proxy).await;
    let opened = Instant::now();
    let mut a = Events::open(&mut conn, "a", &[]).await;
    still_open(&app, &mut a, "a", "young").await;
    let end = a.next().await;
    let age = opened.elapsed();
    eprintln!("max_age 1s: stream cut at {age:?}");
    assert_eq!(end, RESET);
    assert!(age <= Duration::from_secs(1) + BOUND, "cut at {age:?}");
    // A short request on the same connection is not a stream to cut.
    assert_eq!(conn.get("/short", &[]).await.status, 200);

    let request = request_record(&proxy.audit, "path", "/sse/a");
    let closed = cut_record(&proxy.audit, &request, "max_age", "error").await;
    assert!(
        closed["duration_us"].as_u64().unwrap() >= 1_000_000,
        "{closed}"
    );
    assert_eq!(closed_total(proxy.admin, "max_age").await, 1.0);
    assert_eq!(closed_sum(proxy.admin).await, 1.0);
}

/// The load figure's open streams: 10 HTTP/2 connections of 100 (`max_concurrent_streams`).
const CONNS: usize = 10;
const PER_CONN: usize = 100;

/// Sends GETs one after another on `conn` until `stop`: (when sent, latency, status) of each.
async fn probe(mut conn: Conn, stop: Arc<AtomicBool>) -> Vec<(Instant, Duration, u16)> {
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let status = conn.get("/new", &[]).await.status.as_u16();
        samples.push((sent, sent.elapsed(), status));
    }
    samples
}

/// p50 and max of `latencies`.
fn spread(mut latencies: Vec<Duration>) -> (Duration, Duration, usize) {
    latencies.sort();
    let n = latencies.len();
    assert!(n > 0, "no request in the window");
    (latencies[n / 2], latencies[n - 1], n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rvk_02_reloads_re_decide_1000_open_streams_without_cutting_one_or_holding_up_new_requests()
{
    let app = StreamApp::start().await;
    let mesh = Mesh::new();
    let proxy = sidecar(&mesh, &app, "", &[]).await;
    let opening = Instant::now();
    let (mut conns, mut streams) = (Vec::new(), Vec::new());
    for c in 0..CONNS {
        let mut conn = open_h2(&mesh, &format!("load-{c}"), &proxy).await;
        for s in 0..PER_CONN {
            streams.push(Events::open(&mut conn, &format!("{c}-{s}"), &[]).await);
        }
        conns.push(conn);
    }
    eprintln!(
        "load: {} streams opened in {:?}",
        streams.len(),
        opening.elapsed()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let prober = open_h2(&mesh, "prober", &proxy).await;
    let prober = tokio::spawn(probe(prober, Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Five reloads, none of which changes a thing for the open streams.
    let reloading = Instant::now();
    let mut digest = policy_status(proxy.admin).await["digest"].clone();
    for n in 0..5 {
        let unrelated = format!(
            "@id(\"unrelated-{n}\")\npermit (principal == Hop::Workload::\"{}\", action, resource);\n",
            id(&format!("nobody-{n}"))
        );
        mesh.write_policies(&[("unrelated.cedar", &unrelated)]);
        digest = wait_for_new_digest(proxy.admin, &digest).await["digest"].clone();
    }
    let reloaded = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let samples = prober.await.unwrap();

    assert!(samples.iter().all(|s| s.2 == 200), "a new request failed");
    let window = |from: Instant, to: Instant| {
        let picked = samples.iter().filter(|s| s.0 >= from && s.0 <= to);
        spread(picked.map(|s| s.1).collect())
    };
    let before = window(reloading - Duration::from_secs(1), reloading);
    let during = window(reloading, reloaded + Duration::from_millis(500));
    eprintln!(
        "load: new requests with 1000 streams open: before the reloads p50 {:?} max {:?} ({} requests); \
         during 5 reloads ({:?}) p50 {:?} max {:?} ({} requests)",
        before.0,
        before.1,
        before.2,
        reloaded - reloading,
        during.0,
        during.1,
        during.2
    );
    // Not one stream was cut: each receives an event released now, and none is counted.
    assert_eq!(app.broadcast("after the reloads"), CONNS * PER_CONN);
    for events in &mut streams {
        assert_eq!(events.next().await, Ok("after the reloads".to_owned()));
    }
    assert_eq!(closed_sum(proxy.admin).await, 0.0);
}
