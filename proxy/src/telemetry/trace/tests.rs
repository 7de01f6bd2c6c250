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
        None,
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

#[tokio::test]
async fn an_mcp_call_is_named_by_the_otel_mcp_conventions() {
    let collector = SpanCollector::new();
    let tracing = tracing(&collector);
    let headers = HeaderMap::new();
    let call = span(&tracing, SpanKind::Inbound, &headers);
    call.record_mcp("tools/call", Some("read_ticket"), "2026-07-28");
    drop(call);
    let list = span(&tracing, SpanKind::Inbound, &headers);
    list.record_mcp("tools/list", None, "");
    drop(list);
    let spans = collector.spans();
    let [call, list] = spans.as_slice() else {
        panic!("two spans, not {spans:?}")
    };
    let text = |span, key| attr(span, key).map(|v| v.as_str().into_owned());
    assert_eq!(text(call, "mcp.method.name").as_deref(), Some("tools/call"));
    assert_eq!(text(call, "mcp.tool.name").as_deref(), Some("read_ticket"));
    assert_eq!(
        text(call, "gen_ai.tool.name").as_deref(),
        Some("read_ticket")
    );
    assert_eq!(
        text(call, "mcp.protocol.version").as_deref(),
        Some("2026-07-28")
    );
    assert_eq!(text(list, "mcp.method.name").as_deref(), Some("tools/list"));
    assert_eq!(text(list, "mcp.tool.name"), None);
    assert_eq!(text(list, "mcp.protocol.version"), None);
}

/// The value of `key` among `span`'s attributes.
fn attr(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[tokio::test]
async fn a_server_span_is_an_error_on_5xx_only_and_a_client_span_on_4xx_too_with_its_error_type() {
    use opentelemetry::trace::Status;
    let collector = SpanCollector::new();
    let tracing = tracing(&collector);
    let cases = [
        (SpanKind::Inbound, 403, Some("no_permit"), None),
        (SpanKind::Inbound, 401, Some("binding"), None),
        (
            SpanKind::Inbound,
            502,
            Some("upstream_unavailable"),
            Some("upstream_unavailable"),
        ),
        (SpanKind::Inbound, 500, None, Some("500")),
        (SpanKind::Outbound, 403, Some("no_route"), Some("no_route")),
        (SpanKind::Outbound, 404, None, Some("404")),
        (SpanKind::Outbound, 200, None, None),
    ];
    for (kind, status, refusal, error_type) in cases {
        collector.clear();
        let span = span(&tracing, kind, &HeaderMap::new());
        span.record_status(status, refusal);
        drop(span);
        let spans = collector.spans();
        let [ended] = spans.as_slice() else {
            panic!("one span, not {spans:?}")
        };
        let expected = error_type.map(|t| opentelemetry::Value::from(t.to_owned()));
        assert_eq!(attr(ended, "error.type"), expected, "{kind:?} {status}");
        let is_error = matches!(ended.status, Status::Error { .. });
        assert_eq!(is_error, error_type.is_some(), "{kind:?} {status}");
        assert_eq!(
            attr(ended, "http.response.status_code"),
            Some(opentelemetry::Value::I64(i64::from(status)))
        );
        assert_eq!(attr(ended, "url.scheme"), Some("https".into()));
    }
}

#[tokio::test]
async fn server_address_and_port_come_from_the_authority_and_client_address_from_the_socket() {
    let collector = SpanCollector::new();
    let tracing = tracing(&collector);
    for (authority, host, port) in [
        ("crm.tools:8080", "crm.tools", Some(8080)),
        ("crm.tools", "crm.tools", None),
        ("[::1]:15006", "::1", Some(15006)),
        ("10.0.0.5", "10.0.0.5", None),
    ] {
        collector.clear();
        let span = span(&tracing, SpanKind::Inbound, &HeaderMap::new());
        span.record_authority(authority);
        span.record_client(&super::client_ip("192.0.2.7:50712".parse().unwrap()));
        drop(span);
        let ended = collector.spans().pop().unwrap();
        assert_eq!(attr(&ended, "server.address"), Some(host.to_owned().into()));
        assert_eq!(
            attr(&ended, "server.port"),
            port.map(opentelemetry::Value::I64),
            "{authority}"
        );
        assert_eq!(
            attr(&ended, "client.address"),
            Some("192.0.2.7".to_owned().into())
        );
    }
}
