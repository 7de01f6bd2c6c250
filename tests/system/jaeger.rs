//! Request spans in a real Jaeger (all-in-one 1.75.0, in-memory storage, built by
//! `./test.sh setup` into `${CARGO_TARGET_DIR:-target}/tools/jaeger-1.75.0/bin`): three
//! workloads, each an app behind its own hopgate exporting under its own `service.name`, and
//! the chain read back from Jaeger's query API as one trace, over OTLP gRPC and OTLP/HTTP.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::eventually::eventually;
use crate::support::otlp::telemetry;
use crate::support::workload::{Workload, Workloads, plain_request};

const JAEGER_VERSION: &str = "1.75.0";
/// The trace the agent's app starts, so the test knows which trace to ask Jaeger for.
pub(crate) const TRACE_ID: &str = "6e0c63257de34c92bf9efcd03927272e";
const TRACEPARENT: &str = "00-6e0c63257de34c92bf9efcd03927272e-a2fb4a1d1a96d312-01";

/// A running Jaeger all-in-one on loopback ports of its own; killed on drop.
pub(crate) struct Jaeger {
    child: Child,
    pub(crate) otlp_grpc: SocketAddr,
    pub(crate) otlp_http: SocketAddr,
    query: SocketAddr,
    _dir: tempfile::TempDir,
}

/// The `jaeger` binary; panics, saying how to build it, when it is missing.
fn jaeger_bin() -> PathBuf {
    let bin = crate::tools::dir(&format!("jaeger-{JAEGER_VERSION}/bin/jaeger"));
    assert!(
        bin.is_file(),
        "{} is missing: `./test.sh setup` builds Jaeger {JAEGER_VERSION} there",
        bin.display()
    );
    bin
}

/// A loopback port nothing listens on now. Jaeger takes fixed ports from its config, so the
/// test picks them; another process taking one in between makes the start fail, loudly.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Jaeger {
    async fn start() -> Self {
        Self::start_with("", "").await
    }

    /// Jaeger with more keys for its OTLP gRPC and HTTP receivers (`tls:`, `keepalive:`), as
    /// YAML lines indented for the protocol's section (8 spaces).
    pub(crate) async fn start_with(grpc_extra: &str, http_extra: &str) -> Self {
        let (otlp_grpc, otlp_http, query) = (free_port(), free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("jaeger.yaml");
        // The all-in-one pipeline, trimmed to what the test reads: OTLP in, memory, query out.
        std::fs::write(
            &config,
            format!(
                r#"service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: {query}
    grpc:
      endpoint: {free}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 1000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {otlp_grpc}
{grpc_extra}      http:
        endpoint: {otlp_http}
{http_extra}processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#,
                free = free_port(),
            ),
        )
        .unwrap();
        let child = Command::new(jaeger_bin())
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let jaeger = Self {
            child,
            otlp_grpc,
            otlp_http,
            query,
            _dir: dir,
        };
        eventually(Duration::from_secs(30), "Jaeger's query API", || async {
            // The request helper expects a listener: connect first.
            tokio::net::TcpStream::connect(jaeger.query).await.ok()?;
            let reply = plain_request(jaeger.query, "GET", "localhost", "/api/services", &[]);
            let reply = tokio::time::timeout(Duration::from_secs(1), reply)
                .await
                .ok()?;
            (reply.status == 200).then_some(())
        })
        .await;
        jaeger
    }

    /// The spans of trace `id` as Jaeger's query API gives them, once there are `count`.
    pub(crate) async fn trace(&self, id: &str, count: usize) -> Value {
        eventually(Duration::from_secs(10), "the trace in Jaeger", || async {
            self.trace_now(id, count).await
        })
        .await
    }

    /// Trace `id` if Jaeger has `count` of its spans now.
    pub(crate) async fn trace_now(&self, id: &str, count: usize) -> Option<Value> {
        let path = format!("/api/traces/{id}");
        let reply = plain_request(self.query, "GET", "localhost", &path, &[]).await;
        let trace: Value = serde_json::from_str(&reply.body).ok()?;
        let spans = trace["data"][0]["spans"].as_array()?.len();
        (spans >= count).then_some(trace["data"][0].clone())
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// agent (client only) → inference → crm, each with the `telemetry:` section `telemetry`
/// makes for its service name.
async fn chain(mesh: &Workloads, telemetry: &dyn Fn(&str) -> String) -> [Workload; 3] {
    let crm = mesh
        .workload("crm")
        .top_yaml(&telemetry("crm"))
        .start()
        .await;
    let inference = mesh
        .workload("inference")
        .route("crm.tools", &crm, &[])
        .top_yaml(&telemetry("inference"))
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &[])
        .top_yaml(&telemetry("agent"))
        .start()
        .await;
    [agent, inference, crm]
}

/// A span's tag, as a string.
fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str())
}

/// The one span named `name` of service `service` in `trace`.
fn span<'a>(trace: &'a Value, name: &str, service: &str) -> &'a Value {
    let processes = &trace["processes"];
    let found: Vec<&Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["operationName"] == name
                && processes[s["processID"].as_str().unwrap()]["serviceName"] == service
        })
        .collect();
    assert_eq!(found.len(), 1, "one {name} of {service} in {trace:#}");
    found[0]
}

/// The span id `span` names as its parent (CHILD_OF).
fn parent(span: &Value) -> &str {
    span["references"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["refType"] == "CHILD_OF")
        .and_then(|r| r["spanID"].as_str())
        .unwrap_or_default()
}

/// Sends alice's chain call, each sidecar exporting as `telemetry` says, and checks what
/// Jaeger shows of it.
pub(crate) async fn the_chain_arrives_as_one_trace(
    telemetry: &dyn Fn(&str) -> String,
    mesh: &Workloads,
    jaeger: &Jaeger,
) {
    let [agent, inference, crm] = chain(mesh, telemetry).await;
    let reply = agent
        .call(
            "inference.ml",
            "/tickets/42",
            &[("traceparent", TRACEPARENT), ("x-next", "crm.tools")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["downstream"]["status"], 200, "{}", reply.body);
    let trace = jaeger.trace(TRACE_ID, 4).await;
    let agent_out = span(&trace, "hopgate.outbound", "agent");
    let inference_in = span(&trace, "hopgate.inbound", "inference");
    let inference_out = span(&trace, "hopgate.outbound", "inference");
    let crm_in = span(&trace, "hopgate.inbound", "crm");
    // Each hop's span is the child of the one before it; the agent's continues the app's.
    assert_eq!(parent(agent_out), "a2fb4a1d1a96d312");
    assert_eq!(parent(inference_in), agent_out["spanID"].as_str().unwrap());
    assert_eq!(parent(crm_in), inference_out["spanID"].as_str().unwrap());
    for span in [agent_out, inference_in, inference_out, crm_in] {
        assert_eq!(tag(span, "hop.decision"), Some("allow"), "{span:#}");
        assert_eq!(tag(span, "url.scheme"), Some("https"), "{span:#}");
        assert_eq!(tag(span, "client.address"), Some("127.0.0.1"), "{span:#}");
        let process = &trace["processes"][span["processID"].as_str().unwrap()];
        let version = process["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == "service.version");
        assert_eq!(
            version.map(|t| &t["value"]),
            Some(&Value::from(env!("CARGO_PKG_VERSION"))),
            "{process:#}"
        );
        assert_eq!(tag(span, "hop.txn"), tag(agent_out, "hop.txn"), "{span:#}");
        assert!(tag(span, "hop.decision.id").is_some(), "{span:#}");
        assert!(tag(span, "hop.token.jti").is_some(), "{span:#}");
    }
    assert_eq!(tag(crm_in, "hop.peer.id"), Some(inference.id.as_str()));
    assert_eq!(tag(crm_in, "hop.dest.id"), Some(crm.id.as_str()));
    assert_eq!(tag(inference_in, "hop.peer.id"), Some(agent.id.as_str()));
    // The same token on both ends of a hop.
    assert_eq!(
        tag(inference_out, "hop.token.jti"),
        tag(crm_in, "hop.token.jti")
    );
}

#[tokio::test]
async fn a_three_sidecar_chain_arrives_in_jaeger_as_one_trace_over_otlp_grpc() {
    let jaeger = Jaeger::start().await;
    let endpoint = format!("http://{}", jaeger.otlp_grpc);
    let telemetry = |service: &str| telemetry(service, &endpoint, "grpc");
    the_chain_arrives_as_one_trace(&telemetry, &Workloads::new(), &jaeger).await;
}

#[tokio::test]
async fn a_three_sidecar_chain_arrives_in_jaeger_as_one_trace_over_otlp_http() {
    let jaeger = Jaeger::start().await;
    let endpoint = format!("http://{}", jaeger.otlp_http);
    let telemetry = |service: &str| telemetry(service, &endpoint, "http");
    the_chain_arrives_as_one_trace(&telemetry, &Workloads::new(), &jaeger).await;
}
