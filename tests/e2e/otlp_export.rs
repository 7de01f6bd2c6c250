//! OTLP export as an OTel user configures it (docs/telemetry.md, "OTLP export"): headers and
//! gzip over both protocols, a 503 tried again, a collector whose certificate does not verify,
//! and the standard `OTEL_*` variables in place of the file's keys.

use std::time::Duration;

use crate::support::eventually::eventually;
use crate::support::otlp::{Attr, OtlpReceiver, collector_tls, telemetry_with};
use crate::support::pki::Ca;
use crate::support::workload::{Workload, Workloads};
use crate::tracing_outage::spans_dropped;
use crate::tracing_spans::WAIT;

/// A caller exporting as `telemetry` says, and the callee it calls (not traced).
async fn traced_caller(mesh: &Workloads, telemetry: &str) -> (Workload, Workload) {
    let callee = mesh.workload("callee").start().await;
    let caller = mesh
        .workload("caller")
        .client_only()
        .route("callee.svc", &callee, &["call"])
        .top_yaml(telemetry)
        .start()
        .await;
    (caller, callee)
}

async fn call(caller: &Workload) {
    let reply = caller.call("callee.svc", "/work", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn http_export_carries_the_configured_headers_and_a_gzip_body_the_collector_decodes() {
    let receiver = OtlpReceiver::http().await;
    let mesh = Workloads::new();
    let telemetry = telemetry_with(
        "caller",
        &receiver.endpoint(),
        "http",
        "compression: gzip, headers: { x-tenant: ml, Authorization: 'Bearer t0k' }",
    );
    let (caller, _callee) = traced_caller(&mesh, &telemetry).await;
    call(&caller).await;
    let spans = receiver.wait_for(1, WAIT).await;
    assert_eq!(spans[0].name, "hopgate.outbound");
    assert_eq!(spans[0].service, "caller");
    let call = &receiver.calls()[0];
    assert_eq!(call.path, "/v1/traces");
    assert_eq!(call.headers["content-encoding"], "gzip");
    assert_eq!(call.headers["x-tenant"], "ml");
    assert_eq!(call.headers["authorization"], "Bearer t0k");
}

#[tokio::test]
async fn grpc_export_carries_the_headers_as_metadata_and_is_gzip_compressed() {
    let receiver = OtlpReceiver::grpc().await;
    let mesh = Workloads::new();
    let telemetry = telemetry_with(
        "caller",
        &receiver.endpoint(),
        "grpc",
        "compression: gzip, headers: { x-tenant: ml }",
    );
    let (caller, _callee) = traced_caller(&mesh, &telemetry).await;
    call(&caller).await;
    let spans = receiver.wait_for(1, WAIT).await;
    assert_eq!(spans[0].name, "hopgate.outbound");
    let call = &receiver.calls()[0];
    assert_eq!(call.headers["grpc-encoding"], "gzip");
    assert_eq!(call.headers["x-tenant"], "ml");
    assert_eq!(call.content_type, "application/grpc");
}

#[tokio::test]
async fn an_export_answered_503_or_unavailable_is_tried_again_and_nothing_is_dropped() {
    for (receiver, protocol) in [
        (OtlpReceiver::http().await, "http"),
        (OtlpReceiver::grpc().await, "grpc"),
    ] {
        receiver.fail_next(2);
        let mesh = Workloads::new();
        let telemetry = telemetry_with("caller", &receiver.endpoint(), protocol, "");
        let (caller, _callee) = traced_caller(&mesh, &telemetry).await;
        call(&caller).await;
        let spans = receiver.wait_for(1, WAIT).await;
        assert_eq!(
            spans.len(),
            1,
            "{protocol}: the batch arrived once: {spans:#?}"
        );
        assert_eq!(receiver.failed(), 2, "{protocol}");
        assert_eq!(spans_dropped(&caller).await, 0, "{protocol}");
    }
}

#[tokio::test]
async fn spans_for_a_collector_whose_certificate_does_not_verify_are_dropped_counted_and_never_sent_in_plain()
 {
    let (_leaf, tls) = collector_tls(&Ca::new("collector.test"));
    let receiver = OtlpReceiver::https(tls).await;
    let mesh = Workloads::new();
    // The sidecar trusts another CA than the one that issued the collector's certificate.
    let ca = mesh.dir.path().join("wrong-ca.pem");
    std::fs::write(&ca, Ca::new("collector.test").bundle_pem()).unwrap();
    let telemetry = telemetry_with(
        "caller",
        &receiver.https_endpoint(),
        "http",
        &format!("tls: {{ ca: '{}' }}", ca.display()),
    );
    let (caller, _callee) = traced_caller(&mesh, &telemetry).await;
    for _ in 0..3 {
        call(&caller).await;
    }
    eventually(
        Duration::from_secs(8),
        "no dropped spans counted",
        || async { (spans_dropped(&caller).await >= 3).then_some(()) },
    )
    .await;
    assert!(receiver.spans().is_empty());
    let first = receiver.first_bytes();
    assert!(!first.is_empty(), "the exporter never connected");
    assert!(
        first.iter().all(|b| *b == 0x16),
        "not a TLS ClientHello: {first:x?}"
    );
}

#[tokio::test]
async fn the_otel_variables_turn_export_on_and_configure_it_without_a_telemetry_section() {
    let receiver = OtlpReceiver::http().await;
    let mesh = Workloads::new();
    let callee = mesh.workload("callee").start().await;
    let caller = mesh
        .workload("caller")
        .client_only()
        .route("callee.svc", &callee, &["call"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=from%20env")
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .env("OTEL_SERVICE_NAME", "env-caller")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=e2e",
        )
        .start()
        .await;
    call(&caller).await;
    let spans = receiver.wait_for(1, WAIT).await;
    assert_eq!(spans[0].service, "env-caller");
    assert_eq!(
        spans[0].resource.get("deployment.environment.name"),
        Some(&Attr::Str("e2e".to_owned()))
    );
    let call = &receiver.calls()[0];
    assert_eq!(call.path, "/v1/traces");
    assert_eq!(call.headers["x-tenant"], "from env");
    assert_eq!(call.headers["content-encoding"], "gzip");
}
