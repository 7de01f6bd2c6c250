//! SVID rotation on both ends of a hop under continuous load: app → A → B, with A's SVID, B's,
//! or both rotated while requests keep flowing. A hop token's `cnf` names the SVID that minted
//! it and B checks it against the connection it arrives on, so after A rotates, its tokens must
//! travel on connections made with A's new SVID: no request may fail `401 binding`, or at all.
//! A long response open across the rotation keeps its connection and completes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use crate::support::eventually::eventually;
use crate::support::pki::Leaf;
use crate::support::workload::{Workload, Workloads, workload_id};

/// How long a rotation may take to reach A's new connections (the watcher debounces 250 ms).
const ROTATION_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caller_rotation_under_load_fails_no_request() {
    let mesh = Workloads::new();
    let (a, b) = pair(&mesh).await;
    let load = Load::start(a.outbound, 3);
    load.wait_for(30).await;
    let leaf = rotate(&mesh, "a");
    wait_until_b_sees(&b, &leaf).await;
    load.carry_on(30).await;
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callee_rotation_under_load_fails_no_request() {
    let mesh = Workloads::new();
    let (a, b) = pair(&mesh).await;
    let load = Load::start(a.outbound, 3);
    load.wait_for(30).await;
    rotate(&mesh, "b");
    wait_for_identity_reloads(&b, 1).await;
    load.carry_on(30).await;
    // A later rotation of A makes new connections, which meet B's new certificate.
    let leaf = rotate(&mesh, "a");
    wait_until_b_sees(&b, &leaf).await;
    load.carry_on(30).await;
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_of_both_ends_at_once_under_load_fails_no_request() {
    let mesh = Workloads::new();
    let (a, b) = pair(&mesh).await;
    let load = Load::start(a.outbound, 3);
    load.wait_for(30).await;
    for _ in 0..3 {
        rotate(&mesh, "b");
        let leaf = rotate(&mesh, "a");
        wait_until_b_sees(&b, &leaf).await;
        load.carry_on(20).await;
    }
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_open_across_the_callers_rotation_keeps_its_connection_to_the_end() {
    let mesh = Workloads::new();
    let (a, b) = pair(&mesh).await;
    let old = leaf_in(&mesh.dir_of("a"));
    let load = Load::start(a.outbound, 2);
    load.wait_for(10).await;

    // 40 chunks, 100 ms apart: open for about 4 s.
    let mut stream = open_stream(a.outbound, "/stream/40").await;
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "chunk 0\n");
    let leaf = rotate(&mesh, "a");
    wait_until_b_sees(&b, &leaf).await;
    load.carry_on(10).await;

    let rest = stream.collect().await.unwrap().to_bytes();
    let lines = String::from_utf8_lossy(&rest).lines().count();
    assert_eq!(lines, 39, "the stream ended early: {rest:?}");
    let streamed = b
        .app
        .received()
        .into_iter()
        .find(|r| r.path == "/stream/40")
        .unwrap();
    assert!(
        xfcc(&streamed).contains(&format!("Hash={}", hex_sha256(&old))),
        "the stream kept the connection made with the old SVID"
    );
    load.finish().await;
}

/// A (client and outbound) → B, identity-only.
async fn pair(mesh: &Workloads) -> (Workload, Workload) {
    let b = mesh.workload("b").start().await;
    let a = mesh
        .workload("a")
        .client_only()
        .route("b.test", &b, &["read"])
        .start()
        .await;
    (a, b)
}

/// Issues `name` a new SVID and renames it over its files, key first.
fn rotate(mesh: &Workloads, name: &str) -> Leaf {
    let leaf = mesh.ca.leaf(&workload_id(name)).build();
    let dir = mesh.dir_of(name);
    for (file, contents) in [
        ("svid_key.pem", &leaf.key_pem),
        ("svid.pem", &leaf.chain_pem),
    ] {
        let tmp = dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, contents).unwrap();
        std::fs::rename(&tmp, dir.join(file)).unwrap();
    }
    leaf
}

/// Waits until B's app receives a request whose XFCC names `leaf`: A's connections present it.
async fn wait_until_b_sees(b: &Workload, leaf: &Leaf) {
    let want = &format!("Hash={}", hex_sha256(&leaf.cert_der));
    eventually(
        ROTATION_DEADLINE,
        "A's rotation never reached B",
        || async move {
            b.app
                .received()
                .iter()
                .rev()
                .take(20)
                .any(|r| xfcc(r).contains(want))
                .then_some(())
        },
    )
    .await;
}

async fn wait_for_identity_reloads(w: &Workload, at_least: u32) {
    let sample = r#"hopgate_identity_reloads_total{result="ok"} "#;
    eventually(ROTATION_DEADLINE, "no identity reload", || async move {
        let (_, metrics) = w.admin_get("/metrics").await;
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        (count >= f64::from(at_least)).then_some(())
    })
    .await;
}

pub(crate) fn xfcc(received: &crate::support::workload::Received) -> String {
    received
        .headers
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn hex_sha256(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn leaf_in(dir: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_file_iter(dir.join("svid.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    der.to_vec()
}

/// `GET path` to B through A's outbound listener; the response body still streaming.
async fn open_stream(outbound: SocketAddr, path: &str) -> hyper::body::Incoming {
    let tcp = tokio::net::TcpStream::connect(outbound).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "b.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    rsp.into_body()
}

/// Callers sending `GET /` to `b.test` through A's outbound listener, one request at a time
/// each, on keep-alive connections (reopened after a failure), recording every failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(outbound: SocketAddr, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|_| {
                let (stop, ok, failures) =
                    (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match keep_alive_calls(outbound, &stop, &ok).await {
                            Ok(()) => {}
                            Err(failure) => failures.lock().unwrap().push(failure),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            workers,
        }
    }

    async fn wait_for(&self, n: usize) {
        let ok = &self.ok;
        eventually(
            Duration::from_secs(20),
            "the load made no progress",
            || async move { (ok.load(Ordering::SeqCst) >= n).then_some(()) },
        )
        .await;
    }

    /// Waits for `n` more successful requests.
    async fn carry_on(&self, n: usize) {
        self.wait_for(self.ok.load(Ordering::SeqCst) + n).await;
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let ok = self.ok.load(Ordering::SeqCst);
        let failures = self.failures.lock().unwrap();
        eprintln!("{ok} requests succeeded, {} failed", failures.len());
        assert!(failures.is_empty(), "failed requests: {failures:#?}");
    }
}

/// Requests on one connection until stopped; the first failure ends it.
async fn keep_alive_calls(
    outbound: SocketAddr,
    stop: &AtomicBool,
    ok: &AtomicUsize,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(outbound)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    while !stop.load(Ordering::SeqCst) {
        let req = Request::get("/")
            .header("host", "b.test")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let rsp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = rsp.status();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != 200 {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        ok.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
