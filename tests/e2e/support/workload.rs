//! Several workloads of one trust domain, each an app behind its own in-process hopgate with an
//! inbound and an outbound side, for tests of whole call chains (U → A → B).
//!
//! Start destinations first: a caller's routes name the destination's inbound address.
//!
//! The apps are [`RelayApp`]s: each records what it received and, when the request carries
//! `x-next: <host>`, calls `http://<host><path>` through its own sidecar's outbound listener,
//! relaying the hop token it received (as an app relaying a hop token does), and answers with
//! what it saw and what came back. `/stream/<n>` answers `n` chunks, 100 ms apart: a long
//! response, to hold a connection open across a rotation.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tempfile::TempDir;
use tokio::net::TcpListener;

use super::pki::Ca;
use super::proxy::admin_get;

/// The SPIFFE ID of workload `name` in these tests.
pub(crate) fn workload_id(name: &str) -> String {
    format!("spiffe://example.org/ns/test/sa/{name}")
}

/// One trust domain and a folder for every workload's files.
pub(crate) struct Workloads {
    pub(crate) ca: Ca,
    pub(crate) dir: TempDir,
}

/// A route of a workload's outbound side.
pub(crate) struct RouteSpec {
    pub(crate) host: String,
    /// `ip:port` or `name:port`, as the config says it.
    pub(crate) address: String,
    pub(crate) identity: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) original_dst: Option<SocketAddr>,
}

/// Options for one workload.
pub(crate) struct WorkloadBuilder<'a> {
    mesh: &'a Workloads,
    name: String,
    inbound: bool,
    inbound_extra: String,
    outbound_extra: String,
    routes: Vec<RouteSpec>,
    top_extra: String,
    policies: Vec<(String, String)>,
    egress: bool,
    app_at: Option<SocketAddr>,
    workload_api: Option<String>,
    app_by_name: bool,
    /// The environment its config sees (none of the test process's).
    env: Vec<(String, String)>,
}

/// A running workload: its app and its sidecar.
pub(crate) struct Workload {
    pub(crate) id: String,
    pub(crate) app: RelayApp,
    /// The sidecar's inbound listener (none for a client-only workload).
    pub(crate) inbound: Option<SocketAddr>,
    /// The sidecar's outbound listener, where the app sends its calls.
    pub(crate) outbound: SocketAddr,
    pub(crate) admin: SocketAddr,
    pub(crate) audit: Arc<Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Workloads {
    pub(crate) fn new() -> Self {
        let ca = Ca::new("example.org");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bundle.pem"), ca.bundle_pem()).unwrap();
        Self { ca, dir }
    }

    /// A workload named `name` (`spiffe://example.org/ns/test/sa/<name>`).
    pub(crate) fn workload(&self, name: &str) -> WorkloadBuilder<'_> {
        WorkloadBuilder {
            mesh: self,
            name: name.to_owned(),
            inbound: true,
            inbound_extra: String::new(),
            outbound_extra: String::new(),
            routes: Vec::new(),
            top_extra: String::new(),
            policies: Vec::new(),
            egress: false,
            app_at: None,
            workload_api: None,
            app_by_name: false,
            env: Vec::new(),
        }
    }

    /// The folder holding `name`'s files.
    pub(crate) fn dir_of(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

impl WorkloadBuilder<'_> {
    /// Its SVID and bundles from the Workload API at `endpoint` instead of files.
    pub(crate) fn workload_api(mut self, endpoint: &str) -> Self {
        self.workload_api = Some(endpoint.to_owned());
        self
    }

    /// `inbound.app` names the app `localhost:<port>`, a DNS name, instead of its IP.
    pub(crate) fn app_by_name(mut self) -> Self {
        self.app_by_name = true;
        self
    }

    /// `name=value` in the environment its config is loaded with (`OTEL_*`, say).
    pub(crate) fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// No inbound side: a workload that only calls out (the user-facing agent, say).
    pub(crate) fn client_only(mut self) -> Self {
        self.inbound = false;
        self
    }

    /// A route to `dest`'s inbound side under `host`, granting at most `scopes`.
    pub(crate) fn route(mut self, host: &str, dest: &Workload, scopes: &[&str]) -> Self {
        self.routes.push(RouteSpec {
            host: host.to_owned(),
            address: dest
                .inbound
                .expect("the destination has an inbound side")
                .to_string(),
            identity: dest.id.clone(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            original_dst: None,
        });
        self
    }

    /// A route given in full.
    pub(crate) fn route_spec(mut self, route: RouteSpec) -> Self {
        self.routes.push(route);
        self
    }

    /// Extra `inbound:` keys, as indented YAML lines.
    pub(crate) fn inbound_yaml(mut self, yaml: &str) -> Self {
        self.inbound_extra.push_str(yaml);
        self
    }

    /// Extra `outbound:` keys, as indented YAML lines (`"  transparent: true\n"`).
    #[allow(
        dead_code,
        reason = "used by the transparent-mode tests in tests/system"
    )]
    pub(crate) fn outbound_yaml(mut self, yaml: &str) -> Self {
        self.outbound_extra.push_str(yaml);
        self
    }

    /// Extra top-level keys, as YAML lines (`token:`, `intent:`, ...).
    pub(crate) fn top_yaml(mut self, yaml: &str) -> Self {
        self.top_extra.push_str(yaml);
        self
    }

    /// `inbound.app` is this address rather than the workload's own [`RelayApp`] (which
    /// then receives nothing).
    pub(crate) fn app_at(mut self, app: SocketAddr) -> Self {
        self.app_at = Some(app);
        self
    }

    /// Also check egress against this workload's policies (`policy.outbound: true`).
    pub(crate) fn egress_policy(mut self) -> Self {
        self.egress = true;
        self
    }

    /// A Cedar file (or the schema) for this workload's `policy.dir`. Any call enables the
    /// `policy:` section.
    pub(crate) fn policy(mut self, name: &str, content: &str) -> Self {
        self.policies.push((name.to_owned(), content.to_owned()));
        self
    }

    /// Writes the config and SVID, returns the config path. `app` is `inbound.app`.
    pub(crate) fn write(&self, app: SocketAddr) -> std::path::PathBuf {
        let app = if self.app_by_name {
            format!("localhost:{}", app.port())
        } else {
            app.to_string()
        };
        let name = &self.name;
        let dir = self.mesh.dir_of(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.mesh.ca.leaf(&workload_id(name)).build().write(&dir);
        let mut yaml = match &self.workload_api {
            Some(socket) => format!("identity:\n  workload_api: {{ socket: '{socket}' }}\n"),
            None => format!(
                "identity:\n  svid: {{ cert: {name}/svid.pem, key: {name}/svid_key.pem }}\n  bundles: {{ example.org: bundle.pem }}\n"
            ),
        };
        if self.inbound {
            yaml.push_str(&format!(
                "inbound:\n  listen: 127.0.0.1:0\n  app: {app}\n{}",
                self.inbound_extra
            ));
        }
        yaml.push_str(&format!(
            "outbound:\n  listen: 127.0.0.1:0\n{}  routes:\n",
            self.outbound_extra
        ));
        if self.routes.is_empty() {
            yaml.push_str("    []\n");
        }
        for route in &self.routes {
            yaml.push_str(&format!(
                "    - host: {}\n      address: {}\n      identity: {}\n      scopes: [{}]\n",
                route.host,
                route.address,
                route.identity,
                route.scopes.join(", ")
            ));
            if let Some(dst) = route.original_dst {
                yaml.push_str(&format!("      original_dst: {dst}\n"));
            }
        }
        if !self.policies.is_empty() {
            let policy_dir = dir.join("policies");
            std::fs::create_dir_all(&policy_dir).unwrap();
            for (file, content) in &self.policies {
                std::fs::write(policy_dir.join(file), content).unwrap();
            }
            yaml.push_str(&format!(
                "policy:\n  dir: {name}/policies\n  outbound: {}\n",
                self.egress
            ));
        }
        yaml.push_str("admin:\n  listen: 127.0.0.1:0\n");
        yaml.push_str(&self.top_extra);
        let path = self.mesh.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path
    }

    pub(crate) async fn start(self) -> Workload {
        let app = RelayApp::start().await;
        let path = self.write(self.app_at.unwrap_or(app.addr));
        // Only the variables the test gave: a developer's own `OTEL_*` must not turn export on.
        let env = self.env.clone();
        let config = hopgate_config::load_with_env(&path, move |name| {
            env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        })
        .unwrap();
        let audit = Arc::new(Mutex::new(Vec::new()));
        let proxy = hopgate_proxy::Proxy::build_with_audit(
            &config,
            hopgate_proxy::telemetry::audit::AuditSink::Memory(Arc::clone(&audit)),
        )
        .await
        .unwrap();
        let inbound = proxy.inbound_addr();
        let outbound = proxy.outbound_addr().unwrap();
        let admin = proxy.admin_addr().unwrap();
        app.outbound.set(outbound).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(proxy.run(async move {
            let _ = stopped.await;
        }));
        Workload {
            id: workload_id(&self.name),
            app,
            inbound,
            outbound,
            admin,
            audit,
            _stop: stop,
        }
    }
}

impl Workload {
    /// The app's call through its own sidecar: `GET http://<host><path>` sent to the outbound
    /// listener with `headers`.
    pub(crate) async fn call(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        plain_request(self.outbound, "GET", host, path, headers).await
    }

    /// GET on the admin listener: (status, body).
    pub(crate) async fn admin_get(&self, path: &str) -> (u16, String) {
        admin_get(self.admin, path).await
    }

    /// The audit records written so far, parsed.
    pub(crate) fn audit_records(&self) -> Vec<serde_json::Value> {
        self.audit
            .lock()
            .unwrap()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// A response: status, headers and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A plain HTTP/1.1 request to `addr` with `Host: host`.
pub(crate) async fn plain_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    request_with_body(addr, method, host, path, headers, Bytes::new()).await
}

/// The same, with `body`.
pub(crate) async fn request_with_body(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let rsp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// One request as a [`RelayApp`] received it.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) headers: http::HeaderMap,
}

/// A test app that records requests and relays them onward when asked (`x-next`).
pub(crate) struct RelayApp {
    pub(crate) addr: SocketAddr,
    outbound: Arc<OnceLock<SocketAddr>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl RelayApp {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let outbound = Arc::new(OnceLock::new());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (out, rec) = (Arc::clone(&outbound), Arc::clone(&received));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (out, rec) = (Arc::clone(&out), Arc::clone(&rec));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (out, rec) = (Arc::clone(&out), Arc::clone(&rec));
                        async move { Ok::<_, Infallible>(relay(req, out, rec).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            outbound,
            received,
        }
    }

    /// Every request received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Headers an app relays along a call chain.
const RELAYED: [&str; 4] = ["hop-token", "traceparent", "tracestate", "intent-action"];

type AppBody = BoxBody<Bytes, Infallible>;

async fn relay(
    req: Request<Incoming>,
    outbound: Arc<OnceLock<SocketAddr>>,
    received: Arc<Mutex<Vec<Received>>>,
) -> Response<AppBody> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    received.lock().unwrap().push(Received {
        path: path.clone(),
        headers: headers.clone(),
    });
    if let Some(chunks) = path
        .strip_prefix("/stream/")
        .and_then(|n| n.parse::<u32>().ok())
    {
        return stream(chunks);
    }
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &headers {
        seen.entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let mut answer = serde_json::json!({ "path": path, "headers": seen });
    if let Some(next) = headers.get("x-next").and_then(|v| v.to_str().ok()) {
        let (next_host, rest) = next.split_once(',').unwrap_or((next, ""));
        let mut relayed: Vec<(String, String)> = RELAYED
            .iter()
            .filter_map(|name| {
                headers
                    .get(*name)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| ((*name).to_owned(), v.to_owned()))
            })
            .collect();
        // `x-next: b,c` → this app calls b, asking b to call c.
        if !rest.is_empty() {
            relayed.push(("x-next".to_owned(), rest.to_owned()));
        }
        // `x-next-action` sets the intent of the next call (this app's own decision).
        if let Some(action) = headers.get("x-next-action").and_then(|v| v.to_str().ok()) {
            relayed.retain(|(name, _)| name != "intent-action");
            relayed.push(("intent-action".to_owned(), action.to_owned()));
        }
        let borrowed: Vec<(&str, &str)> = relayed
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let addr = *outbound.get().expect("the sidecar is started");
        let reply = plain_request(addr, "GET", next_host, &path, &borrowed).await;
        let body = serde_json::from_str(&reply.body)
            .unwrap_or_else(|_| serde_json::Value::String(reply.body.clone()));
        answer["downstream"] = serde_json::json!({ "status": reply.status, "body": body });
    }
    let mut rsp = Response::new(Full::new(Bytes::from(answer.to_string())).boxed());
    rsp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    rsp
}

/// `chunks` lines (`chunk 0\n`, ...), one every 100 ms.
fn stream(chunks: u32) -> Response<AppBody> {
    let body = futures_util::stream::unfold(0, move |n| async move {
        if n == chunks {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let frame = hyper::body::Frame::data(Bytes::from(format!("chunk {n}\n")));
        Some((Ok::<_, Infallible>(frame), n + 1))
    });
    Response::new(BodyExt::boxed(StreamBody::new(body)))
}
