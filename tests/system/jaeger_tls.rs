//! OTLP export over TLS to the real Jaeger of `jaeger.rs`, whose OTLP receivers serve a
//! certificate made per test: the chain over OTLP/HTTP with gzip, over gRPC checked against
//! `tls.ca`, and mTLS with `tls.client_svid: true` where Jaeger requires a client certificate
//! from the mesh's CA, across an SVID rotation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::jaeger::{Jaeger, the_chain_arrives_as_one_trace};
use crate::support::eventually::eventually;
use crate::support::otlp::{collector_tls, telemetry_with};
use crate::support::pki::Ca;
use crate::support::workload::{Workload, Workloads, workload_id};

/// The collector's certificate (for 127.0.0.1) and the CA that issued it, written beside the
/// mesh's configs: `collector-ca.pem` is what `tls.ca` names.
struct CollectorPki {
    cert: PathBuf,
    key: PathBuf,
}

impl CollectorPki {
    fn new(mesh: &Workloads) -> Self {
        let ca = Ca::new("collector.test");
        let (leaf, _) = collector_tls(&ca);
        let dir = mesh.dir.path();
        let (cert, key) = (dir.join("collector.pem"), dir.join("collector_key.pem"));
        std::fs::write(&cert, &leaf.chain_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        std::fs::write(dir.join("collector-ca.pem"), ca.bundle_pem()).unwrap();
        Self { cert, key }
    }

    /// A receiver's `tls:` block; with `client_ca`, a client certificate from it is required.
    fn tls_yaml(&self, client_ca: Option<&Path>) -> String {
        let mut yaml = format!(
            "        tls:\n          cert_file: {}\n          key_file: {}\n",
            self.cert.display(),
            self.key.display()
        );
        if let Some(ca) = client_ca {
            yaml.push_str(&format!(
                "          client_ca_file: {}\n          client_ca_file_reload: true\n",
                ca.display()
            ));
        }
        yaml
    }
}

#[tokio::test]
async fn a_three_sidecar_chain_arrives_in_jaeger_over_otlp_http_with_gzip_on_https() {
    let mesh = Workloads::new();
    let pki = CollectorPki::new(&mesh);
    let jaeger = Jaeger::start_with("", &pki.tls_yaml(None)).await;
    let endpoint = format!("https://{}", jaeger.otlp_http);
    let telemetry = |service: &str| {
        telemetry_with(
            service,
            &endpoint,
            "http",
            "compression: gzip, tls: { ca: collector-ca.pem }",
        )
    };
    the_chain_arrives_as_one_trace(&telemetry, &mesh, &jaeger).await;
}

#[tokio::test]
async fn a_three_sidecar_chain_arrives_in_jaeger_over_otlp_grpc_on_https_checked_against_tls_ca() {
    let mesh = Workloads::new();
    let pki = CollectorPki::new(&mesh);
    let jaeger = Jaeger::start_with(&pki.tls_yaml(None), "").await;
    let endpoint = format!("https://{}", jaeger.otlp_grpc);
    let telemetry = |service: &str| {
        telemetry_with(
            service,
            &endpoint,
            "grpc",
            "tls: { ca: collector-ca.pem }, headers: { x-tenant: ml }",
        )
    };
    the_chain_arrives_as_one_trace(&telemetry, &mesh, &jaeger).await;
}

/// `hopgate_telemetry_spans_dropped_total` of `workload`.
async fn spans_dropped(workload: &Workload) -> u64 {
    let (_, metrics) = workload.admin_get("/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("hopgate_telemetry_spans_dropped_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no hopgate_telemetry_spans_dropped_total in {metrics}"))
}

/// One call from `caller` to `crm.tools` in trace `n` (its id ends in `n`); the trace id.
async fn traced_call(caller: &Workload, n: u32) -> String {
    let trace = format!("6e0c63257de34c92bf9efcd0{n:08x}");
    let traceparent = format!("00-{trace}-a2fb4a1d1a96d312-01");
    let reply = caller
        .call(
            "crm.tools",
            "/tickets",
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    trace
}

#[tokio::test]
async fn with_client_svid_jaeger_requiring_a_client_certificate_gets_spans_before_and_after_an_svid_rotation()
 {
    let mesh = Workloads::new();
    // The mesh trusts two roots of example.org: the SVIDs of before the rotation come from the
    // first (`mesh.ca`), the one after it from the second.
    let next_ca = Ca::new("example.org");
    let bundle = format!("{}{}", mesh.ca.bundle_pem(), next_ca.bundle_pem());
    std::fs::write(mesh.dir.path().join("bundle.pem"), bundle).unwrap();
    let pki = CollectorPki::new(&mesh);
    // Jaeger takes client certificates of the first root only, until the test swaps the file;
    // it closes connections after 2 s, so none made before the swap outlives it.
    let client_ca = mesh.dir.path().join("jaeger-client-ca.pem");
    std::fs::write(&client_ca, mesh.ca.bundle_pem()).unwrap();
    let grpc_extra = format!(
        "{}        keepalive:\n          server_parameters:\n            max_connection_age: 2s\n            max_connection_age_grace: 1s\n",
        pki.tls_yaml(Some(&client_ca))
    );
    let jaeger = Jaeger::start_with(&grpc_extra, "").await;
    let endpoint = format!("https://{}", jaeger.otlp_grpc);
    let crm = mesh.workload("crm").start().await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("crm.tools", &crm, &[])
        .top_yaml(&telemetry_with(
            "agent",
            &endpoint,
            "grpc",
            "tls: { ca: collector-ca.pem, client_svid: true }",
        ))
        .start()
        .await;
    // The same export without a client certificate: Jaeger refuses it, and the spans are
    // dropped and counted.
    let anonymous = mesh
        .workload("anonymous")
        .client_only()
        .route("crm.tools", &crm, &[])
        .top_yaml(&telemetry_with(
            "anonymous",
            &endpoint,
            "grpc",
            "tls: { ca: collector-ca.pem }",
        ))
        .start()
        .await;

    // A sidecar whose SVID stays one of the first root's: the probe that Jaeger has swapped.
    let stale = mesh
        .workload("stale")
        .client_only()
        .route("crm.tools", &crm, &[])
        .top_yaml(&telemetry_with(
            "stale",
            &endpoint,
            "grpc",
            "tls: { ca: collector-ca.pem, client_svid: true }",
        ))
        .start()
        .await;

    for (caller, n) in [(&agent, 1), (&stale, 3)] {
        let before = traced_call(caller, n).await;
        let trace = jaeger.trace(&before, 1).await;
        assert_eq!(trace["spans"][0]["operationName"], "hopgate.outbound");
    }
    let refused = traced_call(&anonymous, 2).await;
    eventually(
        Duration::from_secs(10),
        "the export without a client certificate was not dropped",
        || async { (spans_dropped(&anonymous).await > 0).then_some(()) },
    )
    .await;
    assert!(jaeger.trace_now(&refused, 1).await.is_none());
    assert_eq!(spans_dropped(&agent).await, 0);

    // The rotation: Jaeger now takes the second root only, and the agent's SVID comes from it.
    std::fs::write(&client_ca, next_ca.bundle_pem()).unwrap();
    let leaf = next_ca.leaf(&workload_id("agent")).build();
    let dir = mesh.dir_of("agent");
    for (file, contents) in [
        ("svid_key.pem", &leaf.key_pem),
        ("svid.pem", &leaf.chain_pem),
    ] {
        let tmp = dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
    }
    let reloads = r#"hopgate_identity_reloads_total{result="ok"} "#;
    eventually(Duration::from_secs(10), "the agent's rotation", || async {
        let (_, metrics) = agent.admin_get("/metrics").await;
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(reloads)?.trim().parse::<f64>().ok())?;
        (count >= 1.0).then_some(())
    })
    .await;
    // Jaeger reloads its client CA file on its own time: once it has, the stale sidecar's
    // exports are refused (its connections are at most 2 s old, so each needs a handshake).
    let started = Instant::now();
    let mut n = 10;
    let stale_dropped = spans_dropped(&stale).await;
    loop {
        traced_call(&stale, n).await;
        let refused = eventually_within(Duration::from_secs(3), || async {
            (spans_dropped(&stale).await > stale_dropped).then_some(())
        })
        .await;
        if refused {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "Jaeger never refused the first root's SVID"
        );
        n += 1;
    }
    // The agent's spans arrive: it presents its new SVID, the old one no longer passes.
    let after = traced_call(&agent, 50).await;
    jaeger.trace(&after, 1).await;
    // And so does every batch after it: no handshake is made with the old SVID any more.
    let dropped = spans_dropped(&agent).await;
    assert_eq!(dropped, 0);
    for n in 100..103 {
        let trace = traced_call(&agent, n).await;
        jaeger.trace(&trace, 1).await;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    assert_eq!(spans_dropped(&agent).await, dropped);
}

/// Whether `check` yields something within `limit`.
async fn eventually_within<F, Fut, T>(limit: Duration, check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
