//! The HTTP/1.1 framing and header matrix (docs/security.md, "Request smuggling and
//! ambiguity", "Hop-by-hop hygiene", "Headers the app receives"), written as raw bytes and run
//! on both sides: a peer's TLS connection to the inbound listener, and the local app's plain
//! connection to the outbound listener, whose requests go on through a second sidecar's inbound
//! side to its app. Every row checks both what the caller got and what the app received.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::client::{Client, Proto};
use crate::support::proxy::{Mesh, TestProxy};
use crate::support::upstream::Upstream;
use crate::support::workload::{Workload, Workloads, workload_id};

/// Requests a proxy must answer 400 and never forward, by rule. `{H}` is the side's `Host`.
const REFUSED: &[(&str, &str)] = &[
    // SMG-02..04: the body's length must be unambiguous (SMG-01 and one length twice are read
    // as RFC 9112 says, below).
    (
        "SMG-02",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ),
    (
        "SMG-03",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5, 5\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: -1\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: abc\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1.5\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: \r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5abc\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: +5\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0x5\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5 5\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\x11\r\n\r\nhello",
    ),
    (
        "SMG-04",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 18446744073709551616\r\n\r\nhello",
    ),
    // SMG-05..07: one `chunked`, on HTTP/1.1 only.
    (
        "SMG-05",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\x11\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-05",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    ),
    (
        "SMG-05",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked,chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-06",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-07",
        "POST / HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    // SMG-08..13: a head that is not one exact reading.
    (
        "SMG-08",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-08",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length\t: 5\r\n\r\nhello",
    ),
    (
        "SMG-08",
        "POST / HTTP/1.1\r\n Content-Length: 5\r\nHost: {H}\r\n\r\nhello",
    ),
    (
        "SMG-09",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer_Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-09",
        "POST / HTTP/1.1\r\nHost: {H}\r\nContent_Length: 5\r\n\r\nhello",
    ),
    (
        "SMG-09",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer- Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-09",
        "POST / HTTP/1.1\r\nHost: {H}\r\n\x01Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-09",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTran\u{17f}fer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-09",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encod\u{131}ng: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-10",
        "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\r\n b\r\n\r\n",
    ),
    ("SMG-11", "GET / HTTP/1.1\rHost: {H}\r\r"),
    (
        "SMG-12",
        "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\x00b\r\n\r\n",
    ),
    ("SMG-12", "GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\rb\r\n\r\n"),
    ("SMG-13", "GET / HTTP/1.1\r\nHost: {H}\r\n: empty\r\n\r\n"),
    (
        "SMG-13",
        "GET / HTTP/1.1\r\nHost: {H}\r\n   : blank\r\n\r\n",
    ),
    // SMG-14: a GET or HEAD whose body the app would not expect.
    (
        "SMG-14",
        "GET / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello",
    ),
    (
        "SMG-14",
        "HEAD / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    // SMG-17: one readable authority.
    ("SMG-17", "GET / HTTP/1.1\r\n\r\n"),
    ("SMG-17", "GET / HTTP/1.1\r\nHost: {H}\r\nHost: {H}\r\n\r\n"),
    (
        "SMG-17",
        "GET / HTTP/1.1\r\nHost: {H}\r\nHost: other.svc\r\n\r\n",
    ),
    ("SMG-17", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    (
        "SMG-17",
        "GET http://other.svc/ HTTP/1.1\r\nHost: {H}\r\n\r\n",
    ),
    // SMG-18: a request line that is not one.
    ("SMG-18", "bad_method\x01 / HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    ("SMG-18", "GET  / HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    ("SMG-18", "GET / HTTP/1.2\r\nHost: {H}\r\n\r\n"),
    ("SMG-18", "GET /\r\n\r\n"),
    // SMG-22: `Connection` may not take the framing fields away.
    (
        "SMG-22",
        "GET / HTTP/1.1\r\nHost: {H}\r\nConnection: content-length\r\n\r\n",
    ),
    (
        "SMG-22",
        "GET / HTTP/1.1\r\nHost: {H}\r\nConnection: host\r\n\r\n",
    ),
    (
        "SMG-22",
        "GET / HTTP/1.1\r\nHost: {H}\r\nConnection: transfer-encoding\r\n\r\n",
    ),
    // PATH-04: raw spaces in the target.
    ("PATH-04", "GET /a?q=b c HTTP/1.1\r\nHost: {H}\r\n\r\n"),
];

/// Chunked bodies that are not (SMG-15): 400 and closed; the app, which may have had the head
/// by then, sees its body break off.
const BROKEN_BODY: &[(&str, &str)] = &[
    (
        "SMG-15",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-15",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-15",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-15",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "SMG-15",
        "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    ),
];

#[tokio::test]
async fn both_sides_refuse_every_ambiguous_http1_request_and_forward_none_smg_01_to_smg_22() {
    let sides = Sides::start().await;
    let mut failures = Vec::new();
    for side in sides.each() {
        for (id, template) in REFUSED {
            let request = template.replace("{H}", side.host);
            let before = side.app_requests().len();
            let (reply, closed) = side.exchange(request.as_bytes()).await;
            let status = status_of(&reply);
            let forwarded = side.app_requests().len() != before;
            if status != Some(400) || !closed || forwarded {
                failures.push(format!(
                    "{} {id} {request:?}: status {status:?}, closed {closed}, forwarded {forwarded}",
                    side.name
                ));
            }
        }
        let received: Vec<_> = side.app_requests().into_iter().map(|r| r.0).collect();
        if !received.is_empty() {
            failures.push(format!("{}: the app received {received:?}", side.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn both_sides_answer_a_broken_chunked_body_400_and_close_smg_15() {
    let sides = Sides::start().await;
    for side in sides.each() {
        for (id, template) in BROKEN_BODY {
            let request = template.replace("{H}", side.host);
            let (reply, closed) = side.exchange(request.as_bytes()).await;
            assert_eq!(
                status_of(&reply),
                Some(400),
                "{} {id} {request:?}",
                side.name
            );
            assert!(closed, "{} {id}: the connection stayed open", side.name);
        }
    }
}

#[tokio::test]
async fn both_sides_read_what_rfc_9112_lets_them_read_one_way_and_forward_it_reframed() {
    let sides = Sides::start().await;
    for side in sides.each() {
        let name = side.name;
        // SMG-01: chunked wins over Content-Length (RFC 9112 §6.3), and the connection closes.
        let request = "POST /te-and-cl HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let (reply, closed) = side
            .exchange(request.replace("{H}", side.host).as_bytes())
            .await;
        assert_eq!(status_of(&reply), Some(200), "{name} SMG-01");
        assert!(
            closed,
            "{name} SMG-01: a connection with both framings stayed open"
        );
        // SMG-03: one length sent twice is one length (RFC 9110 §8.6).
        let request = "POST /twice HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
        let (reply, _) = side
            .exchange(request.replace("{H}", side.host).as_bytes())
            .await;
        assert_eq!(status_of(&reply), Some(200), "{name} SMG-03");
        // SMG-11: a bare LF ends a line (RFC 9112 §2.2 lets a recipient read it so); the app
        // gets the request with CRLFs.
        let request = "GET /bare-lf HTTP/1.1\nHost: {H}\n\n";
        let (reply, _) = side
            .exchange(request.replace("{H}", side.host).as_bytes())
            .await;
        assert_eq!(status_of(&reply), Some(200), "{name} SMG-11");
        let seen = side.app_requests();
        let at = |path: &str| {
            let found = seen.iter().find(|(p, _)| p == path);
            found
                .unwrap_or_else(|| panic!("{name}: {path} not received"))
                .1
                .clone()
        };
        assert!(
            at("/te-and-cl")
                .get("content-length")
                .is_none_or(|v| v == "5"),
            "{name}"
        );
        assert_eq!(
            at("/twice").get_all("content-length").iter().count(),
            1,
            "{name}"
        );
        at("/bare-lf");
    }
}

#[tokio::test]
async fn both_sides_close_after_a_refusal_so_a_pipelined_request_is_never_served_smg_19() {
    let sides = Sides::start().await;
    for side in sides.each() {
        let request = "POST / HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {H}\r\n\r\n";
        let (reply, closed) = side
            .exchange(request.replace("{H}", side.host).as_bytes())
            .await;
        assert_eq!(status_of(&reply), Some(400), "{}", side.name);
        assert!(closed, "{}: the connection stayed open", side.name);
        assert_eq!(
            reply.matches("HTTP/1.1 ").count(),
            1,
            "{}: {reply}",
            side.name
        );
        assert!(side.app_requests().is_empty(), "{}", side.name);
    }
}

#[tokio::test]
async fn both_sides_drop_trailers_upgrades_and_hop_by_hop_fields_smg_16_smg_21_hdr_05() {
    let sides = Sides::start().await;
    for side in sides.each() {
        let name = side.name;
        // SMG-16: trailers never reach the app, whatever they name.
        let request = "POST /trailers HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\nHost: evil.svc\r\nAuthorization: Bearer x\r\nTxn-Token: y\r\nX-Forwarded-Client-Cert: By=spiffe://evil\r\n\r\n";
        let (reply, _) = side
            .exchange(request.replace("{H}", side.host).as_bytes())
            .await;
        assert_eq!(status_of(&reply), Some(200), "{name} SMG-16: {reply}");
        // SMG-21, HDR-05: no upgrade to h2c, and no hop-by-hop field travels.
        let request = "GET /hop HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade, X-Nominated\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Nominated: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nProxy-Authorization: Basic eDp5\r\n\r\n";
        let (reply, _) = side
            .exchange(request.replace("{H}", side.host).as_bytes())
            .await;
        assert_eq!(status_of(&reply), Some(200), "{name} SMG-21: {reply}");
        let seen = side.app_requests();
        for (path, headers) in &seen {
            for field in [
                "txn-token",
                "authorization",
                "upgrade",
                "http2-settings",
                "x-nominated",
                "keep-alive",
                "proxy-connection",
                "te",
                "proxy-authorization",
                "connection",
            ] {
                assert!(
                    headers.get(field).is_none(),
                    "{name} {path}: {field} reached the app"
                );
            }
            let hosts: Vec<_> = headers.get_all("host").iter().collect();
            assert!(
                hosts.iter().all(|h| *h != "evil.svc"),
                "{name} {path}: {hosts:?}"
            );
            let xfcc: Vec<_> = headers.get_all("x-forwarded-client-cert").iter().collect();
            assert_eq!(xfcc.len(), 1, "{name} {path}: {xfcc:?}");
            let caller = side.caller_id();
            let xfcc = xfcc[0].to_str().unwrap();
            assert!(
                xfcc.ends_with(&format!(";URI={caller}")),
                "{name} {path}: {xfcc}"
            );
        }
        assert_eq!(seen.len(), 2, "{name}");
    }
}

#[tokio::test]
async fn both_sides_replace_a_callers_identity_header_under_every_spelling_hdr_01_to_hdr_04() {
    let sides = Sides::start().await;
    for side in sides.each() {
        let name = side.name;
        let spoofs = [
            "X-Forwarded-Client-Cert: By=spiffe://example.org/x;URI=spiffe://example.org/admin\r\n",
            "x-forwarded-client-cert: URI=spiffe://example.org/admin\r\nX-FORWARDED-CLIENT-CERT: URI=spiffe://example.org/root\r\n",
            "x-forwarded-client-cert: URI=spiffe://example.org/a, URI=spiffe://example.org/b\r\n",
            "x_forwarded_client_cert: URI=spiffe://example.org/admin\r\n",
            "Connection: close, x-forwarded-client-cert\r\nX-Forwarded-Client-Cert: URI=spiffe://example.org/admin\r\n",
        ];
        for spoof in spoofs {
            let request = format!("GET /spoof HTTP/1.1\r\nHost: {}\r\n{spoof}\r\n", side.host);
            let (reply, _) = side.exchange(request.as_bytes()).await;
            assert_eq!(status_of(&reply), Some(200), "{name} {spoof:?}: {reply}");
        }
        let seen = side.app_requests();
        assert_eq!(seen.len(), spoofs.len(), "{name}");
        for (_, headers) in seen {
            let xfcc: Vec<_> = headers.get_all("x-forwarded-client-cert").iter().collect();
            assert_eq!(xfcc.len(), 1, "{name}: {xfcc:?}");
            let xfcc = xfcc[0].to_str().unwrap();
            assert!(
                !xfcc.contains("admin") && !xfcc.contains("root"),
                "{name}: {xfcc}"
            );
            assert!(
                xfcc.ends_with(&format!(";URI={}", side.caller_id())),
                "{name}: {xfcc}"
            );
            assert!(headers.get("x_forwarded_client_cert").is_none(), "{name}");
        }
    }
}

// === helpers ===

/// Both listeners, each in front of an app that records what it received.
struct Sides {
    _mesh: Mesh,
    inbound: TestProxy,
    inbound_app: Upstream,
    caller: Client,
    _workloads: Workloads,
    server: Workload,
    agent: Workload,
}

/// One side, as the rows see it.
struct Side<'a> {
    name: &'static str,
    host: &'static str,
    sides: &'a Sides,
}

impl Sides {
    async fn start() -> Self {
        let inbound_app = Upstream::start().await;
        let mesh = Mesh::new();
        let inbound = mesh.proxy(inbound_app.addr).start().await;
        let caller = mesh.client("caller", Proto::H1);
        let workloads = Workloads::new();
        let server = workloads.workload("server").start().await;
        let agent = workloads
            .workload("agent")
            .client_only()
            .route("server.svc", &server, &["generate"])
            .start()
            .await;
        Self {
            _mesh: mesh,
            inbound,
            inbound_app,
            caller,
            _workloads: workloads,
            server,
            agent,
        }
    }

    fn each(&self) -> [Side<'_>; 2] {
        [
            Side {
                name: "inbound",
                host: "app",
                sides: self,
            },
            Side {
                name: "outbound",
                host: "server.svc",
                sides: self,
            },
        ]
    }
}

impl Side<'_> {
    /// Writes `request` on a new connection; the reply, and whether the connection was closed
    /// after it.
    async fn exchange(&self, request: &[u8]) -> (String, bool) {
        if self.name == "inbound" {
            let tls = self.sides.caller.connect(self.sides.inbound.inbound).await;
            exchange(tls.unwrap(), request).await
        } else {
            exchange(plain(self.sides.agent.outbound).await, request).await
        }
    }

    /// The path and headers of every request the app behind this side received.
    fn app_requests(&self) -> Vec<(String, http::HeaderMap)> {
        if self.name == "inbound" {
            let received = self.sides.inbound_app.received();
            received.into_iter().map(|r| (r.path, r.headers)).collect()
        } else {
            let received = self.sides.server.app.received();
            received.into_iter().map(|r| (r.path, r.headers)).collect()
        }
    }

    /// The SPIFFE ID the app behind this side is told its caller has.
    fn caller_id(&self) -> String {
        if self.name == "inbound" {
            "spiffe://example.org/ns/test/sa/caller".to_owned()
        } else {
            workload_id("agent")
        }
    }
}

async fn plain(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Writes `request`, reads the first response (its head and a `content-length` body), then
/// whether the server closes the connection within 2 s of it.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> (String, bool) {
    // A server may close before reading everything: a failed write is part of the answer.
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    let mut closed = false;
    let read = async {
        loop {
            if response_complete(&buf, request.starts_with(b"HEAD ")) {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    closed = true;
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return ("no answer within 5 s".to_owned(), false);
    }
    if !closed {
        let mut chunk = [0u8; 4096];
        let rest = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await;
        closed = matches!(rest, Ok(Ok(0) | Err(_)));
    }
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// A whole response head is in, with its `content-length` body unless it answers a HEAD.
fn response_complete(buf: &[u8], head_request: bool) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    if head_request {
        return true;
    }
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok());
    length.is_none_or(|length| body.len() >= length)
}

fn status_of(reply: &str) -> Option<u16> {
    reply.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}
