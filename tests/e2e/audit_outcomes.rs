//! One audit record per request, on every side, whatever happened (docs/telemetry.md, "Audit
//! records"): identity-only admits, 400, 401, 403 `no_route`, 502, and a policy deny, each
//! with its effect, reason and status, and a decision id that is also in the span's
//! `hop.decision.id` and in the body of a 401 or 403.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::client::{Client, Proto};
use crate::support::eventually::eventually;
use crate::support::otlp::{OtlpReceiver, ReceivedSpan, telemetry};
use crate::support::proxy::POLICY_SCHEMA;
use crate::support::workload::{RouteSpec, Workload, Workloads, workload_id};

/// The one record of `workload` with this status, checked for the fields every record has.
fn record_with_status(workload: &Workload, status: u16) -> Value {
    let records: Vec<Value> = workload
        .audit_records()
        .into_iter()
        .filter(|r| r["status"] == status)
        .collect();
    let [record] = &records[..] else {
        panic!("one record with status {status}: {records:#?}")
    };
    assert_eq!(record["target"], "hopgate::audit");
    assert_eq!(record["decision_id"].as_str().map(str::len), Some(36));
    assert!(record["duration_us"].is_u64(), "{record}");
    assert!(record["client_addr"].is_string(), "{record}");
    record.clone()
}

/// The span whose `hop.decision.id` is `id`.
async fn span_of(receiver: &OtlpReceiver, id: &Value) -> ReceivedSpan {
    let id = id.as_str().unwrap().to_owned();
    eventually(Duration::from_secs(5), "the span of the record", || {
        let spans = receiver.spans();
        let id = id.clone();
        async move {
            spans
                .into_iter()
                .find(|s| s.str_attr("hop.decision.id") == Some(id.as_str()))
        }
    })
    .await
}

#[tokio::test]
async fn every_outcome_on_the_outbound_side_has_one_record_with_its_effect_reason_and_status() {
    let receiver = OtlpReceiver::grpc().await;
    let mesh = Workloads::new();
    let crm = mesh
        .workload("crm")
        .top_yaml(&telemetry("crm", &receiver.endpoint(), "grpc"))
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("crm.tools", &crm, &[])
        .route_spec(RouteSpec {
            host: "down.tools".to_owned(),
            // Nothing listens on port 1.
            address: "127.0.0.1:1".to_owned(),
            identity: crm.id.clone(),
            scopes: Vec::new(),
            original_dst: None,
        })
        .top_yaml(&telemetry("agent", &receiver.endpoint(), "grpc"))
        .start()
        .await;

    // Identity-only, both sides: an admit on each, sharing the token.
    assert_eq!(agent.call("crm.tools", "/ok", &[]).await.status, 200);
    let sent = record_with_status(&agent, 200);
    let got = record_with_status(&crm, 200);
    assert_eq!(
        (sent["effect"].clone(), got["effect"].clone()),
        (json!("allow"), json!("allow"))
    );
    assert_eq!(sent["token_hash"], got["token_hash"]);
    assert_eq!(sent["txn"], got["txn"]);
    assert_eq!(got["principal"], json!(agent.id));
    assert_eq!(got["path"], "/ok");
    assert_eq!(sent["route"], "crm.tools");
    let span = span_of(&receiver, &got["decision_id"]).await;
    assert_eq!(span.name, "hopgate.inbound");
    assert_eq!(span.str_attr("hop.decision"), Some("allow"));
    // A server span by the HTTP conventions: who called, over what, and no error on a 200.
    assert_eq!((span.kind, span.status), ("server", "unset"));
    assert_eq!(span.str_attr("url.scheme"), Some("https"));
    assert_eq!(span.str_attr("client.address"), Some("127.0.0.1"));
    assert_eq!(span.str_attr("server.address"), Some("crm.tools"));
    assert_eq!(span.str_attr("url.path"), Some("/ok"));
    assert_eq!(span.int_attr("http.response.status_code"), Some(200));
    assert_eq!(span.str_attr("error.type"), None);
    let sent_span = span_of(&receiver, &sent["decision_id"]).await;
    assert_eq!(
        (sent_span.name.as_str(), sent_span.kind, sent_span.status),
        ("hopgate.outbound", "client", "unset")
    );
    assert_eq!(sent_span.str_attr("server.address"), Some("crm.tools"));

    // No route: 403, no resource, no token.
    assert_eq!(agent.call("nowhere.example", "/", &[]).await.status, 403);
    let no_route = record_with_status(&agent, 403);
    assert_eq!(no_route["effect"], "no_route");
    assert_eq!(no_route["reason"], "no_route");
    assert_eq!(no_route["host"], "nowhere.example");
    assert!(no_route["resource"].is_null() && no_route["token_hash"].is_null());
    let span = span_of(&receiver, &no_route["decision_id"]).await;
    assert_eq!(span.str_attr("hop.reason"), Some("no_route"));

    // The destination is down: 502, after the token was minted.
    assert_eq!(agent.call("down.tools", "/", &[]).await.status, 502);
    let down = record_with_status(&agent, 502);
    assert_eq!(down["effect"], "error");
    assert_eq!(down["reason"], "upstream_unavailable");
    assert_eq!(down["route"], "down.tools");
    assert!(down["token_hash"].is_string(), "{down}");
    // A client span is an error on a 5xx hopgate answered itself, typed by its reason.
    let span = span_of(&receiver, &down["decision_id"]).await;
    assert_eq!((span.kind, span.status), ("client", "error"));
    assert_eq!(span.str_attr("error.type"), Some("upstream_unavailable"));
    assert_eq!(span.int_attr("http.response.status_code"), Some(502));

    // A path the app could resolve differently: 400.
    assert_eq!(agent.call("crm.tools", "/a/../b", &[]).await.status, 400);
    let bad = record_with_status(&agent, 400);
    assert_eq!(bad["effect"], "bad_request");
    assert_eq!(bad["reason"], "path");
    assert_eq!(bad["path"], "/a/../b");

    // A relayed parent this sidecar never accepted: 401, its decision id in the body.
    let reply = agent
        .call("crm.tools", "/", &[("hop-token", "not.a.token")])
        .await;
    assert_eq!(reply.status, 401);
    let unauthenticated = record_with_status(&agent, 401);
    assert_eq!(unauthenticated["effect"], "unauthenticated");
    assert_eq!(reply.json()["decision_id"], unauthenticated["decision_id"]);
    assert_eq!(reply.json()["reason"], unauthenticated["reason"]);
    let span = span_of(&receiver, &unauthenticated["decision_id"]).await;
    assert_eq!(span.str_attr("hop.decision"), Some("unauthenticated"));
    assert_eq!(
        span.str_attr("hop.reason"),
        unauthenticated["reason"].as_str()
    );
    assert_eq!(agent.audit_records().len(), 5, "one record per request");
}

#[tokio::test]
async fn a_bad_token_and_a_policy_deny_on_the_inbound_side_have_one_record_each() {
    let receiver = OtlpReceiver::grpc().await;
    let mesh = Workloads::new();
    let crm = mesh
        .workload("crm")
        .policy("schema.cedarschema", POLICY_SCHEMA)
        .policy(
            "crm.cedar",
            r#"@id("public-only")
permit (principal, action, resource) when { context.http.path like "/public/*" };
"#,
        )
        .top_yaml(&telemetry("crm", &receiver.endpoint(), "grpc"))
        .start()
        .await;
    let caller = mesh.ca.leaf(&workload_id("agent")).build();
    let client = Client::with_svid(&caller.chain_pem, &caller.key_pem, Proto::H2);
    let inbound = crm.inbound.unwrap();

    let reply = client
        .get(inbound, "/", &[("hop-token", "not-a-token")])
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    let record = record_with_status(&crm, 401);
    assert_eq!(record["effect"], "unauthenticated");
    assert_eq!(record["reason"], "malformed");
    assert_eq!(record["principal"], json!(workload_id("agent")));
    assert_eq!(record["resource"], json!(crm.id));
    assert_eq!(reply.json()["decision_id"], record["decision_id"]);
    let span = span_of(&receiver, &record["decision_id"]).await;
    assert_eq!(span.str_attr("hop.reason"), Some("malformed"));
    assert_eq!(span.str_attr("hop.decision"), Some("unauthenticated"));
    // A 4xx is the client's fault: not an error on a server span, and no error.type.
    assert_eq!((span.kind, span.status), ("server", "unset"));
    assert_eq!(span.int_attr("http.response.status_code"), Some(401));
    assert_eq!(span.str_attr("error.type"), None);
    assert_eq!(span.str_attr("network.protocol.version"), Some("2"));

    let reply = client.get(inbound, "/private", &[]).await.unwrap();
    assert_eq!(reply.status, 403);
    let record = record_with_status(&crm, 403);
    assert_eq!(record["effect"], "deny");
    assert_eq!(record["reason"], "no_permit");
    assert_eq!(record["action"], "call");
    assert_eq!(record["path"], "/private");
    assert_eq!(reply.json()["decision_id"], record["decision_id"]);
    let span = span_of(&receiver, &record["decision_id"]).await;
    assert_eq!(span.str_attr("hop.decision"), Some("deny"));
    assert_eq!(span.str_attr("hop.reason"), Some("no_permit"));
    assert_eq!(crm.audit_records().len(), 2);
}
