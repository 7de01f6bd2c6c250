//! The audit log of the real binary: one JSON line per decision on stdout, target
//! `hopgate::audit`, tied to the 403 by its decision id and to the trace by the caller's
//! `traceparent`, and never holding a header value (TEL-01 in docs/security.md).
//!
//! The binary runs as a child process on a config with port 0; its ports are read from the
//! `"message":"listening"` log lines on stdout (as in `shutdown.rs`).

use http::StatusCode;

use crate::policy::{PERMIT_EXAMPLE_ORG, assert_forbidden, id};
use crate::support::client::Proto;
use crate::support::proxy::{Mesh, POLICY_SCHEMA, POLICY_YAML, SERVER_ID};
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Header values that must never reach a log line.
const CANARY_AUTHORIZATION: &str = "Bearer canary-7f3a9c-authorization";
const CANARY_HEADER: &str = "canary-51d2e8-custom-header";
const CANARY_XFCC: &str = "By=spiffe://example.org/ns/evil/sa/x;Hash=canary0badc0ffee;URI=spiffe://example.org/ns/evil/sa/y";
const CANARY_INTENT: &str = "canary-0e9b44-purpose";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_has_exactly_one_audit_line_carrying_its_decision_id_and_trace_id() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let forbid = format!(
        r#"@id("no-intruders")
forbid (principal == Hop::Workload::"{}", action, resource);
"#,
        id("intruder")
    );
    mesh.write_policies(&[
        ("schema.cedarschema", POLICY_SCHEMA),
        ("mesh.cedar", PERMIT_EXAMPLE_ORG),
        ("guards.cedar", &forbid),
    ]);
    let config = mesh.write_config(app.addr, "", POLICY_YAML);
    let sidecar = Sidecar::start(&config).await;

    let canaries = [
        ("authorization", CANARY_AUTHORIZATION),
        ("x-canary", CANARY_HEADER),
        ("x-forwarded-client-cert", CANARY_XFCC),
        ("intent-purpose", CANARY_INTENT),
        ("traceparent", TRACEPARENT),
    ];
    let reply = mesh
        .client("intruder", Proto::H2)
        .get(sidecar.inbound, "/denied", &canaries)
        .await
        .unwrap();
    let decision_id = assert_forbidden(&reply);
    // An admitted request next: its audit line comes after the denial's on the same stdout, so
    // once it is read every line about the denial is too. The app shows the XFCC value the
    // sidecar set, which must not be logged either.
    let reply = mesh
        .client("caller", Proto::H1)
        .get(sidecar.inbound, "/allowed", &canaries)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let xfcc = reply.json()["headers"]["x-forwarded-client-cert"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let hash = xfcc
        .split(';')
        .find_map(|part| part.strip_prefix("Hash="))
        .unwrap()
        .to_owned();
    let allowed = sidecar
        .wait_for_audit(|r| r["effect"] == "allow" && r["principal"] == id("caller").as_str())
        .await;
    assert_eq!(
        allowed["policies"],
        serde_json::json!(["example-org-callers"])
    );
    assert_eq!(allowed["trace_id"], TRACE_ID);

    let lines: Vec<serde_json::Value> = sidecar
        .audit_lines()
        .into_iter()
        .filter(|r| r["decision_id"] == decision_id.as_str())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one audit line per decision: {}",
        sidecar.output()
    );
    let record = &lines[0];
    assert_eq!(record["target"], "hopgate::audit");
    assert_eq!(record["effect"], "deny", "{record}");
    assert_eq!(record["mode"], "enforce", "{record}");
    assert_eq!(record["direction"], "inbound", "{record}");
    assert_eq!(record["principal"], id("intruder").as_str(), "{record}");
    assert_eq!(record["action"], "call", "{record}");
    assert_eq!(record["resource"], SERVER_ID, "{record}");
    assert_eq!(
        record["policies"],
        serde_json::json!(["no-intruders"]),
        "{record}"
    );
    assert_eq!(record["reason"], "forbidden", "{record}");
    assert_eq!(record["trace_id"], TRACE_ID, "{record}");
    assert_eq!(record["errors"], serde_json::json!([]), "{record}");
    assert_eq!(sidecar.audit_lines().len(), 2, "{}", sidecar.output());

    // TEL-01: no line of any kind holds a header value the caller sent or the XFCC set.
    let output = sidecar.output();
    for needle in [
        CANARY_AUTHORIZATION,
        "canary-7f3a9c",
        CANARY_HEADER,
        CANARY_XFCC,
        "canary0badc0ffee",
        CANARY_INTENT,
        xfcc.as_str(),
        hash.as_str(),
    ] {
        assert!(!output.contains(needle), "`{needle}` was logged:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_action_in_audit_mode_is_audit_deny_and_the_mode_shows_as_audit() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    mesh.write_policies(&[
        ("schema.cedarschema", POLICY_SCHEMA),
        ("mesh.cedar", PERMIT_EXAMPLE_ORG),
    ]);
    let config = mesh.write_config(app.addr, "  mode: audit\n", POLICY_YAML);
    let sidecar = Sidecar::start(&config).await;
    let reply = mesh
        .client("caller", Proto::H1)
        .get(
            sidecar.inbound,
            "/launch",
            &[("intent-action", "launch_missiles")],
        )
        .await
        .unwrap();
    // Audit mode: let through, recorded as a would-deny.
    assert_eq!(reply.status, StatusCode::OK);
    let record = sidecar.wait_for_audit(|_| true).await;
    assert_eq!(record["effect"], "audit_deny", "{record}");
    assert_eq!(record["mode"], "audit", "{record}");
    assert_eq!(record["action"], "launch_missiles", "{record}");
    assert_eq!(record["reason"], "unknown_action", "{record}");
    assert_eq!(record["policies"], serde_json::json!([]), "{record}");
    assert!(
        crate::policy::is_uuid_v4(record["decision_id"].as_str().unwrap()),
        "{record}"
    );
    assert!(
        record["trace_id"].is_null(),
        "no traceparent was sent: {record}"
    );
    // Operators see the mode everywhere they look: startup line, /ready, /policy.
    assert!(
        sidecar.logged("Cedar policies in audit mode"),
        "{}",
        sidecar.output()
    );
    assert!(!sidecar.logged("policies enforced"), "{}", sidecar.output());
    let (_, ready) = crate::support::proxy::admin_get(sidecar.admin, "/ready").await;
    assert!(ready.contains(r#""policy":"audit""#), "{ready}");
    let (_, policy) = crate::support::proxy::admin_get(sidecar.admin, "/policy").await;
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["policy"], "audit", "{policy}");
}

// === the binary as a child process ===
