//! Callers that go away together cost nothing to the other requests on a pooled hop connection
//! (DOS-07 in docs/security.md, "Cancelled requests").
//!
//! A destination sidecar counts streams that are reset before it has taken them up (its
//! rapid-reset guard) and closes the connection past `inbound.limits.max_pending_resets`. A
//! source whose callers cancel many requests at once, while the destination has not yet read
//! them, must not trip it: that GOAWAY would fail every other request sharing the connection.
//! The hop between the sidecars runs through a [`Gate`] that holds the source's bytes, so the
//! destination reads the requests and whatever follows them in one burst.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::eventually::eventually;
use crate::support::workload::{RouteSpec, Workload, Workloads};

/// A TCP relay whose client → server direction can be held: while it is closed, what the
/// client sends is read and kept, and on opening it is written in one piece.
struct Gate {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    /// Bytes kept while closed.
    held: Arc<AtomicUsize>,
    /// Connections relayed so far.
    accepted: Arc<AtomicUsize>,
}

impl Gate {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = watch::channel(true);
        let held = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (rx, kept, count) = (open.subscribe(), Arc::clone(&held), Arc::clone(&accepted));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let server = TcpStream::connect(to).await.unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    let _ = to_client.shutdown().await;
                });
                let (mut rx, kept) = (rx.clone(), Arc::clone(&kept));
                tokio::spawn(async move {
                    let (mut pending, mut buf) = (Vec::new(), vec![0; 65536]);
                    loop {
                        tokio::select! {
                            read = from_client.read(&mut buf) => match read {
                                Ok(0) | Err(_) => break,
                                Ok(n) => pending.extend_from_slice(&buf[..n]),
                            },
                            changed = rx.changed() => if changed.is_err() { break },
                        }
                        if *rx.borrow() && !pending.is_empty() {
                            if to_server.write_all(&pending).await.is_err() {
                                break;
                            }
                            pending.clear();
                        }
                        kept.store(pending.len(), Ordering::SeqCst);
                    }
                    let _ = to_server.shutdown().await;
                });
            }
        });
        Self {
            addr,
            open,
            held,
            accepted,
        }
    }

    fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Waits (at most 5 s) until the bytes held have stopped growing, and returns how many
    /// there are.
    async fn settled(&self) -> usize {
        let mut last = self.held();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.held();
            if now == last && now > 0 {
                return now;
            }
            last = now;
        }
        panic!("a's bytes to b did not settle at the gate ({last} held)");
    }
}

/// `GET http://b.svc<path>` sent to `a`'s outbound listener over HTTP/1.1, its whole body read:
/// the status and the body, or why it failed.
async fn fetch(a: SocketAddr, path: &'static str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(a).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "b.svc")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// `a` → gate → `b`, with `b` closing a connection past `max_pending_resets` (5) resets, and
/// `limits` (indented YAML lines) among its other `inbound.limits`.
async fn pair(mesh: &Workloads, limits: &str) -> (Workload, Workload, Gate) {
    let b = mesh
        .workload("b")
        .inbound_yaml(&format!("  limits:\n    max_pending_resets: 5\n{limits}"))
        .start()
        .await;
    let gate = Gate::start(b.inbound.unwrap()).await;
    let a = mesh
        .workload("a")
        .client_only()
        .route_spec(RouteSpec {
            host: "b.svc".to_owned(),
            address: gate.addr.to_string(),
            identity: b.id.clone(),
            scopes: vec!["read".to_owned()],
            original_dst: None,
        })
        .start()
        .await;
    (a, b, gate)
}

/// Twenty calls of `/stream/50` on one HTTP/2 connection to `a`, held at the gate on their way
/// to b; then their caller goes away, so a cancels all twenty before b has read any of them; then
/// the gate opens, within half a second of the cancel.
async fn cancelled_burst(a: &Workload, gate: &Gate) {
    gate.open.send_replace(false);
    let io = TokioIo::new(TcpStream::connect(a.outbound).await.unwrap());
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut sender = sender.clone();
        let req = Request::get("http://b.svc/stream/50")
            .body(Empty::<Bytes>::new())
            .unwrap();
        calls.spawn(async move { sender.send_request(req).await });
    }
    let heads = gate.settled().await;
    calls.abort_all();
    conn.abort();
    drop(sender);
    // What a sends now (the resets, without lingering) joins the heads at the gate.
    for _ in 0..10 {
        if gate.held() > heads {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gate.open.send_replace(true);
}

/// A call made now is answered 200, on the hop connection of before (the gate has relayed no
/// more than `connections`).
async fn still_serving(a: &Workload, gate: &Gate, connections: usize) {
    let (status, _) = fetch(a.outbound, "/after").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        gate.accepted.load(Ordering::SeqCst),
        connections,
        "the hop connection was not replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dos_07_callers_cancelling_together_leave_the_pooled_hop_connection_serving() {
    let mesh = Workloads::new();
    let (a, b, gate) = pair(&mesh, "").await;
    // A long response on the pooled connection: 20 chunks, 100 ms apart.
    let long = tokio::spawn(fetch(a.outbound, "/stream/20"));
    eventually(
        Duration::from_secs(5),
        "the long request reached b's app",
        || {
            let seen = b.app.received().iter().any(|r| r.path == "/stream/20");
            async move { seen.then_some(()) }
        },
    )
    .await;
    // The protocol probe's connection, and the pooled one.
    let connections = gate.accepted.load(Ordering::SeqCst);

    cancelled_burst(&a, &gate).await;

    let (status, body) = long.await.unwrap().expect("the long response is whole");
    assert_eq!(status, 200);
    assert!(body.ends_with("chunk 19\n"), "{body}");
    still_serving(&a, &gate, connections).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dos_07_callers_leaving_while_their_calls_wait_for_a_stream_spare_the_hop_connection() {
    let mesh = Workloads::new();
    // b takes two streams at a time on a connection: eighteen of the twenty wait in a, and h2
    // would send the HEADERS of those it holds with their resets right behind.
    let (a, _b, gate) = pair(&mesh, "    max_concurrent_streams: 2\n").await;
    assert_eq!(fetch(a.outbound, "/warm").await.unwrap().0, 200);
    let connections = gate.accepted.load(Ordering::SeqCst);

    cancelled_burst(&a, &gate).await;

    still_serving(&a, &gate, connections).await;
}
