//! A real OTLP trace receiver: the collector's protobuf service from `opentelemetry-proto`,
//! served by tonic for gRPC, and the same messages over HTTP/protobuf (`POST /v1/traces`).
//!
//! It keeps every span it receives, flattened with its resource's `service.name`, so a test can
//! check what each sidecar exported.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use tokio::net::TcpListener;

use crate::support::eventually::eventually;
use crate::support::pki::{Ca, Leaf};

/// The `telemetry:` section exporting to `endpoint` over `protocol` (`grpc` | `http`).
pub(crate) fn telemetry(service: &str, endpoint: &str, protocol: &str) -> String {
    format!(
        "telemetry:\n  service_name: {service}\n  otlp: {{ endpoint: '{endpoint}', protocol: {protocol} }}\n"
    )
}

/// [`telemetry`] with more `otlp` keys, as flow-map entries (`compression: gzip, headers: {...}`).
pub(crate) fn telemetry_with(service: &str, endpoint: &str, protocol: &str, extra: &str) -> String {
    format!(
        "telemetry:\n  service_name: {service}\n  otlp: {{ endpoint: '{endpoint}', protocol: {protocol}, {extra} }}\n"
    )
}

/// One received span, with the `service.name` of the resource it was exported under.
#[derive(Clone, Debug)]
pub(crate) struct ReceivedSpan {
    pub(crate) service: String,
    pub(crate) name: String,
    /// 32 hex digits.
    pub(crate) trace_id: String,
    /// 16 hex digits.
    pub(crate) span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub(crate) parent_span_id: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub(crate) kind: &'static str,
    /// The status code: `unset`, `ok` or `error`.
    pub(crate) status: &'static str,
    pub(crate) attributes: BTreeMap<String, Attr>,
    /// The attributes of the resource it was exported under.
    pub(crate) resource: BTreeMap<String, Attr>,
}

/// An attribute value as OTLP carries it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Attr {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(Vec<Self>),
    /// A key-value list, bytes, or no value at all.
    Other,
}

/// How an export reached the receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExportCall {
    /// `grpc` or `http`.
    pub(crate) transport: &'static str,
    /// The gRPC method path or the HTTP request path.
    pub(crate) path: String,
    pub(crate) content_type: String,
    /// Every header (gRPC: metadata) of the call.
    pub(crate) headers: http::HeaderMap,
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    calls: Mutex<Vec<ExportCall>>,
    /// How many of the next exports are answered 503 / `UNAVAILABLE` (and not kept).
    fail_next: AtomicU32,
    /// Exports answered that way so far.
    failed: AtomicU32,
    /// The first byte of each connection (0x16: a TLS ClientHello).
    first_bytes: Mutex<Vec<u8>>,
}

/// A receiver listening on `127.0.0.1`, for as long as the test's runtime runs.
pub(crate) struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Received>,
}

impl OtlpReceiver {
    /// The OTLP gRPC `TraceService`, served by `tonic::transport::Server`.
    pub(crate) async fn grpc() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Received::default());
        let service = TraceServiceServer::new(GrpcService {
            received: Arc::clone(&received),
        })
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming(service, incoming)
                .await
                .unwrap();
        });
        Self { addr, received }
    }

    /// OTLP over HTTP/protobuf: `POST /v1/traces` with an `ExportTraceServiceRequest` body
    /// (gzipped when its `content-encoding` says so).
    pub(crate) async fn http() -> Self {
        Self::http_over(None).await
    }

    /// [`Self::http`] behind TLS with `config` (`https://127.0.0.1:PORT`).
    pub(crate) async fn https(config: Arc<rustls::ServerConfig>) -> Self {
        Self::http_over(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn http_over(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Received::default());
        let shared = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let mut first = [0u8; 1];
                if let Ok(1) = stream.peek(&mut first).await {
                    shared.first_bytes.lock().unwrap().push(first[0]);
                }
                let received = Arc::clone(&shared);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let received = Arc::clone(&received);
                        async move { Ok::<_, Infallible>(http_export(req, &received).await) }
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => server.serve_connection(TokioIo::new(stream), svc).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            server.serve_connection(TokioIo::new(stream), svc).await
                        }
                    };
                });
            }
        });
        Self { addr, received }
    }

    /// `http://127.0.0.1:PORT`, for `telemetry.otlp.endpoint`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://127.0.0.1:PORT`.
    pub(crate) fn https_endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Answers the next `n` exports 503 (gRPC: `UNAVAILABLE`), keeping nothing of them.
    pub(crate) fn fail_next(&self, n: u32) {
        self.received.fail_next.store(n, Ordering::SeqCst);
    }

    /// How many exports were answered that way.
    pub(crate) fn failed(&self) -> u32 {
        self.received.failed.load(Ordering::SeqCst)
    }

    /// The first byte of each connection made to an [`Self::https`] or [`Self::http`] one.
    pub(crate) fn first_bytes(&self) -> Vec<u8> {
        self.received.first_bytes.lock().unwrap().clone()
    }

    /// Every span received so far, in the order they arrived.
    pub(crate) fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans.lock().unwrap().clone()
    }

    /// Every export call received so far.
    pub(crate) fn calls(&self) -> Vec<ExportCall> {
        self.received.calls.lock().unwrap().clone()
    }

    /// Waits until at least `n` spans have arrived; panics with what did arrive after `timeout`.
    pub(crate) async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        self.wait_until(timeout, |spans| spans.len() >= n).await
    }

    /// Waits until at least `n` spans of trace `trace_id` have arrived.
    pub(crate) async fn wait_for_trace(
        &self,
        trace_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let spans = self
            .wait_until(timeout, |spans| {
                spans.iter().filter(|s| s.trace_id == trace_id).count() >= n
            })
            .await;
        spans
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Waits until `done` holds for the spans received so far; returns them.
    pub(crate) async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        eventually(
            timeout,
            format_args!("the receiver's spans: {:#?}", Spans(self)),
            || async {
                let spans = self.spans();
                done(&spans).then_some(spans)
            },
        )
        .await
    }
}

/// The spans received so far, read only when displayed.
struct Spans<'a>(&'a OtlpReceiver);

impl std::fmt::Debug for Spans<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.spans().fmt(f)
    }
}

impl ReceivedSpan {
    pub(crate) fn attr(&self, key: &str) -> Option<&Attr> {
        self.attributes.get(key)
    }

    /// A string attribute; `None` when absent or not a string.
    pub(crate) fn str_attr(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer attribute; `None` when absent or not an integer.
    pub(crate) fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Attr::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// An array of strings; `None` when absent, not an array, or holding anything else.
    pub(crate) fn array_attr(&self, key: &str) -> Option<Vec<String>> {
        match self.attr(key)? {
            Attr::Array(values) => values
                .iter()
                .map(|v| match v {
                    Attr::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }
}

struct GrpcService {
    received: Arc<Received>,
}

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.received.take_failure() {
            return Err(tonic::Status::unavailable("failing on purpose"));
        }
        let content_type = request
            .metadata()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let headers = request.metadata().clone().into_headers();
        self.received.record(
            ExportCall {
                transport: "grpc",
                path: "/opentelemetry.proto.collector.trace.v1.TraceService/Export".to_owned(),
                content_type,
                headers,
            },
            request.into_inner(),
        );
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(req: Request<Incoming>, received: &Received) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if req.method() != "POST" || path != "/v1/traces" {
        return status(404);
    }
    if content_type != "application/x-protobuf" {
        return status(415);
    }
    let headers = req.headers().clone();
    let Ok(body) = req.into_body().collect().await else {
        return status(400);
    };
    if received.take_failure() {
        return status(503);
    }
    let body = match headers.get("content-encoding").map(|v| v.as_bytes()) {
        None => body.to_bytes().to_vec(),
        Some(b"gzip") => {
            let mut plain = Vec::new();
            if std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(&body.to_bytes()[..]),
                &mut plain,
            )
            .is_err()
            {
                return status(400);
            }
            plain
        }
        Some(_) => return status(415),
    };
    let Ok(export) = ExportTraceServiceRequest::decode(&body[..]) else {
        return status(400);
    };
    received.record(
        ExportCall {
            transport: "http",
            path,
            content_type,
            headers,
        },
        export,
    );
    let mut rsp = Response::new(Full::new(Bytes::from(
        ExportTraceServiceResponse::default().encode_to_vec(),
    )));
    rsp.headers_mut()
        .insert("content-type", "application/x-protobuf".parse().unwrap());
    rsp
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::new()));
    *rsp.status_mut() = http::StatusCode::from_u16(code).unwrap();
    rsp
}

impl Received {
    /// Whether this export is one to fail.
    fn take_failure(&self) -> bool {
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        failing
    }

    fn record(&self, call: ExportCall, export: ExportTraceServiceRequest) {
        let mut flat = Vec::new();
        for resource_spans in export.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref().map(attr) {
                    Some(Attr::Str(s)) => Some(s),
                    _ => None,
                })
                .unwrap_or_default();
            let resource: BTreeMap<String, Attr> = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Attr::Other, attr)))
                .collect();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                let kind = match span.kind() {
                    SpanKind::Server => "server",
                    SpanKind::Client => "client",
                    SpanKind::Internal => "internal",
                    SpanKind::Producer => "producer",
                    SpanKind::Consumer => "consumer",
                    SpanKind::Unspecified => "unspecified",
                };
                flat.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind,
                    status: match span.status.as_ref().map(|s| s.code) {
                        Some(1) => "ok",
                        Some(2) => "error",
                        _ => "unset",
                    },
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = kv.value.as_ref().map_or(Attr::Other, attr);
                            (kv.key.clone(), value)
                        })
                        .collect(),
                    resource: resource.clone(),
                });
            }
        }
        self.calls.lock().unwrap().push(call);
        self.spans.lock().unwrap().extend(flat);
    }
}

fn attr(value: &AnyValue) -> Attr {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Attr::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Attr::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Attr::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Attr::Double(*d),
        Some(any_value::Value::ArrayValue(array)) => {
            Attr::Array(array.values.iter().map(attr).collect())
        }
        _ => Attr::Other,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector certificate for `127.0.0.1` (an IP SAN) issued by `ca`, and the server config
/// presenting it.
pub(crate) fn collector_tls(ca: &Ca) -> (Leaf, Arc<rustls::ServerConfig>) {
    let leaf = ca
        .leaf("spiffe://collector.test/otel")
        .edit(|p| {
            p.subject_alt_names.push(rcgen::SanType::IpAddress(
                std::net::Ipv4Addr::LOCALHOST.into(),
            ));
        })
        .build();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf.key_der.clone_key());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain_der.clone(), key)
        .unwrap();
    (leaf, Arc::new(config))
}
