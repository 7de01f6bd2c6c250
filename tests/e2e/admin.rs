//! The admin endpoints operators and probes rely on.

use std::time::Duration;

use crate::support::client::Proto;
use crate::support::eventually::eventually;
use crate::support::proxy::{Mesh, SERVER_ID, admin_get};
use crate::support::upstream::Upstream;

/// How long a state change on the admin side may take to show.
const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn admin_reports_live_ready_and_identity() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;

    assert_eq!(proxy.admin_get("/live").await.0, 200);

    let (status, body) = proxy.admin_get("/ready").await;
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["policy"], "identity_only");

    let (status, body) = proxy.admin_get("/identity").await;
    assert_eq!(status, 200);
    let identity: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(identity["spiffe_id"], SERVER_ID);
    assert_eq!(identity["trust_domains"][0], "example.org");
    assert!(identity["not_after_unix"].as_u64().unwrap() > 0);
    assert!(identity["not_after"].as_str().unwrap().ends_with('Z'));

    assert_eq!(proxy.admin_get("/nope").await.0, 404);
}

#[tokio::test]
async fn admin_metrics_expose_the_contract_names() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let (status, text) = proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "hopgate_requests_total",
        "hopgate_request_duration_seconds",
        "hopgate_tls_handshake_failures_total",
        "hopgate_svid_expiry_timestamp_seconds",
        "hopgate_identity_reloads_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {}", name.trim_end_matches("_total"))),
            "{name} missing:\n{text}"
        );
    }
    let expiry = text
        .lines()
        .find(|l| l.starts_with("hopgate_svid_expiry_timestamp_seconds "))
        .unwrap();
    let value: f64 = expiry.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 1.7e9, "{expiry}");
}

#[tokio::test]
async fn admin_metrics_carry_build_info_the_process_set_and_the_stream_series_from_the_start() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let (status, text) = proxy.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "hopgate_build_info{{version=\"{version}\",commit=\""
        )) && l.ends_with(" 1")),
        "{text}"
    );
    for series in [
        r#"hopgate_streams_closed_total{reason="revoked"} 0"#,
        r#"hopgate_streams_closed_total{reason="max_age"} 0"#,
        "hopgate_revocations_loaded 0",
    ] {
        assert!(
            text.lines().any(|l| l == series),
            "{series} missing:\n{text}"
        );
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing:\n{text}"
        );
    }
    // One exposition: a single end marker, at the end.
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Decisions take microseconds: the policy histogram starts at 1 µs.
    assert!(
        text.contains(r#"hopgate_policy_evaluation_seconds_bucket{le="1e-6"}"#)
            || text.contains(r#"hopgate_policy_evaluation_seconds_bucket{le="0.000001"}"#),
        "{text}"
    );
}

#[tokio::test]
async fn ready_turns_503_while_draining() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .top_yaml("shutdown_grace: 10s\n")
        .start()
        .await;
    let admin = proxy.admin;
    // A slow request keeps the drain going while /ready is asked.
    let client = mesh.client("caller", Proto::H1);
    let inbound = proxy.inbound;
    let slow = tokio::spawn(async move { client.get(inbound, "/slow/1500", &[]).await });
    eventually(WAIT, "the app never received the slow request", || async {
        (!app.received().is_empty()).then_some(())
    })
    .await;
    let drained = tokio::spawn(proxy.shutdown());
    let body = eventually(WAIT, "/ready never reported the drain", || async move {
        let (status, body) = admin_get(admin, "/ready").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("draining"), "{body}");
    assert_eq!(slow.await.unwrap().unwrap().status, 200);
    assert!(drained.await.unwrap());
    // After the drain the admin listener is gone too.
    assert!(tokio::net::TcpStream::connect(admin).await.is_err());
}
