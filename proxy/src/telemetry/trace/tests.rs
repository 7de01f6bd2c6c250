//! Request spans end to end: attributes, parents, drops, the collector.

use std::sync::Arc;

use http::HeaderMap;
use opentelemetry::trace::{SpanId, TraceId};

use super::{HopSpan, SpanCollector, SpanKind, TraceIdHex, Tracing};
use crate::telemetry::metrics::ProxyMetrics;
use crate::telemetry::traceparent::CallerTrace;

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
    let caller = CallerTrace::from_headers(headers);
    tracing.request_span(
        kind,
        caller.as_ref(),
        headers,
        "GET",
        "/",
        http::Version::HTTP_11,
    )
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
