//! SVID rotation under traffic: the sidecar's own certificate is replaced five times while
//! callers keep sending, both on fresh connections (a handshake per request) and on long-lived
//! keep-alive connections. No request may fail, every rotation must reach new handshakes, and
//! established connections keep the certificate they were accepted with.
//!
//! Rotations are done the two ways files change in production: "write a temp file, rename it
//! over" (an operator, cert-manager's csi driver) and the Kubernetes projected-volume dance
//! (`svid.pem -> ..data/svid.pem`, `..data -> ..2026_…`, the `..data` link swapped atomically).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::support::client::{Client, Proto};
use crate::support::eventually::eventually;
use crate::support::pki::Leaf;
use crate::support::proxy::{Mesh, SERVER_ID};
use crate::support::upstream::Upstream;

/// How long one rotation may take to reach new handshakes (the watcher debounces 250 ms).
const ROTATION_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_svid_rotates_five_times_under_traffic_without_a_failed_request() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let svid_dir = mesh.svid_dir();
    let original = leaf_der_in(&svid_dir.join("svid.pem"));
    assert_eq!(server_leaf(&mesh, proxy.inbound).await, original);

    let traffic = Traffic::start(&mesh, proxy.inbound).await;
    traffic.wait_for_requests(10).await;
    traffic.wait_until_seen(&original).await;

    let mut seen = vec![original.clone()];
    for n in 1..=5 {
        let leaf = mesh.ca.leaf(SERVER_ID).build();
        match n {
            1 | 2 => rename_over(&svid_dir, &leaf),
            3 => kubernetes_layout(&svid_dir, &leaf, n),
            _ => kubernetes_swap(&svid_dir, &leaf, n),
        }
        let started = Instant::now();
        wait_for_server_leaf(&mesh, proxy.inbound, &leaf.cert_der).await;
        traffic.wait_until_seen(&leaf.cert_der).await;
        eprintln!(
            "rotation {n} reached new handshakes in {:?}",
            started.elapsed()
        );
        seen.push(leaf.cert_der.clone());
    }
    // Traffic carried on across the last rotation too.
    let before = traffic.total();
    traffic.wait_for_requests(before + 10).await;

    let report = traffic.stop().await;
    eprintln!(
        "{} requests ({} on keep-alive connections), fresh handshakes per certificate: {:?}",
        report.total,
        report.keep_alive_ok,
        seen.iter()
            .map(|der| report
                .handshakes_by_leaf
                .get(der.as_ref())
                .copied()
                .unwrap_or(0))
            .collect::<Vec<_>>()
    );
    assert!(
        report.failures.is_empty(),
        "failed requests: {:#?}",
        report.failures
    );
    for (i, der) in seen.iter().enumerate() {
        assert!(
            report
                .handshakes_by_leaf
                .get(der.as_ref())
                .copied()
                .unwrap_or(0)
                > 0,
            "no traffic handshake presented the certificate of rotation {i}"
        );
    }
    assert_eq!(
        report.keep_alive_leaves,
        vec![original.clone(), original],
        "keep-alive connections must keep the certificate they were accepted with"
    );
    assert!(
        report.keep_alive_ok >= 10,
        "keep-alive requests: {}",
        report.keep_alive_ok
    );
    assert!(
        report.total > report.keep_alive_ok,
        "no request on a fresh connection"
    );

    let (status, body) = proxy.admin_get("/identity").await;
    assert_eq!(status, 200);
    let identity: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(identity["spiffe_id"], SERVER_ID);
    assert_eq!(identity["last_reload"]["result"], "ok", "{identity}");
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        counter(&metrics, r#"hopgate_identity_reloads_total{result="ok"}"#) >= 5.0,
        "{metrics}"
    );
    assert!(proxy.shutdown().await, "the drain did not finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_started_on_a_kubernetes_layout_follows_data_link_swaps() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    // Start on a projected-volume layout from the first load, not only after a conversion.
    let config = mesh.write_config(app.addr, "", "");
    let svid_dir = mesh.svid_dir();
    let first = mesh.ca.leaf(SERVER_ID).build();
    kubernetes_layout(&svid_dir, &first, 1);
    assert!(svid_dir.join("svid.pem").is_symlink());
    let proxy = start_from(&config).await;
    assert_eq!(server_leaf(&mesh, proxy.inbound).await, first.cert_der);

    for n in 2..=3 {
        let leaf = mesh.ca.leaf(SERVER_ID).build();
        kubernetes_swap(&svid_dir, &leaf, n);
        wait_for_server_leaf(&mesh, proxy.inbound, &leaf.cert_der).await;
        let reply = mesh
            .client("caller", Proto::H2)
            .get(proxy.inbound, "/after-swap", &[])
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert!(proxy.shutdown().await);
}

// === traffic ===

/// Callers running until stopped: two workers opening a connection per request (H1 and H2)
/// and two keep-alive connections (H1 and H2) sending one request after another.
struct Traffic {
    stop: Arc<AtomicBool>,
    total: Arc<AtomicUsize>,
    handshakes: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    failures: Arc<Mutex<Vec<String>>>,
    fresh: Vec<tokio::task::JoinHandle<()>>,
    keep_alive: Vec<tokio::task::JoinHandle<(CertificateDer<'static>, usize)>>,
}

struct TrafficReport {
    total: usize,
    keep_alive_ok: usize,
    keep_alive_leaves: Vec<CertificateDer<'static>>,
    handshakes_by_leaf: HashMap<Vec<u8>, usize>,
    failures: Vec<String>,
}

impl Traffic {
    async fn start(mesh: &Mesh, addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(Mutex::new(HashMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut fresh = Vec::new();
        for (i, proto) in [Proto::H1, Proto::H2].into_iter().enumerate() {
            let client = mesh.client(&format!("fresh-{i}"), proto);
            let (stop, total, handshakes, failures) = (
                Arc::clone(&stop),
                Arc::clone(&total),
                Arc::clone(&handshakes),
                Arc::clone(&failures),
            );
            fresh.push(tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let path = format!("/fresh/{i}/{n}");
                    match one_request_on_a_new_connection(&client, addr, &path).await {
                        Ok(leaf) => {
                            *handshakes.lock().unwrap().entry(leaf.to_vec()).or_default() += 1;
                            total.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                    }
                }
            }));
        }
        let mut keep_alive = Vec::new();
        for (i, proto) in [Proto::H1, Proto::H2].into_iter().enumerate() {
            let client = mesh.client(&format!("keep-alive-{i}"), proto);
            let (leaf, mut sender) = handshake(&client, addr).await.unwrap();
            let (stop, total, failures) =
                (Arc::clone(&stop), Arc::clone(&total), Arc::clone(&failures));
            keep_alive.push(tokio::spawn(async move {
                let (mut n, mut ok) = (0usize, 0usize);
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let path = format!("/keep-alive/{i}/{n}");
                    match sender.get(&path).await {
                        Ok(()) => {
                            ok += 1;
                            total.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                    }
                    // Keep the connection busy but let the fresh-connection workers dominate.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (leaf, ok)
            }));
        }
        Self {
            stop,
            total,
            handshakes,
            failures,
            fresh,
            keep_alive,
        }
    }

    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until `n` requests in all have succeeded.
    async fn wait_for_requests(&self, n: usize) {
        eventually(
            Duration::from_secs(10),
            format_args!("fewer than {n} requests succeeded"),
            || async {
                let failures = self.failures.lock().unwrap();
                assert!(failures.is_empty(), "{failures:#?}");
                (self.total() >= n).then_some(())
            },
        )
        .await;
    }

    /// Waits (bounded) until a traffic handshake has presented `leaf`.
    async fn wait_until_seen(&self, leaf: &CertificateDer<'_>) {
        let handshakes = &self.handshakes;
        eventually(
            ROTATION_DEADLINE,
            "the traffic never handshook with the new certificate",
            || async move {
                handshakes
                    .lock()
                    .unwrap()
                    .contains_key(leaf.as_ref())
                    .then_some(())
            },
        )
        .await;
    }

    async fn stop(self) -> TrafficReport {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.fresh {
            task.await.unwrap();
        }
        let mut keep_alive_leaves = Vec::new();
        let mut keep_alive_ok = 0;
        for task in self.keep_alive {
            let (leaf, ok) = task.await.unwrap();
            keep_alive_leaves.push(leaf);
            keep_alive_ok += ok;
        }
        TrafficReport {
            total: self.total.load(Ordering::SeqCst),
            keep_alive_ok,
            keep_alive_leaves,
            handshakes_by_leaf: self.handshakes.lock().unwrap().clone(),
            failures: self.failures.lock().unwrap().clone(),
        }
    }
}

/// A connection's request sender, HTTP/1.1 or HTTP/2 as ALPN chose.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// One GET; anything but a 200 echoing the path is an error.
    async fn get(&mut self, path: &str) -> Result<(), String> {
        let req = Request::get(format!("https://hopgate.test{path}"))
            .header("host", "hopgate.test")
            .body(Empty::new())
            .unwrap();
        let rsp = match self {
            Self::H1(s) => {
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(req).await
            }
            Self::H2(s) => {
                let mut req = req;
                req.headers_mut().remove("host");
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(req).await
            }
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = rsp.status();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let echoed: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("not the app's echo: {e}"))?;
        if echoed["path"] != path {
            return Err(format!("the app saw {} instead", echoed["path"]));
        }
        Ok(())
    }
}

/// Handshakes with the sidecar; the leaf it presented and a sender for requests.
async fn handshake(
    client: &Client,
    addr: SocketAddr,
) -> Result<(CertificateDer<'static>, Sender), String> {
    let tls = client
        .connect(addr)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("the server presented no certificate")?
        .clone()
        .into_owned();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let sender = if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    Ok((leaf, sender))
}

async fn one_request_on_a_new_connection(
    client: &Client,
    addr: SocketAddr,
    path: &str,
) -> Result<CertificateDer<'static>, String> {
    let (leaf, mut sender) = handshake(client, addr).await?;
    sender.get(path).await?;
    Ok(leaf)
}

// === the sidecar and its files ===

/// Starts a sidecar from a config file the test laid out itself.
async fn start_from(config: &Path) -> TestProxyHandle {
    let config = hopgate_config::load(config).unwrap();
    let proxy = hopgate_proxy::Proxy::build(&config).await.unwrap();
    let inbound = proxy.inbound_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));
    TestProxyHandle {
        inbound,
        stop,
        done,
    }
}

/// A sidecar started by [`start_from`].
struct TestProxyHandle {
    inbound: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<bool>,
}

impl TestProxyHandle {
    async fn shutdown(self) -> bool {
        let _ = self.stop.send(());
        self.done.await.unwrap()
    }
}

/// The leaf certificate a fresh handshake is presented with.
async fn server_leaf(mesh: &Mesh, addr: SocketAddr) -> CertificateDer<'static> {
    let client = mesh.client("probe", Proto::H1);
    handshake(&client, addr).await.unwrap().0
}

/// Polls fresh handshakes until the sidecar presents `want` (bounded).
async fn wait_for_server_leaf(mesh: &Mesh, addr: SocketAddr, want: &CertificateDer<'_>) {
    let client = &mesh.client("probe", Proto::H1);
    eventually(
        ROTATION_DEADLINE,
        "the rotated SVID was not presented",
        || async move {
            let (leaf, _) = handshake(client, addr).await.unwrap();
            (leaf.as_ref() == want.as_ref()).then_some(())
        },
    )
    .await;
}

/// The first certificate in a PEM file.
fn leaf_der_in(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// Replaces both files by writing a temp file beside each and renaming it over (atomic per file).
fn rename_over(dir: &Path, leaf: &Leaf) {
    for (name, contents) in [
        ("svid_key.pem", &leaf.key_pem),
        ("svid.pem", &leaf.chain_pem),
    ] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// Converts `dir` to a projected-volume layout holding `leaf`:
/// `svid.pem -> ..data/svid.pem`, `..data -> ..2026_01_01_00_00_0n/`.
fn kubernetes_layout(dir: &Path, leaf: &Leaf, n: usize) {
    let data = timestamped_dir(dir, leaf, n);
    link_over(dir, &data, "..data");
    for name in ["svid_key.pem", "svid.pem"] {
        link_over(dir, Path::new("..data").join(name).as_path(), name);
    }
}

/// Swaps the `..data` link to a new timestamped folder, then removes the old one, as the
/// kubelet's atomic writer does.
fn kubernetes_swap(dir: &Path, leaf: &Leaf, n: usize) {
    let old = std::fs::read_link(dir.join("..data")).unwrap();
    let data = timestamped_dir(dir, leaf, n);
    link_over(dir, &data, "..data");
    std::fs::remove_dir_all(dir.join(old)).unwrap();
}

fn timestamped_dir(dir: &Path, leaf: &Leaf, n: usize) -> std::path::PathBuf {
    let name = std::path::PathBuf::from(format!("..2026_01_01_00_00_{n:02}"));
    std::fs::create_dir(dir.join(&name)).unwrap();
    leaf.write(&dir.join(&name));
    name
}

/// Creates `dir/name` as a symlink to `target` (relative), atomically replacing what was there.
fn link_over(dir: &Path, target: &Path, name: &str) {
    let tmp = dir.join(format!("{name}_tmp"));
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The value of one sample in Prometheus text, or 0 when absent.
fn counter(metrics: &str, sample: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}
