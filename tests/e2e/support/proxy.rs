//! A hopgate sidecar started in-process for a test, with its own PKI, files and ports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hopgate_proxy::Proxy;
use hopgate_proxy::identity::IdentityStore;
use hopgate_proxy::telemetry::audit::AuditSink;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client::{Client, Proto};
use super::pki::{Ca, Leaf};

/// The sidecar's own SPIFFE ID in these tests.
pub(crate) const SERVER_ID: &str = "spiffe://example.org/ns/test/sa/server";

/// A trust domain with its CA and a folder for the sidecar's files.
pub(crate) struct Mesh {
    pub(crate) ca: Ca,
    pub(crate) dir: TempDir,
}

impl Mesh {
    pub(crate) fn new() -> Self {
        Self {
            ca: Ca::new("example.org"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A caller's SVID for `spiffe://example.org/ns/test/sa/<name>`.
    pub(crate) fn leaf(&self, name: &str) -> Leaf {
        self.ca
            .leaf(&format!("spiffe://example.org/ns/test/sa/{name}"))
            .build()
    }

    /// A client holding a fresh SVID named `name`.
    pub(crate) fn client(&self, name: &str, proto: Proto) -> Client {
        let leaf = self.leaf(name);
        Client::with_svid(&leaf.chain_pem, &leaf.key_pem, proto)
    }

    /// A sidecar in front of `app`.
    pub(crate) fn proxy(&self, app: SocketAddr) -> ProxyBuilder<'_> {
        ProxyBuilder {
            mesh: self,
            app,
            inbound_extra: String::new(),
            top_extra: String::new(),
            identity: None,
        }
    }

    /// Where the sidecar's SVID files live.
    pub(crate) fn svid_dir(&self) -> PathBuf {
        self.dir.path().join("server")
    }

    /// Writes the sidecar's config and SVID and returns the config path (for the binary).
    pub(crate) fn write_config(
        &self,
        app: SocketAddr,
        inbound_extra: &str,
        top_extra: &str,
    ) -> PathBuf {
        self.write_config_with(None, app, inbound_extra, top_extra)
    }

    /// [`Mesh::write_config`] with `identity` as the whole `identity:` section when given.
    fn write_config_with(
        &self,
        identity: Option<&str>,
        app: SocketAddr,
        inbound_extra: &str,
        top_extra: &str,
    ) -> PathBuf {
        let svid_dir = self.svid_dir();
        std::fs::create_dir_all(&svid_dir).unwrap();
        self.ca.leaf(SERVER_ID).build().write(&svid_dir);
        std::fs::write(self.dir.path().join("bundle.pem"), self.ca.bundle_pem()).unwrap();
        let files = "identity:\n  svid: { cert: server/svid.pem, key: server/svid_key.pem }\n  bundles: { example.org: bundle.pem }\n";
        let identity = identity.unwrap_or(files);
        let yaml = format!(
            "{identity}\
             inbound:\n  listen: 127.0.0.1:0\n  app: {app}\n{inbound_extra}\
             admin:\n  listen: 127.0.0.1:0\n{top_extra}"
        );
        let path = self.dir.path().join("hopgate.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// Options for a test sidecar.
pub(crate) struct ProxyBuilder<'a> {
    mesh: &'a Mesh,
    app: SocketAddr,
    inbound_extra: String,
    top_extra: String,
    identity: Option<String>,
}

impl ProxyBuilder<'_> {
    /// The SVID and bundles from the Workload API at `endpoint` instead of files, waiting at
    /// most `initial_timeout` (`"5s"`) for the first.
    pub(crate) fn workload_api(mut self, endpoint: &str, initial_timeout: &str) -> Self {
        self.identity = Some(format!(
            "identity:\n  workload_api: {{ socket: '{endpoint}', initial_timeout: {initial_timeout} }}\n"
        ));
        self
    }

    /// Extra `inbound:` keys, as indented YAML lines (`"  timeouts: { app_response: 200ms }\n"`).
    pub(crate) fn inbound_yaml(mut self, yaml: &str) -> Self {
        self.inbound_extra.push_str(yaml);
        self
    }

    /// Extra top-level keys, as YAML lines.
    pub(crate) fn top_yaml(mut self, yaml: &str) -> Self {
        self.top_extra.push_str(yaml);
        self
    }

    pub(crate) async fn start(self) -> TestProxy {
        self.try_start().await.unwrap()
    }

    /// [`ProxyBuilder::start`], returning the startup error instead of panicking on it.
    pub(crate) async fn try_start(self) -> Result<TestProxy, hopgate_proxy::StartupError> {
        let path = self.mesh.write_config_with(
            self.identity.as_deref(),
            self.app,
            &self.inbound_extra,
            &self.top_extra,
        );
        // None of the test process's environment: a developer's own `OTEL_*` stays out.
        let config = hopgate_config::load_with_env(&path, |_| None).unwrap();
        let audit = Arc::new(std::sync::Mutex::new(Vec::new()));
        let proxy = Proxy::build_with_audit(&config, AuditSink::Memory(Arc::clone(&audit))).await?;
        let inbound = proxy.inbound_addr().unwrap();
        let admin = proxy.admin_addr().unwrap();
        let identity = proxy.identity();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(proxy.run(async move {
            let _ = stopped.await;
        }));
        Ok(TestProxy {
            inbound,
            admin,
            identity,
            audit,
            stop: Some(stop),
            done,
        })
    }
}

/// A running sidecar.
pub(crate) struct TestProxy {
    pub(crate) inbound: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) identity: Arc<IdentityStore>,
    /// The audit lines the sidecar wrote.
    pub(crate) audit: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<bool>,
}

impl TestProxy {
    /// Signals shutdown and waits for the drain; returns whether it finished in time.
    pub(crate) async fn shutdown(mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.done).await.unwrap()
    }

    /// GET on the admin listener: (status, body).
    pub(crate) async fn admin_get(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path).await
    }
}

/// A plain HTTP/1.1 GET, for admin endpoints.
pub(crate) async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "admin")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

// === policy folders ===

/// The `policy:` section pointing the sidecar at [`Mesh::policy_dir`].
pub(crate) const POLICY_YAML: &str = "policy:\n  dir: policies\n";

/// The shipped Cedar schema (`examples/policies`): the policy tests run against what users get.
pub(crate) const POLICY_SCHEMA: &str =
    include_str!("../../../examples/policies/schema.cedarschema");

impl Mesh {
    /// The sidecar's policy folder, `<mesh dir>/policies` (what [`POLICY_YAML`] names).
    pub(crate) fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policies")
    }

    /// Writes `(file name, content)` pairs into the policy folder, creating it. Each file is
    /// written beside the folder and renamed in, so a watching sidecar never reads half a file.
    pub(crate) fn write_policies(&self, files: &[(&str, &str)]) {
        let dir = self.policy_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            let staged = self.dir.path().join(format!(".staged-{name}"));
            std::fs::write(&staged, content).unwrap();
            std::fs::rename(&staged, dir.join(name)).unwrap();
        }
    }

    /// Removes one file from the policy folder.
    pub(crate) fn remove_policy(&self, name: &str) {
        std::fs::remove_file(self.policy_dir().join(name)).unwrap();
    }
}

/// The sum of `hopgate_requests_total` over the series whose labels include every one of
/// `labels` (such as `[("direction", "inbound"), ("decision", "allow")]`); 0 when none has.
pub(crate) fn requests_total(metrics: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("hopgate_requests_total{"))
        .filter_map(|rest| rest.split_once("} "))
        .filter(|(set, _)| {
            labels
                .iter()
                .all(|(name, value)| set.split(',').any(|l| l == format!("{name}=\"{value}\"")))
        })
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .sum()
}
