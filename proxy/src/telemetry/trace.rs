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
//! The collector is never on the request path: a span is encoded as it ends
//! (`otlp/encode.rs`) onto a bounded queue (`trace/export.rs`), a task in the runtime exports
//! batches with a timeout, and whatever cannot be queued or exported is counted in
//! `hopgate_telemetry_spans_dropped_total`. With no exporter and no collector, tracing is off
//! and a request costs nothing here: `traceparent` passes through untouched.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hopgate_config::{SpiffeId, TelemetryConfig};
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

use super::interner;
use super::metrics::{DecisionLabel, ProxyMetrics};
use super::otlp::{self, CurrentSvid, EncodedSpans, Exporter, SpanEncoder};
use super::traceparent::{self, CallerTrace, TRACEPARENT, TraceIdHex};

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
/// How long one batch's export may take, retries included.
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
    /// Server (inbound) or client (outbound): which statuses are errors.
    kind: SpanKind,
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
            server.port = tracing::field::Empty,
            client.address = tracing::field::Empty,
            url.scheme = tracing::field::Empty,
            error.type = tracing::field::Empty,
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
            hop.reason = tracing::field::Empty,
            hop.policy.ids = tracing::field::Empty,
            mcp.method.name = tracing::field::Empty,
            mcp.tool.name = tracing::field::Empty,
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
    /// `collector` when one is given, off when neither. `svid` reads the SVID presented to
    /// the collector with `telemetry.otlp.tls.client_svid`, at each handshake. Must be called inside a tokio runtime
    /// (the gRPC exporter binds to it); [`Self::start`] starts the export task.
    ///
    /// # Errors
    /// [`TraceError::Exporter`] when the OTLP exporter cannot be built.
    pub fn new(
        config: &TelemetryConfig,
        collector: Option<SpanCollector>,
        metrics: Arc<ProxyMetrics>,
        svid: Option<CurrentSvid>,
    ) -> Result<Self, TraceError> {
        if config.otlp().is_none() && collector.is_none() {
            return Ok(Self::disabled());
        }
        let resource = Resource::builder()
            .with_service_name(config.service_name().to_owned())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attributes(
                config
                    .resource_attributes()
                    .iter()
                    .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
            )
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(resource.clone());
        let mut export = None;
        if let Some(otlp) = config.otlp() {
            let exporter =
                Exporter::new(otlp, svid, EXPORT_TIMEOUT).map_err(TraceError::Exporter)?;
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

    /// The span of a request with these headers: the caller's trace context (`caller`, read
    /// from its `traceparent`) is its parent, or it starts a new trace.
    pub(crate) fn request_span(
        &self,
        kind: SpanKind,
        caller: Option<&CallerTrace>,
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
        if let Some(parent) = caller.map(|caller| remote_parent(caller, headers)) {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
        }
        let cx = span.context();
        cx.span().set_attributes([
            KeyValue::new("http.request.method", method_value(method)),
            KeyValue::new("url.path", interner::intern(path)),
            KeyValue::new("network.protocol.version", protocol_version(version)),
            // Inbound the request came over the hop's mTLS; outbound it leaves over it.
            KeyValue::new("url.scheme", "https"),
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
            kind,
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

/// Whether the OTLP export of `config` can be set up: its TLS material is usable (`hopgate
/// check-config`; startup finds the same when it builds the exporter).
///
/// # Errors
/// [`TraceError::Exporter`], naming the key and the file.
pub fn check_export(config: &TelemetryConfig) -> Result<(), TraceError> {
    match config.otlp() {
        Some(otlp) => otlp::check(otlp).map_err(TraceError::Exporter),
        None => Ok(()),
    }
}

/// The method as an attribute value: the standard ones without a copy.
fn method_value(method: &str) -> Value {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    match STANDARD.iter().find(|m| **m == method) {
        Some(m) => Value::from(*m),
        None => Value::from(interner::intern(method)),
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}

mod export;
mod span;
#[cfg(test)]
mod tests;

pub use span::client_ip;
use span::remote_parent;
