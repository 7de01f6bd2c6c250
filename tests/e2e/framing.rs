//! HTTP/1.1 framing on both sides, written by hand: a body's `Transfer-Encoding` must be one
//! `chunked` (SMG-05, SMG-06), a request must name its `Host` (SMG-17), and a malformed chunked
//! body is the caller's fault, answered 400 (SMG-15). See docs/security.md, "HTTP framing and
//! smuggling".

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::Proto;
use crate::support::proxy::Mesh;
use crate::support::upstream::Upstream;
use crate::support::workload::{Workload, Workloads};

/// Bodies framed in ways a proxy must refuse (SMG-05, SMG-06): chunked twice on one line or
/// two, a coding the app would get still applied, a coding that is not one.
const BAD_FRAMING: [&str; 6] = [
    "Transfer-Encoding: chunked, chunked\r\n",
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: chunked, identity\r\n",
    "Transfer-Encoding: xchunked\r\n",
];

/// A chunked body whose first chunk size is not hex.
const MALFORMED_CHUNKS: &str = "zz\r\nhello\r\n0\r\n\r\n";

#[tokio::test]
async fn inbound_refuses_a_body_framed_other_than_by_one_chunked_smg_05_smg_06() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let client = mesh.client("caller", Proto::H1);
    for framing in BAD_FRAMING {
        let tls = client.connect(proxy.inbound).await.unwrap();
        let request =
            format!("POST / HTTP/1.1\r\nHost: app\r\n{framing}\r\n5\r\nhello\r\n0\r\n\r\n");
        let (status, _) = exchange(tls, &request).await;
        assert_eq!(status, 400, "{framing:?}");
    }
    assert!(
        app.received().is_empty(),
        "a refused request reached the app"
    );
}

#[tokio::test]
async fn outbound_refuses_a_body_framed_other_than_by_one_chunked_smg_05_smg_06() {
    let (_mesh, server, agent) = pair().await;
    for framing in BAD_FRAMING {
        let request =
            format!("POST / HTTP/1.1\r\nHost: server.svc\r\n{framing}\r\n5\r\nhello\r\n0\r\n\r\n");
        let (status, _) = exchange(plain(agent.outbound).await, &request).await;
        assert_eq!(status, 400, "{framing:?}");
    }
    assert!(server.app.received().is_empty());
}

#[tokio::test]
async fn one_chunked_coding_is_still_forwarded_whatever_its_case_smg_05() {
    let (_mesh, server, agent) = pair().await;
    let request = "POST / HTTP/1.1\r\nHost: server.svc\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let (status, body) = exchange(plain(agent.outbound).await, request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.app.received().len(), 1);
}

#[tokio::test]
async fn an_http1_request_without_host_is_refused_on_both_sides_smg_17() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let tls = mesh
        .client("caller", Proto::H1)
        .connect(proxy.inbound)
        .await
        .unwrap();
    let (status, _) = exchange(tls, "GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, 400, "inbound");
    assert!(app.received().is_empty());

    let (_mesh, server, agent) = pair().await;
    let (status, _) = exchange(plain(agent.outbound).await, "GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, 400, "outbound");
    assert!(server.app.received().is_empty());
}

#[tokio::test]
async fn inbound_answers_a_malformed_chunked_body_400_and_counts_it_a_deny_smg_15() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let tls = mesh
        .client("caller", Proto::H1)
        .connect(proxy.inbound)
        .await
        .unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n{MALFORMED_CHUNKS}"
    );
    let (status, body) = exchange(tls, &request).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hopgate_requests_total") && l.contains("decision=\"deny\"")),
        "counted as the caller's fault, not an allow: {metrics}"
    );
}

#[tokio::test]
async fn outbound_answers_a_malformed_chunked_body_400_and_records_bad_request_smg_15() {
    let (_mesh, _server, agent) = pair().await;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: server.svc\r\nTransfer-Encoding: chunked\r\n\r\n{MALFORMED_CHUNKS}"
    );
    let (status, body) = exchange(plain(agent.outbound).await, &request).await;
    assert_eq!(status, 400, "{body}");
    let records = agent.audit.lock().unwrap().clone();
    assert!(
        records
            .iter()
            .any(|r| r.contains(r#""effect":"bad_request""#) && r.contains(r#""reason":"body""#)),
        "{records:?}"
    );
}

// === helpers ===

/// A server workload, and an agent with a route `server.svc` to it; the mesh holds their files.
async fn pair() -> (Workloads, Workload, Workload) {
    let mesh = Workloads::new();
    let server = mesh.workload("server").start().await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("server.svc", &server, &["generate"])
        .start()
        .await;
    (mesh, server, agent)
}

async fn plain(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Writes `request` as is and reads the response until the connection closes or a whole
/// `content-length` body is in: (status, head and body).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, value)| value.trim().parse::<usize>().ok());
                if length.is_some_and(|length| body.len() >= length) {
                    break;
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no response: {text:?}"));
    (status, text)
}
