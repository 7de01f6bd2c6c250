//! `context.token.enduser` and `context.token.tctx` through the real stack: agent → inference →
//! crm, where crm's policy asks for a person behind the call and for the purpose the origin
//! signed, which the caller's own headers cannot change.

use crate::support::idp::Idp;
use crate::support::proxy::POLICY_SCHEMA;
use crate::support::workload::{Workload, Workloads};

/// crm's rule: an end user, on a transaction the origin signed as `support`.
const CRM_POLICY: &str = r#"@id("people-on-support-transactions")
permit (principal, action, resource) when {
  context.token has enduser && context.token.enduser &&
  context.token has tctx && context.token.tctx has purpose &&
  context.token.tctx.purpose == "support"
};
"#;

/// The agent, and the workloads it calls (kept running while held).
async fn chain(mesh: &Workloads, idp: &Idp) -> (Workload, [Workload; 2]) {
    idp.write_jwks(mesh.dir.path());
    let crm = mesh
        .workload("crm")
        .policy("schema.cedarschema", POLICY_SCHEMA)
        .policy("crm.cedar", CRM_POLICY)
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
        .route("inference.ml", &inference, &["generate", "read_ticket"])
        .top_yaml(&Idp::token_yaml("jwks.json"))
        .start()
        .await;
    (agent, [inference, crm])
}

/// The status crm answered inference's relayed call with.
async fn crm_status(agent: &Workload, headers: &[(&str, &str)]) -> serde_json::Value {
    let mut headers = headers.to_vec();
    headers.push(("x-next", "crm.tools"));
    let reply = agent.call("inference.ml", "/tickets/7", &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["downstream"]["status"].clone()
}

#[tokio::test]
async fn a_downstream_policy_requires_an_end_user_and_the_origins_signed_purpose() {
    let mesh = Workloads::new();
    let idp = Idp::new();
    let (agent, _callees) = chain(&mesh, &idp).await;
    let alice = format!("Bearer {}", idp.token("alice", "generate read_ticket"));

    // Alice, for support: the origin signed `purpose` into tctx; inference's app never passes
    // the intent header on, and crm does not need it.
    let allowed = [
        ("authorization", alice.as_str()),
        ("intent-purpose", "support"),
    ];
    assert_eq!(crm_status(&agent, &allowed).await, 200);

    // The same person for another purpose.
    let billing = [
        ("authorization", alice.as_str()),
        ("intent-purpose", "billing"),
    ];
    assert_eq!(crm_status(&agent, &billing).await, 403);

    // The agent on its own behalf: the route's full scopes, the right purpose, nobody behind it.
    let workload = [("intent-purpose", "support")];
    assert_eq!(crm_status(&agent, &workload).await, 403);
}
