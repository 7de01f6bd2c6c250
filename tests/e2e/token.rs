//! Hop tokens on the inbound side, over real mTLS: a token minted by the caller's own SVID for
//! this workload verifies, reaches the policy as `context.token` and the app for relaying;
//! every misuse is a 401 with its reason code (docs/tokens.md, "Receiver checks and reason
//! codes").

use std::time::Duration;

use hopgate_config::SpiffeId;
use hopgate_proxy::tls::Svid;
use hopgate_proxy::token::{MintRequest, Minter};

use crate::support::client::{Client, Proto};
use crate::support::pki::Leaf;
use crate::support::proxy::{Mesh, POLICY_SCHEMA, POLICY_YAML, SERVER_ID};
use crate::support::upstream::Upstream;

/// A token minted by `leaf` (the caller) for `aud`, with `scopes`.
fn mint(leaf: &Leaf, aud: &str, scopes: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = leaf.write(dir.path());
    let svid = Svid::load(&cert, &key).unwrap();
    let minter = Minter::new(&svid, Duration::from_secs(60)).unwrap();
    let aud = SpiffeId::parse(aud).unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
    minter
        .mint(MintRequest {
            aud: &aud,
            parent: None,
            origin: None,
            route_scopes: &scopes,
            tctx: None,
            trace: None,
        })
        .unwrap()
        .compact()
        .to_owned()
}

fn caller(leaf: &Leaf) -> Client {
    Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H2)
}

#[tokio::test]
async fn a_token_bound_to_the_caller_reaches_the_policy_and_the_app() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    // Only a call carrying a verified token with the read scope is permitted.
    let policy = format!(
        r#"@id("read-with-token")
permit (principal, action == Hop::Action::"call", resource == Hop::Workload::"{SERVER_ID}")
when {{ context.token.present && context.token has scope && context.token.scope.contains("tickets.read") }};
"#
    );
    mesh.write_policies(&[
        ("schema.cedarschema", POLICY_SCHEMA),
        ("mesh.cedar", &policy),
    ]);
    let proxy = mesh.proxy(app.addr).top_yaml(POLICY_YAML).start().await;
    let leaf = mesh.leaf("caller");
    let token = mint(&leaf, SERVER_ID, &["tickets.read"]);

    let reply = caller(&leaf)
        .get(proxy.inbound, "/ticket", &[("hop-token", &token)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    // The verified token is passed on for relaying, unchanged.
    assert_eq!(reply.json()["headers"]["hop-token"][0], token.as_str());
    // Without a token the same call is denied by policy.
    let reply = caller(&leaf)
        .get(proxy.inbound, "/ticket", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 403);
    // The audit record names the token's subject and jti, never the token.
    let lines = proxy.audit.lock().unwrap().clone();
    let allowed: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(allowed["effect"], "allow");
    assert_eq!(allowed["sub"], "spiffe://example.org/ns/test/sa/caller");
    assert_eq!(allowed["depth"], 0);
    assert!(allowed["token_jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(
        lines.iter().all(|l| !l.contains(&token)),
        "a token reached the audit log"
    );
}

#[tokio::test]
async fn a_token_replayed_by_another_workload_is_refused_as_binding() {
    // CNF-*, ACT-* (docs/security.md): the token names its minter; only that workload may
    // present it.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let owner = mesh.leaf("owner");
    let token = mint(&owner, SERVER_ID, &["read"]);
    let thief = mesh.leaf("thief");
    let reply = caller(&thief)
        .get(proxy.inbound, "/", &[("hop-token", &token)])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["reason"], "binding");
    assert!(app.received().is_empty());
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"hopgate_token_rejections_total{reason="binding"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_addressed_to_another_workload_is_refused_as_audience() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let leaf = mesh.leaf("caller");
    let token = mint(
        &leaf,
        "spiffe://example.org/ns/test/sa/someone-else",
        &["read"],
    );
    let reply = caller(&leaf)
        .get(proxy.inbound, "/", &[("hop-token", &token)])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["reason"], "audience");
}

#[tokio::test]
async fn require_token_refuses_a_call_without_one() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .inbound_yaml("  require_token: true\n")
        .start()
        .await;
    let leaf = mesh.leaf("caller");
    let reply = caller(&leaf).get(proxy.inbound, "/", &[]).await.unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["reason"], "missing");
    let token = mint(&leaf, SERVER_ID, &["read"]);
    let reply = caller(&leaf)
        .get(proxy.inbound, "/", &[("hop-token", &token)])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn two_token_headers_are_refused_as_malformed() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let leaf = mesh.leaf("caller");
    let token = mint(&leaf, SERVER_ID, &["read"]);
    let reply = Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H1)
        .get(
            proxy.inbound,
            "/",
            &[("hop-token", &token), ("hop-token", &token)],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["reason"], "malformed");
}
