//! The app behind the sidecar: an in-process HTTP/1.1 server on 127.0.0.1:0 that records what it
//! received, so tests assert on both the status and the upstream's view (docs/security.md,
//! "Headers the app receives").
//!
//! Routes: `/sse` streams one event, waits for the test to release it, then a second;
//! `/slow/<ms>` answers after that many milliseconds; anything else echoes the request head as
//! JSON (`{"method", "path", "headers": {name: [values]}}`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Body = BoxBody<Bytes, Infallible>;

/// A running test app.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    /// Releases the second SSE event.
    pub(crate) sse_release: Arc<Notify>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// One request as the app saw it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) path: String,
    pub(crate) headers: http::HeaderMap,
}

impl Upstream {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sse_release = Arc::new(Notify::new());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (release, recorded) = (Arc::clone(&sse_release), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (release, recorded) = (Arc::clone(&release), Arc::clone(&recorded));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (release, recorded) = (Arc::clone(&release), Arc::clone(&recorded));
                        async move { Ok::<_, Infallible>(route(req, release, recorded).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            sse_release,
            requests,
        }
    }

    /// Every request received so far.
    pub(crate) fn received(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// An address nothing listens on (bound, then released).
    pub(crate) async fn closed_addr() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }
}

async fn route(
    req: Request<Incoming>,
    release: Arc<Notify>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    recorded.lock().unwrap().push(Recorded {
        path: path.clone(),
        headers: req.headers().clone(),
    });
    if path == "/sse" {
        return sse(release);
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return text("slow done");
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "method": method,
        "path": path,
        "headers": headers,
        "body_len": body.len(),
    });
    let mut rsp = text(json.to_string());
    rsp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    // The app's own hop-by-hop fields must not reach the caller either.
    rsp.headers_mut()
        .insert("connection", "x-app-hop".parse().unwrap());
    rsp.headers_mut().insert("x-app-hop", "1".parse().unwrap());
    rsp
}

fn text(body: impl Into<Bytes>) -> Response<Body> {
    Response::new(Full::new(body.into()).boxed())
}

fn sse(release: Arc<Notify>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: first\n\n"))))
            .await;
        // The second event waits for the test, so the first can only have been seen if the
        // sidecar streamed it rather than buffering the whole body.
        tokio::select! {
            () = release.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: second\n\n"))))
            .await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut rsp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    rsp.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    rsp
}
