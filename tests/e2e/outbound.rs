//! The outbound side and the hop-token swap over real sockets: three workloads, each an app
//! behind its own hopgate (U → A → B), with the tokens checked at each app and verified by
//! jsonwebtoken as an independent oracle (docs/security.md, "Hop tokens").

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

use crate::support::client::{Client, Proto};
use crate::support::idp::{AUDIENCE, ISSUER, Idp, now};
use crate::support::proxy::{POLICY_SCHEMA, requests_total};
use crate::support::workload::{Workload, Workloads, workload_id};

/// The claims of a compact token, decoded without verification.
pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

pub(crate) fn b64_sha256(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// The one `hop-token` a workload's app received last.
pub(crate) fn received_token(workload: &Workload) -> String {
    let received = workload.app.received();
    let last = received.last().expect("the app was called");
    let mut tokens = last.headers.get_all("hop-token").iter();
    let token = tokens.next().expect("a hop token reached the app");
    assert!(tokens.next().is_none(), "one hop token");
    token.to_str().unwrap().to_owned()
}

/// Verifies `token` with jsonwebtoken against the key of its own `x5c` leaf, for `aud`.
pub(crate) fn oracle_verify(token: &str, iss: &str, aud: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("hop+jwt"));
    assert_eq!(header.alg, Algorithm::ES256);
    let leaf = STANDARD.decode(&header.x5c.unwrap()[0]).unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    let key = DecodingKey::from_ec_der(&cert.public_key().subject_public_key.data);
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[iss]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "aud", "iss", "sub"]);
    validation.validate_nbf = true;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap();
    // cnf binds the token to the minter's certificate: the very leaf in x5c.
    assert_eq!(data.claims["cnf"]["x5t#S256"], b64_sha256(&leaf));
    data.claims
}

/// crm ← inference ← agent, with the IdP trusted by the agent's sidecar.
async fn chain(mesh: &Workloads, idp: &Idp) -> (Workload, Workload, Workload) {
    idp.write_jwks(mesh.dir.path());
    let crm = mesh.workload("crm").start().await;
    let inference = mesh
        .workload("inference")
        .route("crm.tools", &crm, &["read_ticket"])
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate", "read_ticket"])
        .top_yaml(&Idp::token_yaml("jwks.json"))
        .start()
        .await;
    (agent, inference, crm)
}

#[tokio::test]
async fn an_end_user_call_through_two_hops_carries_one_narrowing_delegation_chain() {
    let mesh = Workloads::new();
    let idp = Idp::new();
    let (agent, inference, crm) = chain(&mesh, &idp).await;
    let alice = idp.token("alice", "generate read_ticket write_ticket");

    let reply = agent
        .call(
            "inference.ml",
            "/tickets/42",
            &[
                ("authorization", &format!("Bearer {alice}")),
                ("intent-purpose", "support"),
                ("x-next", "crm.tools"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    assert_eq!(reply["downstream"]["status"], 200, "{reply}");

    // Hop 1, agent → inference: the end user's origin token became a hop token for inference.
    let first = received_token(&inference);
    let t1 = oracle_verify(&first, &agent.id, &inference.id);
    assert_eq!(t1["sub"], "alice");
    assert_eq!(t1["act"], json!({ "sub": agent.id }));
    assert_eq!(t1["scope"], "generate read_ticket");
    assert_eq!(t1["tctx"], json!({ "purpose": "support" }));
    assert!(t1.get("prv").is_none(), "the first hop has no parent");
    // The broad credential never crossed the hop (ACT-14, HDR-07).
    let at_inference = &inference.app.received()[0].headers;
    assert!(at_inference.get("authorization").is_none());

    // Hop 2, inference → crm: relayed, narrowed, appended, chained to its parent.
    let second = received_token(&crm);
    let t2 = oracle_verify(&second, &inference.id, &crm.id);
    assert_eq!(t2["sub"], "alice");
    assert_eq!(
        t2["act"],
        json!({ "sub": inference.id, "act": { "sub": agent.id } })
    );
    assert_eq!(t2["txn"], t1["txn"], "txn is unchanged along the chain");
    assert_eq!(t2["tctx"], t1["tctx"], "tctx is copied unchanged");
    assert_eq!(t2["scope"], "read_ticket", "scope only narrows");
    assert_eq!(t2["prv"], b64_sha256(first.as_bytes()));
    let inference_leaf =
        std::fs::read_to_string(mesh.dir_of("inference").join("svid.pem")).unwrap();
    let leaf_der = rustls_pki_types::pem::PemObject::from_pem_slice(inference_leaf.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    assert_eq!(t2["cnf"]["x5t#S256"], b64_sha256(&leaf_der));
    assert!(t2["exp"].as_u64().unwrap() - t2["iat"].as_u64().unwrap() <= 60);
    let at_crm = &crm.app.received()[0].headers;
    assert!(at_crm.get("authorization").is_none());
    assert_eq!(
        at_crm["x-forwarded-client-cert"].to_str().unwrap(),
        format!(
            "By={};Hash={};URI={}",
            crm.id,
            hex(&Sha256::digest(&leaf_der)),
            inference.id
        )
    );

    // Each sidecar minted exactly one token.
    for workload in [&agent, &inference] {
        let (_, metrics) = workload.admin_get("/metrics").await;
        assert!(
            metrics.contains("hopgate_tokens_minted_total 1"),
            "{metrics}"
        );
        assert_eq!(
            requests_total(
                &metrics,
                &[("direction", "outbound"), ("decision", "allow")]
            ),
            1.0,
            "{metrics}"
        );
    }
    // Identity-only sidecars still audit every request on every side, and the records join
    // hop to hop: each token's hash is its child's `token_prv`.
    let [origin] = &agent.audit_records()[..] else {
        panic!("agent: one outbound record")
    };
    // The relay's record comes first: a record is written when its response head goes out.
    let [relayed, received] = &inference.audit_records()[..] else {
        panic!("inference: one inbound and one outbound record")
    };
    let [at_crm] = &crm.audit_records()[..] else {
        panic!("crm: one inbound record")
    };
    let (h1, h2) = (b64_sha256(first.as_bytes()), b64_sha256(second.as_bytes()));
    for (record, direction, hash, prv) in [
        (origin, "outbound", &h1, Value::Null),
        (received, "inbound", &h1, Value::Null),
        (relayed, "outbound", &h2, json!(h1)),
        (at_crm, "inbound", &h2, json!(h1)),
    ] {
        assert_eq!(record["direction"], direction, "{record}");
        assert_eq!(record["effect"], "allow", "{record}");
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(record["txn"], t1["txn"], "{record}");
        assert_eq!(record["sub"], "alice", "{record}");
        assert_eq!(record["token_hash"], json!(hash), "{record}");
        assert_eq!(record["token_prv"], prv, "{record}");
        assert!(
            record["decision_id"]
                .as_str()
                .is_some_and(|id| id.len() == 36)
        );
        assert!(
            record["action"].is_null(),
            "identity-only: nothing evaluated"
        );
    }
    assert_eq!(at_crm["principal"], json!(inference.id));
    assert_eq!(at_crm["resource"], json!(crm.id));
    assert_eq!(at_crm["depth"], 2);
    assert_eq!(at_crm["path"], "/tickets/42");
    assert_eq!(relayed["route"], "crm.tools");
    assert_eq!(relayed["resource"], json!(crm.id));
    assert_eq!(origin["principal"], json!(agent.id));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_call_without_an_origin_credential_starts_the_chain_as_the_workload() {
    let mesh = Workloads::new();
    let idp = Idp::new();
    let (agent, inference, _crm) = chain(&mesh, &idp).await;
    let reply = agent.call("inference.ml", "/", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let t1 = claims(&received_token(&inference));
    assert_eq!(t1["sub"], agent.id);
    assert_eq!(t1["iss"], agent.id);
    assert!(t1.get("act").is_none(), "sub = iss: no act (ACT-03)");
    assert_eq!(t1["scope"], "generate read_ticket", "the route's scopes");
}

#[tokio::test]
async fn a_repeated_intent_header_is_refused_before_it_can_reach_the_tokens_tctx() {
    // Without an egress policy nothing else reads the intent headers on the outbound side: the
    // token's `tctx` must take them by the policy's rules, so a duplicate is refused, never
    // settled by keeping one of them.
    let mesh = Workloads::new();
    let idp = Idp::new();
    let (agent, inference, _crm) = chain(&mesh, &idp).await;
    let reply = agent
        .call(
            "inference.ml",
            "/",
            &[("intent-purpose", "support"), ("intent-purpose", "billing")],
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        inference.app.received().is_empty(),
        "nothing crossed the hop"
    );
    // One of each is carried as before.
    let reply = agent
        .call("inference.ml", "/", &[("intent-purpose", "support")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let t1 = claims(&received_token(&inference));
    assert_eq!(t1["tctx"], json!({ "purpose": "support" }));
}

#[tokio::test]
async fn end_user_tokens_that_fail_verification_are_refused_with_401() {
    let mesh = Workloads::new();
    let idp = Idp::new();
    let (agent, inference, _crm) = chain(&mesh, &idp).await;
    let t = now();
    let cases = [
        (
            "expired",
            idp.sign(&json!({"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": t - 7200, "exp": t - 3600})),
        ),
        (
            "audience",
            idp.sign(&json!({"iss": ISSUER, "sub": "alice", "aud": "someone-else", "iat": t, "exp": t + 3600})),
        ),
        (
            "issuer",
            idp.sign(&json!({"iss": "https://evil.example", "sub": "alice", "aud": AUDIENCE, "iat": t, "exp": t + 3600})),
        ),
        (
            "signature",
            Idp::new().token("alice", "generate"),
        ),
        ("malformed", "not-a-jwt".to_owned()),
    ];
    for (reason, token) in cases {
        let reply = agent
            .call(
                "inference.ml",
                "/",
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await;
        assert_eq!(reply.status, 401, "{reason}: {}", reply.body);
        assert_eq!(reply.json()["reason"], reason, "{}", reply.body);
    }
    assert!(
        inference.app.received().is_empty(),
        "no refused call crossed the hop"
    );
}

#[tokio::test]
async fn relaying_a_token_its_inbound_side_never_accepted_is_refused_as_relay_cha_04() {
    let mesh = Workloads::new();
    let (agent, inference, crm) = chain(&mesh, &Idp::new()).await;
    // inference's app holds a token addressed to crm (the one crm's app received), and tries
    // to relay it through inference's own sidecar: inference's inbound side never accepted it,
    // however well it is signed.
    let reply = agent
        .call("inference.ml", "/", &[("x-next", "crm.tools")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let for_crm = received_token(&crm);
    let reply = inference
        .call("crm.tools", "/", &[("hop-token", &for_crm)])
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert_eq!(reply.json()["reason"], "relay");
    assert_eq!(crm.app.received().len(), 1, "the relay never left");
}

#[tokio::test]
async fn a_token_replayed_by_another_workload_is_refused_as_binding() {
    let mesh = Workloads::new();
    let (agent, _inference, crm) = chain(&mesh, &Idp::new()).await;
    let reply = agent
        .call("inference.ml", "/", &[("x-next", "crm.tools")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let stolen = received_token(&crm);
    // The agent, bypassing its own sidecar, presents inference's token to crm with its own SVID.
    let agent_svid = mesh.ca.leaf(&workload_id("agent")).build();
    let thief = Client::with_svid(&agent_svid.chain_pem, &agent_svid.key_pem, Proto::H2);
    let reply = thief
        .get(crm.inbound.unwrap(), "/", &[("hop-token", &stolen)])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["reason"], "binding");
}

#[tokio::test]
async fn a_host_no_route_matches_is_refused_with_no_route() {
    let mesh = Workloads::new();
    let (agent, inference, _crm) = chain(&mesh, &Idp::new()).await;
    let reply = agent.call("elsewhere.example", "/", &[]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.json(), json!({ "error": "no_route" }));
    assert!(inference.app.received().is_empty());
    let (_, metrics) = agent.admin_get("/metrics").await;
    assert_eq!(
        requests_total(&metrics, &[("direction", "outbound"), ("decision", "deny")]),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_route_host_matches_with_or_without_the_port_and_in_any_case() {
    let mesh = Workloads::new();
    let (agent, inference, _crm) = chain(&mesh, &Idp::new()).await;
    for host in ["inference.ml", "Inference.ML:8080", "inference.ml:80"] {
        let reply = agent.call(host, "/", &[]).await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
    }
    // The destination app sees the name the caller used.
    let hosts: Vec<String> = inference
        .app
        .received()
        .iter()
        .map(|r| r.headers["host"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        hosts,
        ["inference.ml", "Inference.ML:8080", "inference.ml:80"]
    );
}

#[tokio::test]
async fn the_egress_check_denies_before_anything_leaves_and_audits_the_outbound_decision() {
    let mesh = Workloads::new();
    let crm = mesh.workload("crm").start().await;
    let inference = mesh
        .workload("inference")
        .route("crm.tools", &crm, &["read_ticket", "write_ticket"])
        .egress_policy()
        .policy("schema.cedarschema", POLICY_SCHEMA)
        .policy(
            "egress.cedar",
            &format!(
                r#"@id("inference-reads-crm")
permit (principal == Hop::Workload::"{inference}", action == Hop::Action::"read_ticket", resource == Hop::Workload::"{crm}")
when {{ context.direction == "outbound" && context.token.present && context.token has scope && context.token.scope.contains("read_ticket") }};
"#,
                inference = workload_id("inference"),
                crm = crm.id,
            ),
        )
        .start()
        .await;

    let reply = inference
        .call(
            "crm.tools",
            "/tickets/1",
            &[("intent-action", "read_ticket")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = inference
        .call(
            "crm.tools",
            "/tickets/1",
            &[("intent-action", "write_ticket")],
        )
        .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let decision_id = reply.json()["decision_id"].as_str().unwrap().to_owned();
    let received = crm.app.received();
    assert_eq!(received.len(), 1, "the denied call never left");
    assert_eq!(received[0].path, "/tickets/1");

    let audit = inference.audit_records();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["direction"], "outbound");
    assert_eq!(audit[0]["effect"], "allow");
    assert_eq!(audit[0]["principal"], inference.id);
    assert_eq!(audit[0]["resource"], crm.id);
    assert_eq!(audit[1]["decision_id"], decision_id.as_str());
    assert_eq!(audit[1]["effect"], "deny");
    assert_eq!(audit[1]["sub"], inference.id);
}
