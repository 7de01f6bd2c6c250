//! Request spans (docs/telemetry.md, "Request spans"): one `hopgate.inbound` (server) or
//! `hopgate.outbound` (client) span per request, with the HTTP semantic-convention attributes
//! and every `hop.*` attribute, exported over OTLP and/or collected in memory.
//!
//! ```text
//!  request ─ traceparent? ─▶ tracing span (this sidecar's Dispatch) ─ tracing-opentelemetry ─▶
//!     SdkTracerProvider (service.name) ─ encoded as it ends ─▶ ExportQueue (bounded; full =
//!     dropped, counted) ─▶ export task in the runtime ─▶ OTLP gRPC (tonic) | HTTP/protobuf
//!     (hyper) (timeout; failed = dropped)
//! ```
//!
//! Each sidecar has its own tracer provider behind its own `tracing` dispatcher, so several
//! sidecars in one process (`hopgate demo`, the tests) export under their own `service.name`.
//! A request span is created under that dispatcher and keeps it: attributes recorded later go to
//! the right provider whatever the thread's default subscriber is. Log lines stay on the
//! process's global subscriber.
//!
//! The collector is never on the request path: a span is encoded as it ends onto a bounded
//! queue (`otlp.rs`), a task in the runtime exports batches with a timeout, and whatever cannot
//! be queued or exported is counted in `hopgate_telemetry_spans_dropped_total`. With no exporter
//! and no collector, tracing is off and a request costs nothing here: `traceparent` passes
//! through untouched.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hopgate_config::{OtlpConfig, OtlpProtocol, SpiffeId, TelemetryConfig};
use hopgate_policy::TokenFacts;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, Status, TraceContextExt, TraceState, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanProcessor};
use thiserror::Error;
use tokio::sync::Notify;
use tracing::{Dispatch, Level};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;

use super::metrics::{DecisionLabel, ProxyMetrics};
use super::otlp::{EncodedSpans, Exporter, SpanEncoder};
use super::recent;
use super::traceparent::{self, TraceIdHex};
use crate::http::RequestError;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The longest `tracestate` taken from a caller.
const TRACESTATE_LIMIT: usize = 512;

/// Spans waiting for export; past this, new spans are dropped (and counted).
const QUEUE: usize = 2048;
/// Spans per export call. Spans are encoded as they end, so a batch costs the runtime's thread
/// only a copy into the request; the collector sees one request per 512 spans.
const BATCH: usize = 512;
/// How long a batch may wait for more spans.
const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans collected in memory (for `hopgate demo` and tests), shared by every sidecar given it.
#[derive(Clone, Debug, Default)]
pub struct SpanCollector {
    spans: Arc<Mutex<Vec<SpanData>>>,
}

/// Why tracing could not be set up.
#[derive(Debug, Error)]
pub enum TraceError {
    /// The OTLP exporter could not be built.
    #[error("telemetry.otlp: {0}")]
    Exporter(String),
}

/// One sidecar's tracing: off, or a provider behind a dispatcher.
#[derive(Clone)]
pub struct Tracing {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    dispatch: Dispatch,
    provider: SdkTracerProvider,
    export: Mutex<Option<Export>>,
}

/// The queue and the exporter, until [`Tracing::start`] moves them into a task.
struct Export {
    queue: Arc<ExportQueue>,
    exporter: Exporter,
    encoder: SpanEncoder,
    metrics: Arc<ProxyMetrics>,
}

/// Ended spans, already encoded, until the export task takes them. Bounded: past [`QUEUE`]
/// spans, new ones are dropped (and counted).
#[derive(Debug, Default)]
struct ExportQueue {
    state: Mutex<QueueState>,
    /// Woken at a batch's first span, when it is full, and at shutdown.
    ready: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    spans: EncodedSpans,
    closed: bool,
}

/// Encodes each ended span onto the export queue; drops (and counts) when it is full. Shutting
/// down closes the queue, so the export task sends what is left and ends.
#[derive(Debug)]
struct QueueProcessor {
    queue: Arc<ExportQueue>,
    metrics: Arc<ProxyMetrics>,
}

/// Keeps ended spans in a [`SpanCollector`].
#[derive(Debug)]
struct CollectProcessor {
    collector: SpanCollector,
    resource: Option<Resource>,
}

/// The span of one request, or nothing when tracing is off.
///
/// The `tracing` span is started (turned into its OpenTelemetry span) when it is made, and its
/// OpenTelemetry context is kept beside it: attributes, the status, the trace id and the
/// propagated context go straight to that span, one lock per group of attributes, instead of a
/// trip through the subscriber's registry per attribute. The `tracing` span ends it when
/// dropped.
#[derive(Debug)]
pub struct HopSpan {
    /// Ends the OpenTelemetry span when dropped.
    _span: tracing::Span,
    cx: Option<opentelemetry::Context>,
}

/// A request span. Its fields name the attributes it will carry, all left empty: the values go
/// to the OpenTelemetry span directly (see [`HopSpan`]), without the subscriber visiting each
/// field and copying it into a `String`. Declaring them still sizes the span's attribute list
/// (tracing-opentelemetry reserves one slot per field), so it never grows.
macro_rules! request_span {
    ($name:literal, $kind:literal) => {
        tracing::info_span!(
            target: "hopgate",
            $name,
            otel.kind = $kind,
            http.request.method = tracing::field::Empty,
            url.path = tracing::field::Empty,
            network.protocol.version = tracing::field::Empty,
            hop.direction = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            server.address = tracing::field::Empty,
            hop.peer.id = tracing::field::Empty,
            hop.dest.id = tracing::field::Empty,
            hop.txn = tracing::field::Empty,
            hop.token.jti = tracing::field::Empty,
            hop.token.prv = tracing::field::Empty,
            enduser.id = tracing::field::Empty,
            hop.chain = tracing::field::Empty,
            hop.chain.depth = tracing::field::Empty,
            hop.intent.action = tracing::field::Empty,
            hop.decision = tracing::field::Empty,
            hop.decision.id = tracing::field::Empty,
            hop.policy.ids = tracing::field::Empty,
        )
    };
}

/// Which side a span is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// `hopgate.inbound`, a server span.
    Inbound,
    /// `hopgate.outbound`, a client span.
    Outbound,
}

// === impl Tracing ===

impl Tracing {
    /// Tracing off: no spans, `traceparent` passed through.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Tracing for one sidecar: exported over OTLP when `telemetry.otlp` is set, collected in
    /// `collector` when one is given, off when neither. Must be called inside a tokio runtime
    /// (the gRPC exporter binds to it); [`Self::start`] starts the export task.
    ///
    /// # Errors
    /// [`TraceError::Exporter`] when the OTLP exporter cannot be built.
    pub fn new(
        config: &TelemetryConfig,
        collector: Option<SpanCollector>,
        metrics: Arc<ProxyMetrics>,
    ) -> Result<Self, TraceError> {
        if config.otlp().is_none() && collector.is_none() {
            return Ok(Self::disabled());
        }
        let resource = Resource::builder()
            .with_service_name(config.service_name().to_owned())
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource.clone());
        let mut export = None;
        if let Some(otlp) = config.otlp() {
            let exporter = exporter(otlp)?;
            let queue = Arc::new(ExportQueue::default());
            builder = builder.with_span_processor(QueueProcessor {
                queue: Arc::clone(&queue),
                metrics: Arc::clone(&metrics),
            });
            export = Some(Export {
                queue,
                exporter,
                encoder: SpanEncoder::new(&resource),
                metrics,
            });
        }
        if let Some(collector) = collector {
            builder = builder.with_span_processor(CollectProcessor {
                collector,
                resource: None,
            });
        }
        let provider = builder.build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("hopgate"))
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false);
        // Only hopgate's request spans go to this dispatcher. Unfiltered, it would take an
        // interest in every callsite of the process (hyper's, h2's, tokio's), and each of those
        // would then ask the log filter whether it is enabled, on every request. The filter is
        // the whole subscriber's, decided once per callsite: a per-layer filter would also keep
        // per-span filter state on every request.
        let only_hopgate = Targets::new().with_target("hopgate", Level::INFO);
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(only_hopgate)
                .with(layer),
        );
        Ok(Self {
            inner: Some(Arc::new(Inner {
                dispatch,
                provider,
                export: Mutex::new(export),
            })),
        })
    }

    /// Whether spans are made.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts the export task in the current runtime (once; later calls return `None`). It
    /// ends after [`Self::shutdown`], once the queue is sent.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        let inner = self.inner.as_ref()?;
        let export = inner
            .export
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some(tokio::spawn(export.run()))
    }

    /// Ends the provider: spans still open end, the queue closes, and the export task sends
    /// what is left.
    pub fn shutdown(&self) {
        if let Some(inner) = &self.inner {
            let _ = inner.provider.shutdown();
        }
    }

    /// The span of a request with these headers: the caller's `traceparent` is its parent, or it
    /// starts a new trace.
    pub fn request_span(
        &self,
        kind: SpanKind,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        version: http::Version,
    ) -> HopSpan {
        let Some(inner) = &self.inner else {
            return HopSpan::disabled();
        };
        let span = tracing::dispatcher::with_default(&inner.dispatch, || match kind {
            SpanKind::Inbound => request_span!("hopgate.inbound", "server"),
            SpanKind::Outbound => request_span!("hopgate.outbound", "client"),
        });
        if let Some(parent) = remote_parent(headers) {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        }
        let cx = span.context();
        cx.span().set_attributes([
            KeyValue::new("http.request.method", method_value(method)),
            KeyValue::new("url.path", recent::value(path)),
            KeyValue::new("network.protocol.version", protocol_version(version)),
            KeyValue::new(
                "hop.direction",
                match kind {
                    SpanKind::Inbound => "inbound",
                    SpanKind::Outbound => "outbound",
                },
            ),
        ]);
        HopSpan {
            _span: span,
            cx: Some(cx),
        }
    }

    /// Writes `span`'s context as `traceparent` (and `tracestate`) into `headers`, replacing the
    /// caller's, so the next hop's spans are its children. Without tracing, `headers` are left
    /// as they are: the caller's trace context passes through.
    pub fn inject(&self, span: &HopSpan, headers: &mut HeaderMap) {
        // A span with a context exists only while tracing is on.
        let Some(cx) = &span.cx else {
            return;
        };
        headers.remove(TRACESTATE);
        let span = cx.span();
        let span_context = span.span_context();
        if !span_context.is_valid() {
            return;
        }
        // A `traceparent` is new on every request: HPACK gains nothing from indexing it, and each
        // new entry would push out one that repeats (the hop token's). Never indexed, it costs
        // the header table nothing, on the way out or at the next hop.
        let mut value = traceparent::format(span_context);
        value.set_sensitive(true);
        headers.insert(TRACEPARENT, value);
        let state = span_context.trace_state();
        if *state == TraceState::NONE {
            return;
        }
        if let Ok(state) = HeaderValue::try_from(state.header())
            && !state.is_empty()
        {
            headers.insert(TRACESTATE, state);
        }
    }
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

fn exporter(otlp: &OtlpConfig) -> Result<Exporter, TraceError> {
    match otlp.protocol() {
        OtlpProtocol::Grpc => Exporter::grpc(otlp.endpoint(), EXPORT_TIMEOUT),
        OtlpProtocol::Http => Exporter::http(otlp.endpoint()),
    }
    .map_err(TraceError::Exporter)
}

/// The method as an attribute value: the standard ones without a copy.
fn method_value(method: &str) -> Value {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|m| **m == method) {
        Some(m) => Value::from(*m),
        None => Value::from(recent::value(method)),
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}

// === impl Export ===

impl Export {
    /// Sends batches until the provider shuts down and the queue is empty.
    async fn run(mut self) {
        let mut warned = false;
        loop {
            // A first span (or the end) ...
            loop {
                {
                    let state = self.queue.lock();
                    if !state.spans.is_empty() {
                        break;
                    }
                    if state.closed {
                        return;
                    }
                }
                self.queue.ready.notified().await;
            }
            // ... then a full batch, the end, or the batch delay, whichever comes first.
            let deadline = tokio::time::Instant::now() + BATCH_DELAY;
            loop {
                {
                    let state = self.queue.lock();
                    if state.spans.len() >= BATCH || state.closed {
                        break;
                    }
                }
                let woken = tokio::time::timeout_at(deadline, self.queue.ready.notified());
                if woken.await.is_err() {
                    break;
                }
            }
            let spans = self.queue.lock().spans.take();
            let count = spans.len();
            let request = self.encoder.request(spans);
            let result = tokio::time::timeout(EXPORT_TIMEOUT, self.exporter.export(request)).await;
            let failure = match result {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(err),
                Err(_) => Some("export timed out".to_owned()),
            };
            if let Some(error) = failure {
                self.metrics.record_spans_dropped(count);
                // Once per outage, not once per batch; the counter carries the rest.
                if !warned {
                    tracing::warn!(spans = count, error = %error, "span export failed; dropping spans until the collector answers");
                    warned = true;
                }
            } else {
                warned = false;
            }
        }
    }
}

// === impl QueueProcessor ===

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let queued = {
            let mut state = self.queue.lock();
            if state.closed || state.spans.len() >= QUEUE {
                None
            } else {
                state.spans.push(&span);
                Some(state.spans.len())
            }
        };
        match queued {
            None => self.metrics.record_spans_dropped(1),
            Some(1 | BATCH) => self.queue.ready.notify_one(),
            Some(_) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.queue.lock().closed = true;
        self.queue.ready.notify_one();
        Ok(())
    }
}

// === impl ExportQueue ===

impl ExportQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl CollectProcessor ===

impl SpanProcessor for CollectProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.collector.push(span, self.resource.as_ref());
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

// === impl SpanCollector ===

impl SpanCollector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, mut span: SpanData, resource: Option<&Resource>) {
        // The service name rides along as an attribute: a collected span has no resource.
        if let Some(name) = resource.and_then(|r| r.get(&opentelemetry::Key::new("service.name"))) {
            span.attributes.push(KeyValue::new("service.name", name));
        }
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(span);
    }

    /// Every span collected so far, in the order they ended.
    pub fn spans(&self) -> Vec<SpanData> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the spans collected so far.
    pub fn clear(&self) {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

// === impl HopSpan ===

impl HopSpan {
    /// No span: tracing is off.
    pub fn disabled() -> Self {
        Self {
            _span: tracing::Span::none(),
            cx: None,
        }
    }

    /// Whether this is a real span (tracing is on).
    pub fn is_enabled(&self) -> bool {
        self.cx.is_some()
    }

    fn set(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(cx) = &self.cx {
            cx.span().set_attributes(attributes);
        }
    }

    /// The trace id (32 hex digits), when there is a span.
    pub fn trace_id(&self) -> Option<TraceIdHex> {
        let span = self.cx.as_ref()?.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| TraceIdHex::new(span_context.trace_id()))
    }

    /// Who called whom: `hop.peer.id` (the principal) and `hop.dest.id` (the resource), and the
    /// authority as `server.address`.
    pub fn record_hop(&self, peer: &SpiffeId, dest: &SpiffeId, host: &str) {
        if !self.is_enabled() {
            return;
        }
        let ids = [
            KeyValue::new("hop.peer.id", recent::value(peer.as_str())),
            KeyValue::new("hop.dest.id", recent::value(dest.as_str())),
        ];
        let host = (!host.is_empty()).then(|| KeyValue::new("server.address", recent::value(host)));
        self.set(ids.into_iter().chain(host));
    }

    /// The hop token this hop carries: verified (inbound) or minted (outbound).
    pub fn record_token(&self, facts: &TokenFacts, jti: &str, prv: Option<&str>) {
        if !self.is_enabled() {
            return;
        }
        // Origin first, the current peer last: `sub` when it is a workload, then the actors
        // from the deepest (least recent) to the outermost (current).
        // `sub` is `enduser.id` and often the chain's origin too: one shared copy for both.
        let sub = recent::value(&facts.sub);
        let mut chain: Vec<opentelemetry::StringValue> = Vec::with_capacity(facts.actors.len() + 1);
        if facts.sub.starts_with("spiffe://") {
            chain.push(sub.clone());
        }
        chain.extend(facts.actors.iter().rev().map(|a| recent::value(a)));
        let txn = facts
            .txn
            .as_ref()
            .map(|txn| KeyValue::new("hop.txn", recent::value(txn)));
        let prv = prv.map(|prv| KeyValue::new("hop.token.prv", recent::value(prv)));
        let attributes = [
            KeyValue::new("hop.token.jti", recent::value(jti)),
            KeyValue::new("enduser.id", sub),
            KeyValue::new("hop.chain", Value::Array(chain.into())),
            KeyValue::new(
                "hop.chain.depth",
                i64::try_from(facts.actors.len()).unwrap_or(i64::MAX),
            ),
        ];
        self.set(txn.into_iter().chain(prv).chain(attributes));
    }

    /// The Cedar action this hop was decided under.
    pub fn record_action(&self, action: &str) {
        if self.is_enabled() {
            self.set([KeyValue::new("hop.intent.action", recent::value(action))]);
        }
    }

    /// The decision: `allow`, `deny` or `audit_deny`, with its id and determining policies when
    /// policies were evaluated.
    pub fn record_decision(
        &self,
        decision: &'static str,
        id: Option<&Arc<str>>,
        policies: &[String],
    ) {
        if !self.is_enabled() {
            return;
        }
        let decision = KeyValue::new("hop.decision", decision);
        match id {
            Some(id) => {
                let ids: Vec<opentelemetry::StringValue> =
                    policies.iter().map(|p| recent::value(p)).collect();
                self.set([
                    decision,
                    KeyValue::new(
                        "hop.decision.id",
                        opentelemetry::StringValue::from(Arc::clone(id)),
                    ),
                    KeyValue::new("hop.policy.ids", Value::Array(ids.into())),
                ]);
            }
            None => self.set([decision]),
        }
    }

    /// A request refused before or without a policy decision: a 401, 400 or 403 `no_route` is
    /// a `deny`. A policy denial was recorded with its id already; a failure after admission
    /// (502, 503, 504) leaves the decision as it was.
    pub fn record_refusal(&self, err: &RequestError) {
        let decided = matches!(err, RequestError::Forbidden(_));
        if !decided && err.decision() != DecisionLabel::Allow {
            self.record_decision(DecisionLabel::Deny.as_str(), None, &[]);
        }
    }

    /// The response status; 5xx marks the span as an error.
    pub fn record_status(&self, status: u16) {
        let Some(cx) = &self.cx else { return };
        self.set([KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        )]);
        if status >= 500 {
            cx.span()
                .set_status(Status::error(format!("HTTP {status}")));
        }
    }
}

/// The authority a request names, for `server.address`: `Host`, else the URI's.
pub fn authority<B>(req: &http::Request<B>) -> &str {
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str))
        .unwrap_or_default()
}

/// The caller's span, from `traceparent` (and `tracestate`), when it names a valid one.
fn remote_parent(headers: &HeaderMap) -> Option<SpanContext> {
    let (trace_id, span_id, flags) = traceparent::parse(headers.get(TRACEPARENT)?.as_bytes())?;
    // A malformed `tracestate` is dropped, not the trace: the W3C rule, and the SDK's. So is one
    // longer than the 512 bytes W3C asks every tracer to pass on (TEL-02 in docs/security.md):
    // it is not parsed, and not forwarded.
    let state = headers
        .get(TRACESTATE)
        .filter(|v| v.len() <= TRACESTATE_LIMIT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(trace_id, span_id, flags, true, state))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderMap;
    use opentelemetry::trace::{SpanId, TraceId};

    use super::{HopSpan, SpanCollector, SpanKind, TraceIdHex, Tracing};
    use crate::telemetry::metrics::ProxyMetrics;

    const CONFIG: &str = "identity:\n  svid: { cert: svid.pem, key: svid_key.pem }\n  bundles: { example.org: bundle.pem }\noutbound:\n  listen: 127.0.0.1:15001\n";

    fn tracing(collector: &SpanCollector) -> Tracing {
        // The config names these files and checks that they can be read; tracing reads none.
        let dir = tempfile::tempdir().unwrap();
        for file in ["svid.pem", "svid_key.pem", "bundle.pem"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        let config = hopgate_config::from_yaml(CONFIG, dir.path()).unwrap();
        Tracing::new(
            config.telemetry(),
            Some(collector.clone()),
            Arc::new(ProxyMetrics::new()),
        )
        .unwrap()
    }

    const CALLER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// A caller's request headers with this `traceparent` and `tracestate`.
    fn caller(traceparent: &str, tracestate: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", traceparent.parse().unwrap());
        headers.insert("tracestate", tracestate.parse().unwrap());
        headers
    }

    fn span(tracing: &Tracing, kind: SpanKind, headers: &HeaderMap) -> HopSpan {
        tracing.request_span(kind, headers, "GET", "/", http::Version::HTTP_11)
    }

    #[tokio::test]
    async fn a_callers_trace_context_is_continued_and_its_tracestate_carried_to_the_next_hop() {
        let collector = SpanCollector::new();
        let tracing = tracing(&collector);
        let headers = caller(CALLER, "vendor=opaque,other=1");
        let span = span(&tracing, SpanKind::Inbound, &headers);
        assert_eq!(
            span.trace_id().as_ref().map(TraceIdHex::as_str),
            Some("0af7651916cd43dd8448eb211c80319c")
        );

        let mut forwarded = headers;
        tracing.inject(&span, &mut forwarded);
        let traceparent = forwarded["traceparent"].to_str().unwrap().to_owned();
        drop(span);
        let spans = collector.spans();
        let [ended] = spans.as_slice() else {
            panic!("one span, not {spans:?}")
        };
        assert_eq!(
            ended.parent_span_id,
            SpanId::from_hex("b7ad6b7169203331").unwrap()
        );
        assert!(ended.parent_span_is_remote);
        assert_eq!(
            ended.span_context.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        // The next hop's parent is this span, in the same trace, with the caller's tracestate.
        assert_eq!(
            traceparent,
            format!(
                "00-0af7651916cd43dd8448eb211c80319c-{}-01",
                ended.span_context.span_id()
            )
        );
        assert_eq!(forwarded["tracestate"], "vendor=opaque,other=1");
    }

    #[tokio::test]
    async fn an_oversized_tracestate_is_dropped_and_the_trace_kept() {
        // TEL-02
        let collector = SpanCollector::new();
        let tracing = tracing(&collector);
        let long = (0..40)
            .map(|i| format!("k{i}=v{i:020}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(long.len() > 512);
        let mut headers = caller(CALLER, &long);
        let span = span(&tracing, SpanKind::Inbound, &headers);
        assert_eq!(
            span.trace_id().as_ref().map(TraceIdHex::as_str),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        tracing.inject(&span, &mut headers);
        assert!(headers.get("tracestate").is_none());
    }

    #[tokio::test]
    async fn a_request_without_a_valid_traceparent_starts_a_trace_and_sends_no_stale_tracestate() {
        // TEL-02
        let collector = SpanCollector::new();
        let tracing = tracing(&collector);
        let zero_trace = "00-00000000000000000000000000000000-b7ad6b7169203331-01";
        let mut headers = caller(zero_trace, "vendor=stale");
        let span = span(&tracing, SpanKind::Outbound, &headers);
        let trace_id = span.trace_id().unwrap();
        let trace_id = trace_id.as_str();
        assert_ne!(trace_id, "0".repeat(32));
        tracing.inject(&span, &mut headers);
        assert!(
            headers["traceparent"]
                .to_str()
                .unwrap()
                .starts_with(&format!("00-{trace_id}-"))
        );
        assert!(headers.get("tracestate").is_none());
        drop(span);
        assert_eq!(collector.spans()[0].parent_span_id, SpanId::INVALID);
    }
}
