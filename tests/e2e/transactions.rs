//! One `txn` per transaction through the real stack (CHA-06, CHA-07): the agent's app calls
//! crm through its sidecar; calls without a `traceparent` are transactions of their own, calls
//! of one trace are one.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::outbound::claims;
use crate::support::workload::Workloads;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn calls_without_a_traceparent_are_each_a_transaction_and_calls_of_one_trace_share_one() {
    let mesh = Workloads::new();
    let crm = mesh.workload("crm").start().await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("crm.tools", &crm, &[])
        .start()
        .await;
    for _ in 0..3 {
        assert_eq!(agent.call("crm.tools", "/", &[]).await.status, 200);
    }
    for _ in 0..3 {
        let traced = [("traceparent", TRACEPARENT)];
        assert_eq!(agent.call("crm.tools", "/", &traced).await.status, 200);
    }
    let seen: Vec<Value> = crm
        .app
        .received()
        .iter()
        .map(|r| claims(r.headers["hop-token"].to_str().unwrap()))
        .collect();
    let (untraced, traced) = seen.split_at(3);
    let txns = |claims: &[Value]| -> BTreeSet<String> {
        claims
            .iter()
            .map(|c| c["txn"].as_str().unwrap().to_owned())
            .collect()
    };
    let jtis: BTreeSet<&str> = untraced
        .iter()
        .map(|c| c["jti"].as_str().unwrap())
        .collect();
    assert_eq!(
        txns(untraced).len(),
        3,
        "CHA-06: three calls, three transactions"
    );
    assert_eq!(jtis.len(), 3, "and three tokens");
    assert_eq!(txns(traced).len(), 1, "CHA-07: one trace, one transaction");
    assert!(txns(untraced).is_disjoint(&txns(traced)));
}
