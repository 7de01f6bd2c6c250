//! The HTTP/2 rows of the framing and abuse matrix, as hand-written frames on both sides: the
//! inbound listener (TLS, ALPN `h2`, a caller's SVID) and the outbound listener (h2c with prior
//! knowledge, from the local app). Every row runs on both; each asserts what the caller got
//! and what the app behind the sidecar received (docs/security.md, "Request smuggling and
//! ambiguity", "Headers the app receives", "Resource limits and timeouts").

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};

use crate::support::client::{Client, Proto};
use crate::support::eventually::eventually;
use crate::support::proxy::{Mesh, SERVER_ID, TestProxy};
use crate::support::workload::{Workload, Workloads, workload_id};

use self::frames::{Block, Conn, Outcome};

mod frames;

/// The smallest `max_header_bytes` the config accepts (docs/configuration.md).
const LIMITS: &str = "  limits: { max_header_bytes: 8192 }\n";
/// The upper bound of every wait: generous, never a performance claim.
const WAIT: Duration = Duration::from_secs(10);

// === rows ===

#[tokio::test]
async fn a_well_formed_h2_get_is_answered_200_and_reaches_the_app_once_on_both_sides() {
    let sides = Sides::start().await;
    for side in sides.both() {
        side.control().await;
        let seen = side.app.received();
        assert_eq!(seen.len(), 1, "{}: {seen:?}", side.name);
        assert_eq!(seen[0].path, "/ok");
        assert_eq!(view(&seen[0].headers), side.base_view(), "{}", side.name);
        assert_eq!(seen[0].body, Some(Ok(0)), "{}", side.name);
    }
}

#[tokio::test]
async fn inbound_and_outbound_refuse_h2_connection_specific_headers_smg_20() {
    let rows: [(&str, &[u8]); 6] = [
        ("transfer-encoding", b"chunked"),
        ("connection", b"keep-alive"),
        ("keep-alive", b"timeout=5"),
        ("upgrade", b"websocket"),
        ("proxy-connection", b"keep-alive"),
        ("te", b"gzip"),
    ];
    let sides = Sides::start().await;
    for side in sides.both() {
        for (name, value) in rows {
            let block = side.get("/r").literal(name.as_bytes(), value);
            side.refused(name, &frames::headers(1, &block, true)).await;
        }
        side.then_the_app_saw(&[]).await;
    }
}

#[tokio::test]
async fn inbound_and_outbound_refuse_a_content_length_that_differs_from_the_data_smg_20() {
    let sides = Sides::start().await;
    for side in sides.both() {
        let post = |length: &str| {
            side.post("/r")
                .literal(b"content-length", length.as_bytes())
        };
        let with_data = |length: &str| {
            let mut bytes = frames::headers(1, &post(length), false);
            bytes.extend(frames::data(1, b"hello", true));
            bytes
        };
        side.refused("content-length 10, 5 bytes", &with_data("10"))
            .await;
        side.refused("content-length 2, 5 bytes", &with_data("2"))
            .await;
        let no_data = frames::headers(1, &post("5"), true);
        side.refused("content-length 5, END_STREAM on HEADERS", &no_data)
            .await;
        // The same frames with a length that matches: forwarded, the body whole.
        let mut matching = frames::headers(
            1,
            &side.post("/post").literal(b"content-length", b"5"),
            false,
        );
        matching.extend(frames::data(1, b"hello", true));
        assert_eq!(
            side.exchange(&matching).await,
            Outcome::Status(200),
            "{}",
            side.name
        );
        let seen = side.then_the_app_saw(&["/post"]).await;
        let mut want = side.base_view();
        want.insert("content-length".into(), vec!["5".into()]);
        assert_eq!(view(&seen[0].headers), want, "{}", side.name);
        assert_eq!(seen[0].body, Some(Ok(5)), "{}", side.name);
    }
}

#[tokio::test]
async fn a_content_length_mismatch_after_the_head_went_on_never_completes_the_app_s_body_smg_20() {
    let sides = Sides::start().await;
    for side in sides.both() {
        for (n, length) in [(1, "10"), (2, "2")] {
            let mut conn = side.open().await;
            let post = side
                .post("/late")
                .literal(b"content-length", length.as_bytes());
            conn.send(&frames::headers(1, &post, false)).await.unwrap();
            // The head alone is well formed: it goes on, and the app has it before the DATA.
            eventually(WAIT, "the head at the app", || async {
                (side.app.received().len() == n).then_some(())
            })
            .await;
            let _ = conn.send(&frames::data(1, b"hello", true)).await;
            let outcome = conn.outcome(1).await;
            println!(
                "{} / content-length {length}, 5 bytes late: {outcome:?}",
                side.name
            );
            assert!(outcome.is_refusal(), "{}: {outcome:?}", side.name);
            // SMG-15: the app's body ends in an error, never in an end that looks complete.
            let body = eventually(WAIT, "the app's body to end", || async {
                side.app.received()[n - 1].body.clone()
            })
            .await;
            assert!(body.is_err(), "{}: {length}: {body:?}", side.name);
        }
        side.then_the_app_saw(&["/late", "/late"]).await;
    }
}

#[tokio::test]
async fn inbound_and_outbound_refuse_malformed_h2_field_names_and_values_smg_20() {
    let rows: [(&str, &[u8], &[u8]); 4] = [
        ("uppercase name", b"X-Upper", b"1"),
        ("CR in a value", b"x-a", b"a\rb"),
        ("LF in a value", b"x-a", b"a\nx-injected: 1"),
        ("NUL in a value", b"x-a", b"a\0b"),
    ];
    let sides = Sides::start().await;
    for side in sides.both() {
        for (label, name, value) in rows {
            let block = side.get("/r").literal(name, value);
            side.refused(label, &frames::headers(1, &block, true)).await;
        }
        side.then_the_app_saw(&[]).await;
    }
}

#[tokio::test]
async fn inbound_and_outbound_refuse_misplaced_repeated_missing_or_unknown_pseudo_headers_smg_20() {
    let sides = Sides::start().await;
    for side in sides.both() {
        let without_path = Block::default()
            .indexed(frames::GET)
            .indexed(side.scheme)
            .authority(side.authority);
        let rows = [
            (
                "a pseudo-header after a regular one",
                without_path.clone().literal(b"x-a", b"1").path("/r"),
            ),
            ("a repeated :path", side.get("/r").path("/admin")),
            ("no :path", without_path),
            (
                "an unknown pseudo-header",
                side.get("/r").literal(b":foo", b"bar"),
            ),
        ];
        for (label, block) in rows {
            side.refused(label, &frames::headers(1, &block, true)).await;
        }
        side.then_the_app_saw(&[]).await;
    }
}

#[tokio::test]
async fn inbound_and_outbound_never_tunnel_an_h2c_upgrade_over_h2_smg_21() {
    let sides = Sides::start().await;
    for side in sides.both() {
        let upgrade = side
            .get("/r")
            .literal(b"upgrade", b"h2c")
            .literal(b"http2-settings", b"AAMAAABkAARAAAAA");
        side.refused("upgrade: h2c", &frames::headers(1, &upgrade, true))
            .await;
        let full = upgrade.literal(b"connection", b"Upgrade, HTTP2-Settings");
        side.refused("upgrade + connection", &frames::headers(1, &full, true))
            .await;
        // `HTTP2-Settings` alone upgrades nothing: no `Upgrade` or `Connection` reaches the
        // app, and the answer is the app's 200, not a 101.
        let settings = side
            .get("/settings")
            .literal(b"http2-settings", b"AAMAAABkAARAAAAA");
        let outcome = side.exchange(&frames::headers(1, &settings, true)).await;
        println!("{} / http2-settings alone: {outcome:?}", side.name);
        assert_eq!(outcome, Outcome::Status(200), "{}", side.name);
        let seen = side.then_the_app_saw(&["/settings"]).await;
        // Connection-specific (RFC 7540 §3.2.1), so hop-by-hop: stripped like `Upgrade`.
        assert_eq!(view(&seen[0].headers), side.base_view(), "{}", side.name);
    }
}

#[tokio::test]
async fn inbound_and_outbound_deliver_only_the_sidecar_set_identity_over_h2_hdr_08() {
    let spoof = "By=spiffe://example.org/ns/evil/sa/x;URI=spiffe://example.org/ns/admin/sa/root";
    let sides = Sides::start().await;
    for side in sides.both() {
        let block = side
            .get("/spoof")
            .literal(b"x-forwarded-client-cert", spoof.as_bytes())
            .literal(b"x_forwarded_client_cert", spoof.as_bytes())
            .literal(b"hop_token", b"forged")
            .literal(b"x-forwarded-for", b"203.0.113.66")
            .literal(b"forwarded", b"for=203.0.113.66");
        let outcome = side.exchange(&frames::headers(1, &block, true)).await;
        println!(
            "{} / HDR-08 spoofed identity headers: {outcome:?}",
            side.name
        );
        assert_eq!(outcome, Outcome::Status(200), "{}", side.name);
        let seen = side.app.received();
        assert_eq!(seen.len(), 1, "{}: {seen:?}", side.name);
        // One XFCC, the sidecar's, naming the verified caller; no folded spelling, no
        // `hop_token`. Forwarding headers are end to end: docs/security.md neither sets nor
        // strips them, so they arrive as sent, for the app not to trust.
        let mut want = side.base_view();
        want.insert("x-forwarded-for".into(), vec!["203.0.113.66".into()]);
        want.insert("forwarded".into(), vec!["for=203.0.113.66".into()]);
        assert_eq!(view(&seen[0].headers), want, "{}", side.name);
    }
}

#[tokio::test]
async fn inbound_and_outbound_refuse_a_forged_hop_token_over_h2_hdr_08() {
    let sides = Sides::start().await;
    for side in sides.both() {
        let block = side.get("/r").literal(b"hop-token", b"forged");
        let outcome = side.exchange(&frames::headers(1, &block, true)).await;
        println!("{} / HDR-08 forged hop-token: {outcome:?}", side.name);
        assert_eq!(outcome, Outcome::Status(401), "{}", side.name);
        side.then_the_app_saw(&[]).await;
    }
}

#[tokio::test]
async fn an_h2_header_list_over_max_header_bytes_is_refused_on_both_sides_dos_06() {
    let sides = Sides::start().await;
    for side in sides.both() {
        // 70 fields of 138 bytes each as HPACK counts them: about 9.7 KB, over 8,192.
        let block = (0..70).fold(side.get("/r"), |block, i| {
            block.literal(format!("x-big-{i:02}").as_bytes(), &[b'a'; 100])
        });
        side.refused("a 9.7 KB header list", &frames::headers(1, &block, true))
            .await;
        // On a new connection, a normal request goes through.
        side.then_the_app_saw(&[]).await;
    }
}

#[tokio::test]
async fn an_h2_rapid_reset_flood_gets_goaway_and_a_close_on_both_sides_dos_07() {
    let sides = Sides::start().await;
    for side in sides.both() {
        let mut conn = side.open().await;
        let (scheme, authority) = (side.scheme, side.authority);
        let streams = (0..200u32).map(|i| 2 * i + 1).map(move |id| {
            let block = Block::request(frames::GET, scheme, "/reset", authority);
            let mut bytes = frames::headers(id, &block, true);
            bytes.extend(frames::reset(id, frames::CANCEL));
            bytes
        });
        let outcome = conn.flood(streams).await;
        println!(
            "{} / DOS-07 200 streams opened and reset: {outcome:?}",
            side.name
        );
        assert!(
            matches!(outcome, Outcome::GoAway(_)),
            "{}: {outcome:?}",
            side.name
        );
        assert!(
            conn.closed().await,
            "{}: still open after GOAWAY",
            side.name
        );
        side.control().await;
        // The app saw at most the streams hyper took before their reset, and only those.
        let seen = side.app.received();
        println!("{} / DOS-07 requests at the app: {}", side.name, seen.len());
        assert!(
            seen.iter().all(|s| s.path == "/reset" || s.path == "/ok"),
            "{}: {seen:?}",
            side.name
        );
    }
}

#[tokio::test]
async fn an_h2_continuation_flood_gets_goaway_on_both_sides_and_never_reaches_the_app_dos_08() {
    let sides = Sides::start().await;
    for side in sides.both() {
        let mut conn = side.open().await;
        let junk = (0..9).fold(Block::default(), |block, i| {
            block.literal(format!("x-junk-{i}").as_bytes(), &[b'j'; 100])
        });
        let head = frames::frame(frames::HEADERS, 0, 1, &side.get("/r").0);
        // 1,000 CONTINUATION frames of about 1 KB, never END_HEADERS: 1 MB, 120 times the limit.
        let flood = std::iter::once(head).chain(
            std::iter::repeat_with(move || frames::frame(frames::CONTINUATION, 0, 1, &junk.0))
                .take(1000),
        );
        let outcome = conn.flood(flood).await;
        println!("{} / DOS-08 CONTINUATION flood: {outcome:?}", side.name);
        assert!(
            matches!(outcome, Outcome::GoAway(_) | Outcome::Closed),
            "{}: {outcome:?}",
            side.name
        );
        side.then_the_app_saw(&[]).await;
    }
}

// === both sides ===

/// An inbound sidecar in front of one recording app, and an agent whose outbound listener
/// routes `server.svc` to a server workload in front of another.
struct Sides {
    _mesh: Mesh,
    proxy: TestProxy,
    caller: Client,
    caller_der: Vec<u8>,
    inbound_app: App,
    _workloads: Workloads,
    server: Workload,
    agent: Workload,
    agent_der: Vec<u8>,
    outbound_app: App,
}

/// One side as a raw client sees it.
struct Side<'a> {
    name: &'static str,
    addr: SocketAddr,
    /// The caller's TLS client (inbound); plain TCP when `None` (outbound).
    tls: Option<&'a Client>,
    scheme: u8,
    authority: &'static str,
    /// The one `x-forwarded-client-cert` the app must see.
    xfcc: String,
    /// Whether the app gets a minted `hop-token` (outbound: the next sidecar verified it).
    minted: bool,
    app: &'a App,
}

impl Sides {
    async fn start() -> Self {
        let inbound_app = App::start().await;
        let mesh = Mesh::new();
        let proxy = mesh
            .proxy(inbound_app.addr)
            .inbound_yaml(LIMITS)
            .start()
            .await;
        let leaf = mesh.leaf("caller");
        let caller = Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H2);
        let outbound_app = App::start().await;
        let workloads = Workloads::new();
        let server = workloads
            .workload("server")
            .app_at(outbound_app.addr)
            .start()
            .await;
        // The outbound listener takes `inbound.limits`: the agent has an inbound side for them.
        let agent = workloads
            .workload("agent")
            .inbound_yaml(LIMITS)
            .route("server.svc", &server, &["generate"])
            .start()
            .await;
        let pem = std::fs::read_to_string(workloads.dir_of("agent").join("svid.pem")).unwrap();
        let agent_der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
            .unwrap();
        Self {
            _mesh: mesh,
            proxy,
            caller,
            caller_der: leaf.cert_der.to_vec(),
            inbound_app,
            _workloads: workloads,
            server,
            agent,
            agent_der,
            outbound_app,
        }
    }

    fn both(&self) -> [Side<'_>; 2] {
        let xfcc = |own: &str, der: &[u8], peer: &str| {
            format!("By={own};Hash={};URI={peer}", hex(&Sha256::digest(der)))
        };
        [
            Side {
                name: "inbound",
                addr: self.proxy.inbound,
                tls: Some(&self.caller),
                scheme: frames::HTTPS,
                authority: "hopgate.test",
                xfcc: xfcc(SERVER_ID, &self.caller_der, &workload_id("caller")),
                minted: false,
                app: &self.inbound_app,
            },
            Side {
                name: "outbound",
                addr: self.agent.outbound,
                tls: None,
                scheme: frames::HTTP,
                authority: "server.svc",
                xfcc: xfcc(&self.server.id, &self.agent_der, &self.agent.id),
                minted: true,
                app: &self.outbound_app,
            },
        ]
    }
}

impl Side<'_> {
    async fn open(&self) -> Conn {
        let io: Box<dyn frames::Io> = match self.tls {
            Some(client) => {
                let tls = client.connect(self.addr).await.unwrap();
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                Box::new(tls)
            }
            None => Box::new(TcpStream::connect(self.addr).await.unwrap()),
        };
        Conn::open(io).await
    }

    fn get(&self, path: &str) -> Block {
        Block::request(frames::GET, self.scheme, path, self.authority)
    }

    fn post(&self, path: &str) -> Block {
        Block::request(frames::POST, self.scheme, path, self.authority)
    }

    /// `bytes` on a new connection: what came back for stream 1.
    async fn exchange(&self, bytes: &[u8]) -> Outcome {
        let mut conn = self.open().await;
        // A server that refuses early may close before every byte is written.
        let _ = conn.send(bytes).await;
        conn.outcome(1).await
    }

    /// `bytes` on a new connection must be refused.
    async fn refused(&self, label: &str, bytes: &[u8]) {
        let outcome = self.exchange(bytes).await;
        println!("{} / {label}: {outcome:?}", self.name);
        assert!(outcome.is_refusal(), "{}: {label}: {outcome:?}", self.name);
    }

    /// A well-formed GET of `/ok` on a new connection is answered 200.
    async fn control(&self) {
        let block = self.get("/ok");
        let outcome = self.exchange(&frames::headers(1, &block, true)).await;
        assert_eq!(outcome, Outcome::Status(200), "{}: the control", self.name);
    }

    /// A control request on a new connection, then: the app received `before` (its paths, in
    /// order) and the control, nothing else; the control's head is the plain view.
    async fn then_the_app_saw(&self, before: &[&str]) -> Vec<Seen> {
        self.control().await;
        let seen = self.app.received();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        let want: Vec<&str> = before.iter().copied().chain(["/ok"]).collect();
        assert_eq!(
            paths, want,
            "{}: a refused request reached the app",
            self.name
        );
        let control = seen.last().unwrap();
        assert_eq!(view(&control.headers), self.base_view(), "{}", self.name);
        seen
    }

    /// What the app sees of a plain GET: `host`, the sidecar's XFCC and, outbound, the
    /// minted token.
    fn base_view(&self) -> BTreeMap<String, Vec<String>> {
        let mut want = BTreeMap::from([
            ("host".to_owned(), vec![self.authority.to_owned()]),
            (
                "x-forwarded-client-cert".to_owned(),
                vec![self.xfcc.clone()],
            ),
        ]);
        if self.minted {
            want.insert("hop-token".into(), vec!["<minted>".into()]);
        }
        want
    }
}

/// The app's headers by name, the minted token's value masked.
fn view(headers: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let value = match name.as_str() {
            "hop-token" => "<minted>".to_owned(),
            _ => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        };
        out.entry(name.as_str().to_owned()).or_default().push(value);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// === the app ===

/// One request as the app saw it: the head, and how its body ended (`Ok(length)` when it
/// ended cleanly, `Err` when it broke off; `None` while it is still being read).
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Option<Result<usize, String>>,
}

/// A recording app: answers every request `200 ok` once it has read its body.
struct App {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl App {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let index = {
                            let mut log = log.lock().unwrap();
                            log.push(Seen {
                                path: req.uri().path().to_owned(),
                                headers: req.headers().clone(),
                                body: None,
                            });
                            log.len() - 1
                        };
                        let body = req.into_body().collect().await;
                        log.lock().unwrap()[index].body =
                            Some(body.map(|b| b.to_bytes().len()).map_err(|e| e.to_string()));
                        let ok = Full::new(Bytes::from_static(b"ok"));
                        Ok::<_, Infallible>(http::Response::new(ok))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn received(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}
