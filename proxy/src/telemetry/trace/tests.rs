//! Request spans end to end: attributes, parents, drops, the collector.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, TraceId};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;

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

// === the `traceparent` fuzz target's properties, as proptests ===

/// What the `traceparent` fuzz target asserts of a caller's `traceparent` and `tracestate` as
/// an inbound request carries them on: nothing panics; a trace id read is the `traceparent`'s
/// 32 digits and not all zeros; the span continues that trace (else starts one) and the next
/// hop's `traceparent` names it; a `tracestate` goes on only for a continued trace, at most
/// 512 bytes; the span's remote parent is the caller's parent id.
fn assert_the_trace_context_is_carried_on(
    tracing: &Tracing,
    collector: &SpanCollector,
    traceparent: &[u8],
    tracestate: Option<&[u8]>,
) -> Result<(), TestCaseError> {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(traceparent) {
        headers.insert("traceparent", value);
    }
    if let Some(Ok(value)) = tracestate.map(HeaderValue::from_bytes) {
        headers.insert("tracestate", value);
    }
    let sent = headers
        .get("traceparent")
        .map(|v| v.as_bytes().trim_ascii().to_vec());
    let trace_of = |headers: &HeaderMap| CallerTrace::from_headers(headers).map(|c| c.trace_id());

    let caller = trace_of(&headers);
    if let Some(trace_id) = &caller {
        let sent = sent.as_deref().unwrap_or_default();
        prop_assert!(sent.len() >= 55, "{:?}", sent);
        prop_assert_eq!(Some(trace_id.as_str().as_bytes()), sent.get(3..35));
        prop_assert!(trace_id.as_str().bytes().any(|b| b != b'0'));
    }

    let span = span(tracing, SpanKind::Inbound, &headers);
    tracing.inject(&span, &mut headers);
    let trace_id = span.trace_id();
    prop_assert!(trace_id.is_some(), "tracing is on: the span has a trace id");
    if let Some(caller) = &caller {
        prop_assert_eq!(
            trace_id.as_ref(),
            Some(caller),
            "the caller's trace is continued"
        );
    }
    let next = headers.get("traceparent").map(HeaderValue::len);
    prop_assert_eq!(next, Some(55), "a traceparent for the next hop");
    prop_assert_eq!(trace_of(&headers), trace_id);
    if let Some(state) = headers.get("tracestate") {
        prop_assert!(caller.is_some(), "a tracestate sent on for a new trace");
        prop_assert!(!state.is_empty() && state.len() <= 512, "{:?}", state);
    }
    drop(span);
    let spans = collector.spans();
    collector.clear();
    prop_assert!(spans.len() <= 1, "one request, one span: {}", spans.len());
    if let (Some(ended), Some(sent), Some(trace_id)) = (spans.first(), &sent, &trace_id)
        && caller.is_some()
    {
        prop_assert!(ended.parent_span_is_remote);
        let parent = ended.parent_span_id.to_string();
        prop_assert_eq!(Some(parent.as_bytes()), sent.get(36..52));
        prop_assert_eq!(ended.span_context.trace_id().to_string(), trace_id.as_str());
    }
    Ok(())
}

/// Runs `cases` cases of `(traceparent, tracestate)` through one tracing setup.
fn check_trace_contexts(cases: u32, strategy: impl Strategy<Value = (Vec<u8>, Option<Vec<u8>>)>) {
    let collector = SpanCollector::new();
    let tracing = tracing(&collector);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&strategy, |(traceparent, tracestate)| {
            assert_the_trace_context_is_carried_on(
                &tracing,
                &collector,
                &traceparent,
                tracestate.as_deref(),
            )
        })
        .unwrap();
}

/// A `tracestate` list member, of the W3C grammar or near it: a key (maybe with a tenant, maybe
/// with bytes the grammar refuses), `=`, a value, with optional whitespace.
fn tracestate_member() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        6 => "[a-z][a-z0-9_*/-]{0,12}",
        2 => "[a-z0-9][a-z0-9_*/-]{0,8}@[a-z][a-z0-9_*/-]{0,6}",
        1 => "[ -~]{0,6}",
        1 => Just("k".repeat(257)),
    ];
    let value = prop_oneof![
        6 => "[!-+--<>-~]{1,16}",
        1 => "[ -~]{0,8}",
        1 => Just("v".repeat(257)),
    ];
    let space = || prop_oneof![8 => Just(String::new()), 1 => " {1,2}"];
    (key, value, space(), space())
        .prop_map(|(key, value, before, after)| format!("{before}{key}={value}{after}"))
}

/// A valid `traceparent`, maybe with one byte changed, another version or a suffix.
fn traceparent_near_valid() -> impl Strategy<Value = String> {
    let well_formed = (
        prop_oneof![6 => Just("00"), 1 => prop::sample::select(vec!["01", "cc", "ff", "0A"])],
        prop_oneof![4 => "[0-9a-f]{32}", 1 => Just("0".repeat(32))],
        prop_oneof![4 => "[0-9a-f]{16}", 1 => Just("0".repeat(16))],
        "[0-9a-f]{2}",
        prop_oneof![6 => Just(""), 1 => prop::sample::select(vec!["-", "-x", "x", " ", "\t"])],
    )
        .prop_map(|(version, trace, span, flags, tail)| {
            format!("{version}-{trace}-{span}-{flags}{tail}")
        });
    (
        well_formed,
        prop::option::weighted(0.2, (any::<Index>(), 0x20..0x7fu8)),
    )
        .prop_map(|(value, change)| {
            let mut bytes = value.into_bytes();
            if let Some((at, byte)) = change {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

#[test]
fn the_trace_context_reader_never_panics_on_arbitrary_bytes() {
    // The fuzz target's input: the `traceparent`, then maybe `\n` and the `tracestate`.
    let bytes = prop::collection::vec(any::<u8>(), 0..700).prop_map(|data| {
        let mut parts = data.splitn(2, |b| *b == b'\n');
        let traceparent = parts.next().unwrap_or_default().to_vec();
        (traceparent, parts.next().map(<[u8]>::to_vec))
    });
    check_trace_contexts(256, bytes);
}

#[test]
fn the_trace_context_reader_never_panics_on_a_near_valid_traceparent_and_tracestate() {
    let tracestate = prop_oneof![
        6 => prop_oneof![4 => 0..6usize, 1 => 6..40usize]
            .prop_flat_map(|count| prop::collection::vec(tracestate_member(), count))
            .prop_map(|members| members.join(",")),
        1 => "[ -~]{0,100}",
    ];
    let context = (
        traceparent_near_valid(),
        prop::option::weighted(0.9, tracestate),
    )
        .prop_map(|(traceparent, tracestate)| {
            (traceparent.into_bytes(), tracestate.map(String::into_bytes))
        });
    check_trace_contexts(256, context);
}
