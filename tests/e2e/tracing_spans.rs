//! Request spans (docs/telemetry.md, "Request spans") as a real OTLP collector receives them:
//! three workloads, each an app behind its own hopgate exporting under its own `service.name`,
//! over OTLP gRPC and HTTP/protobuf, and the join between an audit line and its span. A
//! collector that is down or hangs is in `tracing_outage.rs`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::support::idp::Idp;
use crate::support::otlp::{OtlpReceiver, ReceivedSpan, telemetry};
use crate::support::proxy::POLICY_SCHEMA;
use crate::support::workload::{Workload, Workloads, workload_id};

/// How long spans may take to reach the receiver (they are batched for up to 200 ms).
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// agent (client only, trusting the IdP) → inference → crm, each exporting spans to `endpoint`
/// under its own name; crm gets `crm_policies` when there are any.
async fn traced_chain(
    mesh: &Workloads,
    idp: &Idp,
    endpoint: &str,
    protocol: &str,
    crm_policies: &[(&str, &str)],
) -> (Workload, Workload, Workload) {
    idp.write_jwks(mesh.dir.path());
    let mut crm = mesh
        .workload("crm")
        .top_yaml(&telemetry("crm", endpoint, protocol));
    for (file, content) in crm_policies {
        crm = crm.policy(file, content);
    }
    let crm = crm.start().await;
    let inference = mesh
        .workload("inference")
        .route("crm.tools", &crm, &["read_ticket", "write_ticket"])
        .top_yaml(&telemetry("inference", endpoint, protocol))
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route(
            "inference.ml",
            &inference,
            &["generate", "read_ticket", "write_ticket"],
        )
        .top_yaml(&Idp::token_yaml("jwks.json"))
        .top_yaml(&telemetry("agent", endpoint, protocol))
        .start()
        .await;
    (agent, inference, crm)
}

/// The four spans of one call agent → inference → crm.
struct ChainSpans {
    agent_out: ReceivedSpan,
    inference_in: ReceivedSpan,
    inference_out: ReceivedSpan,
    crm_in: ReceivedSpan,
}

/// The one span of `spans` with this name about a hop to `dest` (its `hop.dest.id`).
fn one(spans: &[ReceivedSpan], name: &str, dest: &Workload) -> ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == name && s.str_attr("hop.dest.id") == Some(dest.id.as_str()))
        .collect();
    assert_eq!(found.len(), 1, "one {name} to {} in {spans:#?}", dest.id);
    found[0].clone()
}

/// Each sidecar exports under its own `telemetry.service_name` (the resource's `service.name`).
fn assert_services(expected: &[(&ReceivedSpan, &str)]) {
    let got: Vec<(&str, &str, &str)> = expected
        .iter()
        .map(|(span, _)| {
            (
                span.name.as_str(),
                span.span_id.as_str(),
                span.service.as_str(),
            )
        })
        .collect();
    let want: Vec<(&str, &str, &str)> = expected
        .iter()
        .map(|(span, service)| (span.name.as_str(), span.span_id.as_str(), *service))
        .collect();
    assert_eq!(got, want, "the resource's service.name of each span");
}

/// `traceparent` as (trace id, parent span id), checking its shape.
fn traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00", "traceparent {value:?}");
    assert_eq!(parts[1].len(), 32, "traceparent {value:?}");
    assert_eq!(parts[2].len(), 16, "traceparent {value:?}");
    (parts[1].to_owned(), parts[2].to_owned())
}

fn b64_sha256(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

/// Alice asks the agent, which asks inference, which asks crm for `path`; both hops succeed.
async fn alice_calls_through_the_chain(agent: &Workload, idp: &Idp, path: &str) {
    let alice = idp.token("alice", "generate read_ticket");
    let reply = agent
        .call(
            "inference.ml",
            path,
            &[
                ("authorization", &format!("Bearer {alice}")),
                ("x-next", "crm.tools"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    assert_eq!(reply["downstream"]["status"], 200, "{reply}");
}

/// The structure every exported chain must have, whatever the protocol: four spans of one
/// trace, each the child of the one before, each naming its hop, the same `txn` and end user.
fn assert_chain(
    spans: &[ReceivedSpan],
    path: &str,
    (agent, inference, crm): (&Workload, &Workload, &Workload),
) -> ChainSpans {
    let spans: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.str_attr("url.path") == Some(path))
        .cloned()
        .collect();
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let chain = ChainSpans {
        agent_out: one(&spans, "hopgate.outbound", inference),
        inference_in: one(&spans, "hopgate.inbound", inference),
        inference_out: one(&spans, "hopgate.outbound", crm),
        crm_in: one(&spans, "hopgate.inbound", crm),
    };
    let ChainSpans {
        agent_out,
        inference_in,
        inference_out,
        crm_in,
    } = &chain;

    // One trace, each span the child of the one before it.
    let trace_id = &agent_out.trace_id;
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, &"0".repeat(32));
    for span in [agent_out, inference_in, inference_out, crm_in] {
        assert_eq!(&span.trace_id, trace_id, "{span:#?}");
        assert_eq!(span.span_id.len(), 16, "{span:#?}");
    }
    assert_eq!(
        agent_out.parent_span_id, "",
        "the app sent no traceparent: a new trace"
    );
    assert_eq!(inference_in.parent_span_id, agent_out.span_id);
    assert_eq!(
        inference_out.parent_span_id, inference_in.span_id,
        "inference's app relayed the traceparent its sidecar gave it"
    );
    assert_eq!(crm_in.parent_span_id, inference_out.span_id);

    // Kinds and the HTTP attributes.
    for span in [agent_out, inference_out] {
        assert_eq!(span.kind, "client", "{span:#?}");
        assert_eq!(
            span.str_attr("hop.direction"),
            Some("outbound"),
            "{span:#?}"
        );
        assert_eq!(
            span.str_attr("network.protocol.version"),
            Some("1.1"),
            "app → sidecar is plain HTTP/1.1: {span:#?}"
        );
    }
    for span in [inference_in, crm_in] {
        assert_eq!(span.kind, "server", "{span:#?}");
        assert_eq!(span.str_attr("hop.direction"), Some("inbound"), "{span:#?}");
        assert_eq!(
            span.str_attr("network.protocol.version"),
            Some("2"),
            "sidecar → sidecar is h2: {span:#?}"
        );
    }
    for span in [agent_out, inference_in, inference_out, crm_in] {
        assert_eq!(
            span.str_attr("http.request.method"),
            Some("GET"),
            "{span:#?}"
        );
        assert_eq!(
            span.int_attr("http.response.status_code"),
            Some(200),
            "{span:#?}"
        );
        assert_eq!(span.str_attr("hop.decision"), Some("allow"), "{span:#?}");
        assert_eq!(span.str_attr("enduser.id"), Some("alice"), "{span:#?}");
    }
    assert_eq!(agent_out.str_attr("server.address"), Some("inference.ml"));
    assert_eq!(inference_out.str_attr("server.address"), Some("crm.tools"));

    // The same transaction everywhere.
    let txn = agent_out.str_attr("hop.txn").expect("hop.txn");
    assert!(!txn.is_empty());
    for span in [inference_in, inference_out, crm_in] {
        assert_eq!(span.str_attr("hop.txn"), Some(txn), "{span:#?}");
    }

    // Who called whom, and the chain so far: origin first, current peer last.
    let hops = [
        (agent_out, agent, inference, vec![agent.id.clone()]),
        (inference_in, agent, inference, vec![agent.id.clone()]),
        (
            inference_out,
            inference,
            crm,
            vec![agent.id.clone(), inference.id.clone()],
        ),
        (
            crm_in,
            inference,
            crm,
            vec![agent.id.clone(), inference.id.clone()],
        ),
    ];
    for (span, peer, dest, chain) in hops {
        assert_eq!(
            span.str_attr("hop.peer.id"),
            Some(peer.id.as_str()),
            "{span:#?}"
        );
        assert_eq!(
            span.str_attr("hop.dest.id"),
            Some(dest.id.as_str()),
            "{span:#?}"
        );
        assert_eq!(
            span.int_attr("hop.chain.depth"),
            Some(chain.len() as i64),
            "{span:#?}"
        );
        assert_eq!(span.array_attr("hop.chain"), Some(chain), "{span:#?}");
    }

    // Each hop's token: minted by the outbound side, verified by the inbound side.
    let jti = |s: &ReceivedSpan| {
        s.str_attr("hop.token.jti")
            .expect("hop.token.jti")
            .to_owned()
    };
    assert_eq!(jti(agent_out), jti(inference_in));
    assert_eq!(jti(inference_out), jti(crm_in));
    assert_ne!(jti(agent_out), jti(crm_in), "a new token per hop");
    assert_eq!(
        agent_out.str_attr("hop.token.prv"),
        None,
        "the first hop has no parent"
    );
    assert_eq!(inference_in.str_attr("hop.token.prv"), None);

    assert_services(&[
        (agent_out, "agent"),
        (inference_in, "inference"),
        (inference_out, "inference"),
        (crm_in, "crm"),
    ]);
    chain
}

#[tokio::test]
async fn a_delegated_call_across_three_sidecars_is_one_trace_of_parent_linked_spans() {
    let receiver = OtlpReceiver::grpc().await;
    let mesh = Workloads::new();
    let idp = Idp::new();
    let (agent, inference, crm) =
        traced_chain(&mesh, &idp, &receiver.endpoint(), "grpc", &[]).await;

    alice_calls_through_the_chain(&agent, &idp, "/tickets/42").await;
    let spans = receiver.wait_for(4, WAIT).await;
    let chain = assert_chain(&spans, "/tickets/42", (&agent, &inference, &crm));

    // The second hop's token names the first as its parent (`prv`), on both sides.
    let first_token = inference.app.received()[0].headers["hop-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let prv = b64_sha256(first_token.as_bytes());
    assert_eq!(
        chain.inference_out.str_attr("hop.token.prv"),
        Some(prv.as_str())
    );
    assert_eq!(chain.crm_in.str_attr("hop.token.prv"), Some(prv.as_str()));

    // Each app's request carried a traceparent naming its sidecar's inbound span as parent.
    for (app, inbound) in [(&inference, &chain.inference_in), (&crm, &chain.crm_in)] {
        let received = app.app.received();
        let header = received[0].headers["traceparent"].to_str().unwrap();
        let (trace_id, parent) = traceparent(header);
        assert_eq!(trace_id, inbound.trace_id);
        assert_eq!(parent, inbound.span_id, "{header}");
    }
    // The trace was gRPC end to end, one service per sidecar.
    let calls = receiver.calls();
    assert!(calls.iter().all(|c| c.transport == "grpc"), "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.content_type.starts_with("application/grpc")),
        "{calls:?}"
    );

    // A request without a traceparent starts a trace of its own.
    let reply = agent.call("inference.ml", "/fresh", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let spans = receiver
        .wait_until(WAIT, |spans| {
            spans
                .iter()
                .filter(|s| s.str_attr("url.path") == Some("/fresh"))
                .count()
                >= 2
        })
        .await;
    let fresh: Vec<ReceivedSpan> = spans
        .into_iter()
        .filter(|s| s.str_attr("url.path") == Some("/fresh"))
        .collect();
    let fresh_out = one(&fresh, "hopgate.outbound", &inference);
    let fresh_in = one(&fresh, "hopgate.inbound", &inference);
    assert_eq!(fresh_out.parent_span_id, "");
    assert_ne!(fresh_out.trace_id, chain.agent_out.trace_id, "a new trace");
    assert_eq!(fresh_in.trace_id, fresh_out.trace_id);
    assert_eq!(fresh_in.parent_span_id, fresh_out.span_id);
    // Without an end user the workload is the origin, and the chain's only member.
    assert_eq!(fresh_out.str_attr("enduser.id"), Some(agent.id.as_str()));
    assert_eq!(
        fresh_out.array_attr("hop.chain"),
        Some(vec![agent.id.clone()])
    );
    assert_eq!(
        fresh_in.array_attr("hop.chain"),
        Some(vec![agent.id.clone()])
    );

    // A request with a traceparent continues the caller's trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let reply = agent
        .call(
            "inference.ml",
            "/continued",
            &[(
                "traceparent",
                &format!("00-{caller_trace}-{caller_span}-01"),
            )],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let continued = receiver.wait_for_trace(caller_trace, 2, WAIT).await;
    let continued_out = one(&continued, "hopgate.outbound", &inference);
    let continued_in = one(&continued, "hopgate.inbound", &inference);
    assert_eq!(continued_out.parent_span_id, caller_span);
    assert_ne!(continued_out.span_id, caller_span);
    assert_eq!(continued_in.parent_span_id, continued_out.span_id);
    assert_eq!(continued_out.str_attr("url.path"), Some("/continued"));
    // The app behind inference sees the inbound span as its parent, in the caller's trace.
    let received = inference.app.received();
    let last = received.last().unwrap();
    assert_eq!(last.path, "/continued");
    let (trace_id, parent) = traceparent(last.headers["traceparent"].to_str().unwrap());
    assert_eq!(trace_id, caller_trace);
    assert_eq!(parent, continued_in.span_id);

    // Nothing else was exported: 4 + 2 + 2 spans, all from these three services.
    let all = receiver.spans();
    assert_eq!(all.len(), 8, "{all:#?}");
}

#[tokio::test]
async fn the_same_chain_exported_over_http_protobuf_has_the_same_structure() {
    let receiver = OtlpReceiver::http().await;
    let mesh = Workloads::new();
    let idp = Idp::new();
    let (agent, inference, crm) =
        traced_chain(&mesh, &idp, &receiver.endpoint(), "http", &[]).await;

    alice_calls_through_the_chain(&agent, &idp, "/tickets/7").await;
    let spans = receiver.wait_for(4, WAIT).await;
    let chain = assert_chain(&spans, "/tickets/7", (&agent, &inference, &crm));
    let first_token = inference.app.received()[0].headers["hop-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        chain.crm_in.str_attr("hop.token.prv"),
        Some(b64_sha256(first_token.as_bytes()).as_str())
    );

    let calls = receiver.calls();
    assert!(!calls.is_empty());
    for call in &calls {
        assert_eq!(call.transport, "http", "{calls:?}");
        assert_eq!(call.path, "/v1/traces", "{calls:?}");
        assert_eq!(call.content_type, "application/x-protobuf", "{calls:?}");
    }
}

// === audit ↔ span ===

#[tokio::test]
async fn an_audit_line_and_its_span_share_the_decision_id_and_trace_id() {
    let receiver = OtlpReceiver::grpc().await;
    let mesh = Workloads::new();
    let idp = Idp::new();
    let policies = format!(
        r#"@id("inference-reads-tickets")
permit (principal == Hop::Workload::"{inference}", action == Hop::Action::"read_ticket", resource == Hop::Workload::"{crm}");

@id("no-ticket-writes")
forbid (principal, action == Hop::Action::"write_ticket", resource);
"#,
        inference = workload_id("inference"),
        crm = workload_id("crm"),
    );
    let (agent, inference, crm) = traced_chain(
        &mesh,
        &idp,
        &receiver.endpoint(),
        "grpc",
        &[
            ("schema.cedarschema", POLICY_SCHEMA),
            ("crm.cedar", &policies),
        ],
    )
    .await;
    let alice = idp.token("alice", "generate read_ticket write_ticket");
    let bearer = format!("Bearer {alice}");

    // inference asks crm to write: denied by crm's forbid.
    let reply = agent
        .call(
            "inference.ml",
            "/tickets/9",
            &[
                ("authorization", &bearer),
                ("x-next", "crm.tools"),
                ("x-next-action", "write_ticket"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = reply.json();
    assert_eq!(reply["downstream"]["status"], 403, "{reply}");
    let decision_id = reply["downstream"]["body"]["decision_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no decision_id in {reply}"))
        .to_owned();
    assert!(
        crm.app.received().is_empty(),
        "the denied call never reached crm's app"
    );

    // Exactly one audit line carries the denial's decision id.
    let audit = crm.audit_records();
    let lines: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["decision_id"] == decision_id.as_str())
        .collect();
    assert_eq!(lines.len(), 1, "{audit:#?}");
    let record = lines[0];
    assert_eq!(record["effect"], "deny", "{record}");
    assert_eq!(record["direction"], "inbound", "{record}");
    assert_eq!(
        record["policies"],
        serde_json::json!(["no-ticket-writes"]),
        "{record}"
    );
    let audit_trace = record["trace_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no trace_id in {record}"));

    // The span carrying that decision id is crm's inbound span, in the audit line's trace.
    let spans = receiver
        .wait_until(WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.str_attr("hop.decision.id") == Some(decision_id.as_str()))
        })
        .await;
    let decided: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.str_attr("hop.decision.id") == Some(decision_id.as_str()))
        .collect();
    assert_eq!(decided.len(), 1, "{spans:#?}");
    let span = decided[0];
    assert_eq!(span.name, "hopgate.inbound", "{span:#?}");
    assert_eq!(
        span.str_attr("hop.dest.id"),
        Some(crm.id.as_str()),
        "{span:#?}"
    );
    assert_eq!(span.trace_id, audit_trace, "{span:#?}\n{record}");
    assert_eq!(span.str_attr("hop.decision"), Some("deny"), "{span:#?}");
    assert_eq!(
        span.array_attr("hop.policy.ids"),
        Some(vec!["no-ticket-writes".to_owned()]),
        "{span:#?}"
    );
    assert_eq!(
        span.str_attr("hop.intent.action"),
        Some("write_ticket"),
        "{span:#?}"
    );
    assert_eq!(
        span.int_attr("http.response.status_code"),
        Some(403),
        "{span:#?}"
    );
    assert_eq!(record["txn"].as_str(), span.str_attr("hop.txn"), "{record}");
    assert_eq!(
        record["token_jti"].as_str(),
        span.str_attr("hop.token.jti"),
        "{record}"
    );
    // ...and that trace is the whole call, begun at the agent.
    let trace = receiver.wait_for_trace(audit_trace, 4, WAIT).await;
    let agent_out = one(&trace, "hopgate.outbound", &inference);
    assert_eq!(agent_out.parent_span_id, "");
    let inference_out = one(&trace, "hopgate.outbound", &crm);
    assert_eq!(span.parent_span_id, inference_out.span_id);
    assert_services(&[
        (span, "crm"),
        (&agent_out, "agent"),
        (&inference_out, "inference"),
    ]);

    // An allowed read: its own audit line and span, joined the same way.
    let reply = agent
        .call(
            "inference.ml",
            "/tickets/10",
            &[
                ("authorization", &bearer),
                ("x-next", "crm.tools"),
                ("x-next-action", "read_ticket"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["downstream"]["status"], 200, "{}", reply.body);
    let audit = crm.audit_records();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    let allowed = &audit[1];
    assert_eq!(allowed["effect"], "allow", "{allowed}");
    let allowed_id = allowed["decision_id"].as_str().unwrap();
    assert_ne!(allowed_id, decision_id);
    let spans = receiver
        .wait_until(WAIT, |spans| {
            spans
                .iter()
                .any(|s| s.str_attr("hop.decision.id") == Some(allowed_id))
        })
        .await;
    let span = spans
        .iter()
        .find(|s| s.str_attr("hop.decision.id") == Some(allowed_id))
        .unwrap();
    assert_eq!(span.name, "hopgate.inbound", "{span:#?}");
    assert_eq!(
        span.str_attr("hop.dest.id"),
        Some(crm.id.as_str()),
        "{span:#?}"
    );
    assert_eq!(Some(span.trace_id.as_str()), allowed["trace_id"].as_str());
    assert_ne!(span.trace_id, audit_trace, "a new call, a new trace");
    assert_eq!(span.str_attr("hop.decision"), Some("allow"));
    assert_eq!(
        span.array_attr("hop.policy.ids"),
        Some(vec!["inference-reads-tickets".to_owned()])
    );
    assert_eq!(span.str_attr("hop.intent.action"), Some("read_ticket"));
}
