//! DNS names in addresses: `outbound.routes[].address` and `inbound.app` may name their host,
//! resolved by the system resolver (here `localhost`, from the hosts file), and a name that does
//! not resolve fails the request it was needed for, never the start-up. Moving a name to another
//! address while the sidecars run needs a hosts file of its own: tests/system/mesh.rs does that.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::otlp::OtlpReceiver;
use crate::support::otlp::telemetry;
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;
use crate::support::workload::{RouteSpec, Workloads, workload_id};

/// A name that never resolves (RFC 6761 reserves `.invalid`).
const NOWHERE: &str = "hopgate-nowhere.invalid";

fn route(host: &str, address: String, identity: String) -> RouteSpec {
    RouteSpec {
        host: host.to_owned(),
        address,
        identity,
        scopes: vec![],
        original_dst: None,
    }
}

#[tokio::test]
async fn a_route_and_an_app_named_by_dns_names_are_resolved_and_reached() {
    let mesh = Workloads::new();
    let crm = mesh.workload("crm").app_by_name().start().await;
    let port = crm.inbound.unwrap().port();
    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route(
            "crm.tools",
            format!("localhost:{port}"),
            crm.id.clone(),
        ))
        .start()
        .await;

    for i in 0..3 {
        let reply = agent.call("crm.tools", &format!("/tickets/{i}"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let received = crm.app.received();
    assert_eq!(
        received.len(),
        3,
        "every call reached crm's app through both names"
    );
    // The app sees the authority the caller used, not the name its sidecar dialled.
    assert_eq!(received[0].headers["host"], "crm.tools");
}

#[tokio::test]
async fn a_name_still_names_a_workload_that_must_prove_the_routes_identity() {
    let mesh = Workloads::new();
    let crm = mesh.workload("crm").start().await;
    let port = crm.inbound.unwrap().port();
    // `localhost` does lead to crm's sidecar, but the route expects someone else there.
    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route(
            "crm.tools",
            format!("localhost:{port}"),
            workload_id("crm-v2"),
        ))
        .start()
        .await;
    let reply = agent.call("crm.tools", "/tickets/1", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.json(), json!({ "error": "upstream_unavailable" }));
    assert!(crm.app.received().is_empty(), "nothing crossed");
}

#[tokio::test]
async fn a_route_whose_name_does_not_resolve_is_502_with_a_log_line_naming_it() {
    let mesh = Workloads::new();
    let address = format!("{NOWHERE}:15006");
    // The real binary, to read its log; it starts although the name does not resolve.
    let config = mesh
        .workload("agent")
        .route_spec(route("crm.tools", address.clone(), workload_id("crm")))
        .write(Upstream::closed_addr().await);
    let mut sidecar = Sidecar::start(&config).await;
    let outbound = sidecar.outbound.expect("an outbound listener");

    for _ in 0..2 {
        let reply =
            crate::support::workload::plain_request(outbound, "GET", "crm.tools", "/", &[]).await;
        assert_eq!(reply.status, 502, "{}", reply.body);
        assert_eq!(reply.json(), json!({ "error": "upstream_unavailable" }));
    }
    // One line per request: wait for both, since the second may still be on its way.
    for _ in 0..2 {
        sidecar
            .wait_for_log("cannot connect to the destination sidecar")
            .await;
    }
    let lines: Vec<Value> = sidecar
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "cannot connect to the destination sidecar")
        .collect();
    assert_eq!(lines.len(), 2, "one line per failed request: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["route.host"], "crm.tools", "{line}");
    assert_eq!(line["route.address"], address, "{line}");
    let error = line["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("`{address}` does not resolve: ")),
        "{error}"
    );
    // The resolver's own report, once, however many requests fail.
    let resolver = sidecar
        .printed()
        .to_string()
        .matches("name does not resolve; connections to it fail until it does")
        .count();
    assert_eq!(resolver, 1, "{}", sidecar.printed());
}

#[tokio::test]
async fn an_app_name_that_does_not_resolve_is_502_for_the_request_and_the_sidecar_is_ready() {
    let mesh = Workloads::new();
    let crm_config = mesh.workload("crm").write(Upstream::closed_addr().await);
    // Point `inbound.app` at a name that does not resolve.
    let yaml = std::fs::read_to_string(&crm_config).unwrap();
    let app_line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("app: "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &crm_config,
        yaml.replace(&app_line, &format!("  app: {NOWHERE}:8080")),
    )
    .unwrap();
    let mut crm = Sidecar::start(&crm_config).await;
    let (status, body) = crate::support::proxy::admin_get(crm.admin, "/ready").await;
    assert_eq!(
        status, 200,
        "ready although its app's name does not resolve: {body}"
    );

    let agent = mesh
        .workload("agent")
        .client_only()
        .route_spec(route(
            "crm.tools",
            crm.inbound.to_string(),
            workload_id("crm"),
        ))
        .start()
        .await;
    let reply = agent.call("crm.tools", "/tickets/1", &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    crm.wait_for_log("cannot reach the local app").await;
    assert!(
        crm.printed()
            .to_string()
            .contains(&format!("{NOWHERE}:8080")),
        "{}",
        crm.printed()
    );
}

#[tokio::test]
async fn an_otlp_endpoint_named_by_a_dns_name_receives_the_spans_over_grpc_and_http() {
    let mesh = Workloads::new();
    let grpc = OtlpReceiver::grpc().await;
    let http = OtlpReceiver::http().await;
    let named = |receiver: &OtlpReceiver| {
        receiver
            .endpoint()
            .replace("http://127.0.0.1:", "http://localhost:")
    };
    let crm = mesh
        .workload("crm")
        .top_yaml(&telemetry("crm", &named(&http), "http"))
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("crm.tools", &crm, &[])
        .top_yaml(&telemetry("agent", &named(&grpc), "grpc"))
        .start()
        .await;
    let reply = agent.call("crm.tools", "/tickets/1", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    for receiver in [&grpc, &http] {
        receiver
            .wait_until(Duration::from_secs(10), |spans| !spans.is_empty())
            .await;
    }
}
