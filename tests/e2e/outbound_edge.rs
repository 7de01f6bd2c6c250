//! The outbound side at its edges: origination failures, connection reuse, protocol fallback and
//! request forms an HTTP proxy must handle.

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, Version};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::support::idp::Idp;
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;
use crate::support::workload::{RouteSpec, Workload, Workloads, plain_request, workload_id};

mod fixtures;

use fixtures::{
    CountingRelay, GatheringApp, Http1Server, curl, raw_exchange, sidecar_in_front_of, together,
};

// === origination failures ===

#[tokio::test]
async fn a_destination_presenting_another_spiffe_id_is_502_with_a_log_line_naming_both_ids() {
    let mesh = Workloads::new();
    let inference = mesh.workload("inference").start().await;
    let address = inference.inbound.unwrap();
    // The route expects a workload other than the one listening at its address.
    let expected = workload_id("inference-v2");
    // The real binary, to see its log. Its inbound side (which `Sidecar` waits for) fronts no
    // app: only the outbound side is used.
    let config = mesh
        .workload("agent")
        .route_spec(route_to("inference.ml", address, &expected))
        .write(Upstream::closed_addr().await);
    let mut sidecar = Sidecar::start(&config).await;
    let outbound = sidecar
        .outbound
        .expect("the binary logs its outbound listener");

    let reply = plain_request(outbound, "GET", "inference.ml", "/", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.json(), json!({ "error": "upstream_unavailable" }));
    assert!(inference.app.received().is_empty(), "nothing crossed");

    let message = "mTLS handshake with the destination sidecar failed";
    sidecar.wait_for_log(message).await;
    let line = sidecar
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == message)
        .unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["route.host"], "inference.ml", "{line}");
    assert_eq!(line["route.address"], address.to_string(), "{line}");
    assert_eq!(line["route.identity"], expected, "{line}");
    assert_eq!(
        line["error"],
        format!(
            "invalid peer certificate: peer presented `{}`; expected `{expected}`",
            inference.id
        ),
        "{line}"
    );
}

#[tokio::test]
async fn a_destination_where_nothing_listens_is_502_upstream_unavailable() {
    let mesh = Workloads::new();
    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route_to(
            "inference.ml",
            Upstream::closed_addr().await,
            &workload_id("inference"),
        ))
        .start()
        .await;
    let reply = agent.call("inference.ml", "/", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.json(), json!({ "error": "upstream_unavailable" }));
}

// === connections and protocols ===

#[tokio::test]
async fn calls_to_one_destination_share_one_http2_connection_sequentially_and_concurrently() {
    const CONCURRENT: usize = 20;
    let mesh = Workloads::new();
    let app = GatheringApp::start(CONCURRENT).await;
    let (inbound, _stop) = sidecar_in_front_of(&mesh.workload("inference"), app.addr).await;
    let relay = CountingRelay::start(inbound).await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route_to(
            "inference.ml",
            relay.addr,
            &workload_id("inference"),
        ))
        .start()
        .await;

    for i in 0..20 {
        let reply = agent.call("inference.ml", &format!("/one/{i}"), &[]).await;
        assert_eq!(reply.status, 200, "call {i}: {}", reply.body);
    }
    // Two: the protocol probe (a handshake, no request) and the one connection.
    assert_eq!(relay.accepted(), 2, "sequential calls reuse the connection");

    // Every `/together` request is held at the app until all of them are there at once. They
    // crossed one TCP connection (the probe carries no request): only HTTP/2 multiplexing carries 20 requests in flight on one
    // connection (HTTP/1.1 carries one at a time), so this proves h2 without seeing the ALPN.
    let replies = together(agent.outbound, CONCURRENT).await;
    assert!(replies.iter().all(|r| r == "together"), "{replies:?}");
    assert_eq!(
        relay.accepted(),
        2,
        "concurrent calls share the pooled h2 connection"
    );
}

#[tokio::test]
async fn a_cold_burst_of_concurrent_calls_opens_one_http2_connection() {
    // The destination's protocol is probed once, by a handshake of its own, before the first
    // request; the burst then waits for the one HTTP/2 connection instead of racing a handshake
    // per request (before the probe: 20 handshakes for 20 calls). So: the probe, then one.
    const CONCURRENT: usize = 20;
    let mesh = Workloads::new();
    let app = GatheringApp::start(CONCURRENT).await;
    let (inbound, _stop) = sidecar_in_front_of(&mesh.workload("inference"), app.addr).await;
    let relay = CountingRelay::start(inbound).await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route_to(
            "inference.ml",
            relay.addr,
            &workload_id("inference"),
        ))
        .start()
        .await;

    let replies = together(agent.outbound, CONCURRENT).await;
    assert!(replies.iter().all(|r| r == "together"), "{replies:?}");
    let burst = relay.accepted();
    assert_eq!(
        burst, 2,
        "the probe and one connection for {CONCURRENT} calls"
    );
    relay.settles_on(1).await;
    for i in 0..5 {
        let reply = agent
            .call("inference.ml", &format!("/after/{i}"), &[])
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(
        relay.accepted(),
        burst,
        "later calls use the surviving connection"
    );
}

#[tokio::test]
async fn a_destination_offering_only_http1_by_alpn_is_called_over_http1_with_the_hop_token() {
    let mesh = Workloads::new();
    let legacy_id = workload_id("legacy");
    let server = Http1Server::start(&mesh.ca.leaf(&legacy_id).build(), mesh.ca.root_der()).await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route_to("legacy.svc", server.addr, &legacy_id))
        .start()
        .await;

    for i in 0..5 {
        let reply = agent.call("legacy.svc", &format!("/v1/{i}"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, "http/1.1 ok");
    }
    let agent_leaf = leaf_of(&mesh, "agent");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for request in &seen {
        assert_eq!(request.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(request.version, Version::HTTP_11);
        assert_eq!(
            request.client_cert.as_ref(),
            Some(&agent_leaf),
            "the agent's SVID"
        );
        assert_eq!(request.headers["host"], "legacy.svc");
        let mut tokens = request.headers.get_all("hop-token").iter();
        let token = tokens.next().expect("a hop token").to_str().unwrap();
        assert!(tokens.next().is_none(), "one hop token");
        let claims = claims(token);
        assert_eq!(claims["aud"], legacy_id);
        assert_eq!(claims["iss"], agent.id);
    }
    // Kept alive and reused (measured: one connection). A connection goes back to the pool
    // from a spawned task once its response is done, so a call racing that may open one more.
    let connections = server.accepted();
    // The protocol probe, then keep-alive reuse (a connection goes back to the pool from a
    // spawned task, so a call may race it and open one more).
    assert!(connections <= 3, "{connections} connections for 5 calls");
}

// === request forms ===

#[tokio::test]
async fn curl_reaches_the_destination_with_the_outbound_listener_as_http_proxy_and_over_h2c() {
    let mesh = Workloads::new();
    let inference = mesh.workload("inference").start().await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate"])
        .start()
        .await;
    let proxy = format!("http://{}", agent.outbound);
    let connect_to = format!(
        "inference.ml:80:{}:{}",
        agent.outbound.ip(),
        agent.outbound.port()
    );
    let cases = [
        (vec!["--proxy", &proxy], "/as-proxy", "1.1"),
        (
            vec!["--http2-prior-knowledge", "--connect-to", &connect_to],
            "/h2c",
            "2",
        ),
    ];
    for (flags, path, version) in cases {
        let mut args: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("http://inference.ml{path}"));
        let (code, out, err) = curl(args).await;
        assert_eq!(code, 0, "curl {flags:?}: {err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, format!("200 {version}"), "curl {flags:?}: {body}");
        let seen: Value = serde_json::from_str(body).unwrap();
        assert_eq!(seen["path"], path);
        assert_eq!(seen["headers"]["host"], json!(["inference.ml"]), "{seen}");
        assert_eq!(seen["headers"]["hop-token"].as_array().unwrap().len(), 1);
        assert!(seen["headers"].get("proxy-connection").is_none(), "{seen}");
    }
    assert_eq!(inference.app.received().len(), 2);
}

#[tokio::test]
async fn an_absolute_form_target_whose_authority_differs_from_host_is_refused_with_400() {
    // PATH-03, SMG-17 (docs/security.md): router, policy and destination read one authority.
    let mesh = Workloads::new();
    let inference = mesh.workload("inference").start().await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate"])
        .start()
        .await;
    for (target, host) in [
        ("http://inference.ml/admin", "elsewhere.example"),
        ("http://elsewhere.example/admin", "inference.ml"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (status, body) = raw_exchange(agent.outbound, &request).await;
        assert_eq!(status, 400, "{target} with Host {host}: {body}");
        assert_eq!(body, r#"{"error":"bad_request"}"#);
    }
    // The same absolute form with a matching Host goes through.
    let request = "GET http://inference.ml/admin HTTP/1.1\r\nHost: inference.ml\r\n\r\n";
    assert_eq!(raw_exchange(agent.outbound, request).await.0, 200);
    assert_eq!(inference.app.received().len(), 1, "only the consistent one");
}

#[tokio::test]
async fn a_connect_request_is_refused_with_400_and_opens_no_tunnel() {
    let mesh = Workloads::new();
    let inference = mesh.workload("inference").start().await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate"])
        .start()
        .await;
    for authority in ["inference.ml:80", "inference.ml:443"] {
        let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let (status, body) = raw_exchange(agent.outbound, &request).await;
        assert_eq!(status, 400, "CONNECT {authority}: {body}");
        assert_eq!(body, r#"{"error":"bad_request"}"#);
    }
    assert!(inference.app.received().is_empty(), "nothing crossed");
}

// === credentials from the app ===

#[tokio::test]
async fn two_hop_token_or_two_authorization_headers_from_the_app_are_401_malformed() {
    let mesh = Workloads::new();
    let inference = mesh.workload("inference").start().await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate"])
        .start()
        .await;
    let cases: [[(&str, &str); 2]; 3] = [
        [("hop-token", "first"), ("hop-token", "second")],
        [("authorization", "Bearer a"), ("authorization", "Bearer b")],
        [
            ("authorization", "Basic YTpi"),
            ("authorization", "Bearer b"),
        ],
    ];
    for headers in cases {
        let reply = agent.call("inference.ml", "/", &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}: {}", reply.body);
        assert_eq!(reply.headers["www-authenticate"], "hop-token");
        let body = reply.json();
        assert_eq!(body["error"], "unauthenticated");
        assert_eq!(body["reason"], "malformed");
        assert!(body["decision_id"].is_string(), "{body}");
    }
    assert!(inference.app.received().is_empty(), "nothing left");
}

#[tokio::test]
async fn a_non_origin_authorization_never_crosses_the_hop_and_the_call_goes_as_the_workload() {
    // ACT-14, HDR-07 (docs/security.md): only the minted token crosses the hop.
    let mesh = Workloads::new();
    let idp = Idp::new();
    idp.write_jwks(mesh.dir.path());
    let inference = mesh.workload("inference").start().await;
    let with_issuers = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate"])
        .top_yaml(&Idp::token_yaml("jwks.json"))
        .start()
        .await;
    let without_issuers = mesh
        .workload("batch")
        .client_only()
        .route("inference.ml", &inference, &["generate"])
        .start()
        .await;
    let alice = format!("Bearer {}", idp.token("alice", "generate"));
    let cases = [
        (&with_issuers, "Basic YWxpY2U6c2VjcmV0"),
        (&without_issuers, "Basic YWxpY2U6c2VjcmV0"),
        // No issuer to verify it against: not an origin credential, whoever signed it.
        (&without_issuers, alice.as_str()),
    ];
    for (caller, authorization) in cases {
        let reply = caller
            .call("inference.ml", "/", &[("authorization", authorization)])
            .await;
        assert_eq!(reply.status, 200, "{authorization}: {}", reply.body);
        let headers = last_received(&inference);
        assert!(headers.get("authorization").is_none(), "{authorization}");
        let claims = claims(headers["hop-token"].to_str().unwrap());
        assert_eq!(claims["sub"], caller.id, "{authorization}");
        assert_eq!(claims["iss"], caller.id);
        assert!(claims.get("act").is_none(), "sub = iss: no act");
        assert_eq!(claims["scope"], "generate");
    }
}

#[tokio::test]
async fn a_relayed_chain_longer_than_the_destinations_max_depth_is_401_depth_to_the_relaying_app() {
    // ACT-10 (docs/security.md). crm accepts one actor: agent → inference → crm without an end
    // user has one (inference); with alice as the subject it has two (inference, agent).
    let mesh = Workloads::new();
    let idp = Idp::new();
    idp.write_jwks(mesh.dir.path());
    let crm = mesh
        .workload("crm")
        .top_yaml("token:\n  max_depth: 1\n")
        .start()
        .await;
    let inference = mesh
        .workload("inference")
        .route("crm.tools", &crm, &["read_ticket"])
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["read_ticket"])
        .top_yaml(&Idp::token_yaml("jwks.json"))
        .start()
        .await;

    let at_limit = agent
        .call("inference.ml", "/", &[("x-next", "crm.tools")])
        .await;
    assert_eq!(at_limit.status, 200, "{}", at_limit.body);
    assert_eq!(
        at_limit.json()["downstream"]["status"],
        200,
        "{}",
        at_limit.body
    );

    let alice = format!("Bearer {}", idp.token("alice", "read_ticket"));
    let past_limit = agent
        .call(
            "inference.ml",
            "/",
            &[("authorization", &alice), ("x-next", "crm.tools")],
        )
        .await;
    assert_eq!(past_limit.status, 200, "inference itself accepts depth 1");
    // What inference's app got back from its own call to crm: the 401 names its reason, and
    // its decision id finds crm's audit record of it.
    let downstream = &past_limit.json()["downstream"];
    assert_eq!(downstream["status"], 401, "{downstream}");
    assert_eq!(downstream["body"]["reason"], "depth", "{downstream}");
    let decision_id = &downstream["body"]["decision_id"];
    let record = crm
        .audit_records()
        .into_iter()
        .find(|r| r["decision_id"] == *decision_id)
        .expect("crm audited the 401");
    assert_eq!(record["effect"], "unauthenticated");
    assert_eq!(record["reason"], "depth");
    assert_eq!(record["status"], 401);
    assert_eq!(record["principal"], json!(inference.id));
    assert!(
        record["txn"].is_null(),
        "an unverified token's claims are not facts"
    );
    assert_eq!(inference.app.received().len(), 2);
    assert_eq!(
        crm.app.received().len(),
        1,
        "only the call within the limit"
    );
}

#[tokio::test]
async fn folded_spellings_of_the_token_header_from_the_app_never_reach_the_next_hop_cha_04b() {
    // The destination is not hopgate, so nothing on its side strips them: what it sees is
    // exactly what the agent's outbound side sent.
    let mesh = Workloads::new();
    let legacy_id = workload_id("legacy");
    let server = Http1Server::start(&mesh.ca.leaf(&legacy_id).build(), mesh.ca.root_der()).await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route_to("legacy.svc", server.addr, &legacy_id))
        .start()
        .await;
    for spelling in crate::folded_headers::SPELLINGS {
        let reply = agent
            .call("legacy.svc", "/", &[(spelling, "copied-from-a-log")])
            .await;
        assert_eq!(reply.status, 200, "{spelling}: {}", reply.body);
    }
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert!(
            request.headers.get("hop_token").is_none(),
            "{:?}",
            request.headers
        );
        // Only the token the agent's sidecar minted, once.
        assert_eq!(request.headers.get_all("hop-token").iter().count(), 1);
    }
}

// === helpers ===

/// A route under `host` to `address`, whose server must present `identity`.
fn route_to(host: &str, address: SocketAddr, identity: &str) -> RouteSpec {
    RouteSpec {
        host: host.to_owned(),
        address: address.to_string(),
        identity: identity.to_owned(),
        scopes: vec!["generate".to_owned()],
        original_dst: None,
    }
}

/// The claims of a compact token, decoded without verification.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// The headers of the last request `workload`'s app received.
fn last_received(workload: &Workload) -> HeaderMap {
    workload.app.received().last().unwrap().headers.clone()
}

/// The leaf certificate of the SVID the harness wrote for `name`.
fn leaf_of(mesh: &Workloads, name: &str) -> CertificateDer<'static> {
    let pem = std::fs::read(mesh.dir_of(name).join("svid.pem")).unwrap();
    CertificateDer::from_pem_slice(&pem).unwrap()
}
