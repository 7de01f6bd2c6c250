//! What the tests of open streams share (docs/security.md, "Open streams and revocation"):
//! an SSE app with any number of concurrent streams, each fed event by event by the test; the
//! client's side of a streaming body, telling an `RST_STREAM` from a broken HTTP/1.1 body and a
//! clean end; hop tokens minted with the caller's own SVID; the `stream_closed` audit records
//! and counters; and sidecars started from a config of the test's own (routes with keys the
//! builders do not write).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hopgate_config::SpiffeId;
use hopgate_proxy::token::{MintRequest, Minter};
use http::HeaderValue;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::client::Conn;
use super::eventually::eventually;
use super::pki::Leaf;
use super::proxy::admin_get;

type Body = BoxBody<Bytes, Infallible>;

/// The longest wait for anything on a stream before the test fails (a guard, not a bound).
const WAIT: Duration = Duration::from_secs(10);

/// A running SSE app. `GET /sse/<key>` opens stream `key` and sends `data: open <key>` at once;
/// the test sends it more events with [`StreamApp::send`] and ends it with [`StreamApp::end`].
/// Any other path answers `{"path": ...}` at once.
pub(crate) struct StreamApp {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// The open streams by key (the latest one opened under a key).
    streams: Mutex<HashMap<String, mpsc::UnboundedSender<Bytes>>>,
    /// Every request's path and headers, in arrival order.
    requests: Mutex<Vec<(String, http::HeaderMap)>>,
}

impl StreamApp {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(route(req, &state)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    /// Sends stream `key` the event `data: <data>`; false when it is not open at the app (never
    /// opened, ended, or dropped by the sidecar).
    pub(crate) fn send(&self, key: &str, data: &str) -> bool {
        let streams = self.state.streams.lock().unwrap();
        streams
            .get(key)
            .is_some_and(|tx| tx.send(Bytes::from(format!("data: {data}\n\n"))).is_ok())
    }

    /// Sends every open stream `data: <data>`; returns how many were sent it.
    pub(crate) fn broadcast(&self, data: &str) -> usize {
        let event = Bytes::from(format!("data: {data}\n\n"));
        let streams = self.state.streams.lock().unwrap();
        streams
            .values()
            .filter(|tx| tx.send(event.clone()).is_ok())
            .count()
    }

    /// Ends stream `key` cleanly: its body is complete.
    pub(crate) fn end(&self, key: &str) {
        self.state.streams.lock().unwrap().remove(key);
    }

    /// Whether the sidecar dropped the app's side of stream `key` (it stopped reading it).
    pub(crate) fn dropped(&self, key: &str) -> bool {
        let streams = self.state.streams.lock().unwrap();
        streams
            .get(key)
            .is_some_and(mpsc::UnboundedSender::is_closed)
    }

    /// The `hop-token` the request that opened stream `key` carried.
    pub(crate) fn hop_token(&self, key: &str) -> String {
        let path = format!("/sse/{key}");
        let requests = self.state.requests.lock().unwrap();
        let (_, headers) = requests
            .iter()
            .rev()
            .find(|(p, _)| *p == path)
            .unwrap_or_else(|| panic!("no request for {path}"));
        headers["hop-token"].to_str().unwrap().to_owned()
    }
}

fn route(req: Request<Incoming>, state: &State) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    state.requests.lock().unwrap().push((path.clone(), headers));
    let Some(key) = path.strip_prefix("/sse/") else {
        let body = serde_json::json!({ "path": path }).to_string();
        return Response::new(Full::new(Bytes::from(body)).boxed());
    };
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Bytes::from(format!("data: open {key}\n\n")))
        .unwrap();
    state.streams.lock().unwrap().insert(key.to_owned(), tx);
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(data)), rx))
    });
    let mut rsp = Response::new(BodyExt::boxed(StreamBody::new(body)));
    rsp.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    rsp
}

// === the client's side ===

/// How a streaming body ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// It ended whole.
    Clean,
    /// Its HTTP/2 stream was reset, with this reason.
    Reset(h2::Reason),
    /// Any other body error: an HTTP/1.1 connection closed mid-body.
    Broken(String),
}

/// The events of an SSE response body, as they arrive.
pub(crate) struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    /// `GET /sse/<key>` on `conn`: asserts a 200 and the app's first event.
    pub(crate) async fn open(conn: &mut Conn, key: &str, headers: &[(&str, &str)]) -> Self {
        let rsp = conn.send(&format!("/sse/{key}"), headers).await.unwrap();
        Self::expect_open(rsp, key).await
    }

    /// The same, sent as the app would: plain HTTP/1.1 to an outbound listener at `addr`,
    /// with `Host: host`.
    pub(crate) async fn open_plain(addr: SocketAddr, host: &str, key: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("/sse/{key}"))
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = sender.send_request(req).await.unwrap();
        Self::expect_open(rsp, key).await
    }

    async fn expect_open(rsp: Response<Incoming>, key: &str) -> Self {
        let status = rsp.status();
        let mut events = Self {
            body: rsp.into_body(),
            buf: String::new(),
        };
        assert_eq!(status, 200, "/sse/{key}: {:?}", events.next().await);
        assert_eq!(events.next().await, Ok(format!("open {key}")));
        events
    }

    /// The next event's data, or how the body ended. Fails the test after [`WAIT`] of silence.
    pub(crate) async fn next(&mut self) -> Result<String, End> {
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..at + 2).collect();
                let event = event.trim_end();
                return Ok(event.strip_prefix("data: ").unwrap_or(event).to_owned());
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("nothing on the stream for {WAIT:?}"));
            match frame {
                None => return Err(End::Clean),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.push_str(std::str::from_utf8(&data).unwrap());
                    }
                }
                Some(Err(err)) => return Err(ended_by(&err)),
            }
        }
    }
}

/// A reset when an `h2::Error` with a reason is among the error's causes, else a broken body.
fn ended_by(err: &hyper::Error) -> End {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(reason) = e.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return End::Reset(reason);
        }
        cause = e.source();
    }
    End::Broken(err.to_string())
}

/// A hop token minted by `leaf` (the caller) for `aud`, living `ttl`, in a transaction of its
/// own.
pub(crate) fn mint(leaf: &Leaf, aud: &str, ttl: Duration) -> String {
    let minter = Minter::new(&leaf.svid(), ttl).unwrap();
    let aud = SpiffeId::parse(aud).unwrap();
    let request = MintRequest {
        aud: &aud,
        parent: None,
        origin: None,
        route_scopes: &[],
        tctx: None,
        trace: None,
    };
    minter.mint(request).unwrap().compact().to_owned()
}

// === records and counters ===

/// Every audit record written so far, parsed.
pub(crate) fn records(audit: &Mutex<Vec<String>>) -> Vec<Value> {
    let lines = audit.lock().unwrap();
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The request's own record (not a `stream_closed` one) whose `field` is `value`.
pub(crate) fn request_record(audit: &Mutex<Vec<String>>, field: &str, value: &str) -> Value {
    let all = records(audit);
    all.iter()
        .find(|r| r["event"].is_null() && r[field] == value)
        .unwrap_or_else(|| panic!("no record with {field} = {value}: {all:#?}"))
        .clone()
}

/// Waits (bounded) for the `stream_closed` record of the request whose record is `request`,
/// and checks what every cut record says: the request's decision id, path and status, the
/// `reason` and `effect`, an age. Returns it.
pub(crate) async fn cut_record(
    audit: &Mutex<Vec<String>>,
    request: &Value,
    reason: &str,
    effect: &str,
) -> Value {
    let id = &request["decision_id"];
    let closed = eventually(
        Duration::from_secs(5),
        format_args!("no stream_closed record for {id}"),
        || async {
            let all = records(audit);
            all.into_iter()
                .find(|r| r["event"] == "stream_closed" && r["decision_id"] == *id)
        },
    )
    .await;
    assert_eq!(closed["reason"], reason, "{closed}");
    assert_eq!(closed["effect"], effect, "{closed}");
    assert_eq!(closed["status"], request["status"], "{closed}");
    assert_eq!(closed["path"], request["path"], "{closed}");
    assert_eq!(closed["txn"], request["txn"], "{closed}");
    assert!(closed["duration_us"].as_u64().unwrap() > 0, "{closed}");
    closed
}

/// `hopgate_streams_closed_total{reason}` on the admin listener at `admin`.
pub(crate) async fn closed_total(admin: SocketAddr, reason: &str) -> f64 {
    let (_, metrics) = admin_get(admin, "/metrics").await;
    let series = format!(r#"hopgate_streams_closed_total{{reason="{reason}"}}"#);
    crate::policy::sample(&metrics, &series)
}

/// `hopgate_streams_closed_total` over every reason.
pub(crate) async fn closed_sum(admin: SocketAddr) -> f64 {
    let mut sum = 0.0;
    for reason in ["revoked", "policy", "trust", "token_expired", "max_age"] {
        sum += closed_total(admin, reason).await;
    }
    sum
}

/// `/policy` as JSON.
pub(crate) async fn policy_status(admin: SocketAddr) -> Value {
    let (status, body) = admin_get(admin, "/policy").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `/policy` (bounded) until its digest is no longer `before`; returns the status.
pub(crate) async fn wait_for_new_digest(admin: SocketAddr, before: &Value) -> Value {
    eventually(
        Duration::from_secs(5),
        format_args!("the policy digest is still {before}"),
        || async { Some(policy_status(admin).await).filter(|s| s["digest"] != *before) },
    )
    .await
}

/// Writes `name` into `dir` beside it first and renames it in, so a watcher never reads half.
pub(crate) fn write_into(dir: &Path, name: &str, content: &str) {
    let staged = dir.join(format!("../.staged-{name}"));
    std::fs::write(&staged, content).unwrap();
    std::fs::rename(&staged, dir.join(name)).unwrap();
}

// === sidecars of the test's own config ===

/// A sidecar started in-process from a config file the test wrote.
pub(crate) struct Running {
    pub(crate) inbound: Option<SocketAddr>,
    pub(crate) outbound: Option<SocketAddr>,
    pub(crate) admin: SocketAddr,
    pub(crate) audit: Arc<Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    pub(crate) async fn start(config: &Path) -> Self {
        let config = hopgate_config::load_with_env(config, |_| None).unwrap();
        let audit = Arc::new(Mutex::new(Vec::new()));
        let proxy = hopgate_proxy::Proxy::build_with_audit(
            &config,
            hopgate_proxy::telemetry::audit::AuditSink::Memory(Arc::clone(&audit)),
        )
        .await
        .unwrap();
        let (inbound, outbound) = (proxy.inbound_addr(), proxy.outbound_addr());
        let admin = proxy.admin_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(proxy.run(async move {
            let _ = stopped.await;
        }));
        Self {
            inbound,
            outbound,
            admin,
            audit,
            _stop: stop,
        }
    }
}
