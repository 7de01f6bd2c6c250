//! Test doubles for the outbound edge tests: a connection-counting relay, an app that holds
//! requests until enough are in flight, a non-hopgate HTTP/1.1-only mTLS destination, and raw
//! request helpers (curl, hand-written HTTP/1.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::support::eventually::eventually;
use crate::support::pki::Leaf;
use crate::support::workload::{WorkloadBuilder, plain_request};

/// Starts `builder`'s sidecar in-process in front of `app` (any app, not only a `RelayApp`).
/// Returns its inbound address, and a sender whose drop stops it.
pub(super) async fn sidecar_in_front_of(
    builder: &WorkloadBuilder<'_>,
    app: SocketAddr,
) -> (SocketAddr, oneshot::Sender<()>) {
    let config = hopgate_config::load(&builder.write(app)).unwrap();
    let audit = hopgate_proxy::telemetry::audit::AuditSink::Memory(Arc::default());
    let proxy = hopgate_proxy::Proxy::build_with_audit(&config, audit)
        .await
        .unwrap();
    let inbound = proxy.inbound_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(proxy.run(async move {
        let _ = stopped.await;
    }));
    (inbound, stop)
}

/// Runs curl (`--silent --show-error --max-time 10`, status and HTTP version appended to the
/// body) and returns (exit code, stdout, stderr).
pub(super) async fn curl(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(["--write-out", "\n%{http_code} %{http_version}"])
            .args(&args)
            .output()
            .expect("curl is installed (.ci/run installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// Writes `request` as is on a fresh connection to `addr` and reads one response with a
/// `content-length`: (status, body).
pub(super) async fn raw_exchange(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(response) = complete_response(&buf) {
                return response;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            let so_far = String::from_utf8_lossy(&buf);
            assert!(n > 0, "closed before a whole response: {so_far:?}");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

/// (status, body) once `buf` holds a whole response head and its `content-length` body.
fn complete_response(buf: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| value.trim().parse().unwrap());
    (body.len() >= length).then(|| (status, body[..length].to_owned()))
}

/// A TCP relay to `target` that counts the connections it accepted and those still open.
pub(super) struct CountingRelay {
    pub(super) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

impl CountingRelay {
    pub(super) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (count, live) = (Arc::clone(&accepted), Arc::clone(&open));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                live.fetch_add(1, Ordering::SeqCst);
                let live = Arc::clone(&live);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            open,
        }
    }

    pub(super) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until exactly `n` relayed connections are open.
    pub(super) async fn settles_on(&self, n: usize) {
        let open = &self.open;
        eventually(
            Duration::from_secs(5),
            format_args!("connections still open, expected {n}"),
            || async move { (open.load(Ordering::SeqCst) == n).then_some(()) },
        )
        .await;
    }
}

/// An app that answers `/together` only once `n` such requests are in flight at the same time
/// (`504` after 10 s otherwise), and anything else at once.
pub(super) struct GatheringApp {
    pub(super) addr: SocketAddr,
}

impl GatheringApp {
    pub(super) async fn start(n: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrived = Arc::new(AtomicUsize::new(0));
        let (all_here, _) = watch::channel(false);
        let all_here = Arc::new(all_here);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (arrived, all_here) = (Arc::clone(&arrived), Arc::clone(&all_here));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (arrived, all_here) = (Arc::clone(&arrived), Arc::clone(&all_here));
                    async move {
                        if req.uri().path() != "/together" {
                            return Ok::<_, Infallible>(text(200, "alone"));
                        }
                        let mut released = all_here.subscribe();
                        if arrived.fetch_add(1, Ordering::SeqCst) + 1 >= n {
                            all_here.send_replace(true);
                        }
                        let wait = released.wait_for(|all| *all);
                        Ok(
                            match tokio::time::timeout(Duration::from_secs(10), wait).await {
                                Ok(Ok(_)) => text(200, "together"),
                                _ => text(504, "not all arrived"),
                            },
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr }
    }
}

/// `n` concurrent `GET http://inference.ml/together` calls to `outbound`: each reply as
/// `together` when it was a 200 with that body, else as its status and body.
pub(super) async fn together(outbound: SocketAddr, n: usize) -> Vec<String> {
    let mut calls = JoinSet::new();
    for _ in 0..n {
        calls.spawn(plain_request(
            outbound,
            "GET",
            "inference.ml",
            "/together",
            &[],
        ));
    }
    let mut replies = Vec::new();
    while let Some(reply) = calls.join_next().await {
        let reply = reply.unwrap();
        replies.push(if reply.status == 200 {
            reply.body
        } else {
            format!("{} {}", reply.status, reply.body)
        });
    }
    replies
}

fn text(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    rsp
}

/// A destination that is not hopgate: a rustls server offering only `http/1.1` by ALPN,
/// requiring a client certificate of the mesh, serving HTTP/1.1 and recording what it saw.
pub(super) struct Http1Server {
    pub(super) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    pub(super) seen: Arc<Mutex<Vec<Seen>>>,
}

/// One request at [`Http1Server`], with what its connection negotiated.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub(super) alpn: Option<Vec<u8>>,
    pub(super) client_cert: Option<CertificateDer<'static>>,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
}

impl Http1Server {
    pub(super) async fn start(svid: &Leaf, root: CertificateDer<'static>) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(http1_only_config(svid, root)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (Arc::clone(&accepted), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, record) = (acceptor.clone(), Arc::clone(&record));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let session = tls.get_ref().1;
                    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                    let client_cert = session.peer_certificates().and_then(|c| c.first().cloned());
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        record.lock().unwrap().push(Seen {
                            alpn: alpn.clone(),
                            client_cert: client_cert.clone(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        async { Ok::<_, Infallible>(text(200, "http/1.1 ok")) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            accepted,
            seen,
        }
    }

    pub(super) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn http1_only_config(svid: &Leaf, root: CertificateDer<'static>) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(root).unwrap();
    let clients =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .unwrap();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(clients)
        .with_single_cert(
            svid.chain_der.clone(),
            PrivateKeyDer::Pkcs8(svid.key_der.clone_key()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}
