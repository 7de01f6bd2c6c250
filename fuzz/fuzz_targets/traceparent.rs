//! Fuzzes the reading of a caller's W3C trace context (TEL-02 in docs/security.md): its
//! `traceparent` (hopgate's own parser) and its `tracestate` (up to 512 bytes, handed to the
//! SDK), as an inbound request carries them on. The input is the `traceparent` value, then
//! optionally `\n` and the `tracestate` value. Nothing may panic, and:
//!
//! - a trace id read from a `traceparent` is its 32 digits after the version, never all zeros;
//! - the request span continues that trace (a malformed `traceparent` starts a new one), and the
//!   next hop's `traceparent` names that span in that trace and reads back the same;
//! - a `tracestate` is sent on only for a continued trace, and never longer than 512 bytes;
//! - the span's remote parent is the caller's parent id.
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run traceparent

#![no_main]

use std::sync::{Arc, LazyLock};

use hopgate_proxy::fuzzing::{caller_trace_id, continue_trace};
use hopgate_proxy::telemetry::metrics::ProxyMetrics;
use hopgate_proxy::telemetry::trace::{SpanCollector, Tracing};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

/// Tracing on, spans kept in memory (no export): the smallest config, whose files only need
/// to exist (in the scratch `TMPDIR` of `run.sh`, or the system's).
static TRACING: LazyLock<(Tracing, SpanCollector)> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("hopgate-fuzz-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    for file in ["svid.pem", "svid_key.pem", "bundle.pem"] {
        std::fs::write(dir.join(file), "").expect("a placeholder file");
    }
    // No environment: an `$OTEL_*` of the shell must not turn on an exporter here.
    let config = hopgate_config::from_yaml_with_env(
        "identity:\n  svid: { cert: svid.pem, key: svid_key.pem }\n  bundles: { example.org: bundle.pem }\noutbound:\n  listen: 127.0.0.1:15001\n",
        &dir,
        |_| None,
    )
    .expect("the minimal config");
    let collector = SpanCollector::new();
    let tracing = Tracing::new(
        config.telemetry(),
        Some(collector.clone()),
        Arc::new(ProxyMetrics::new()),
        None,
    )
    .expect("tracing without export");
    (tracing, collector)
});

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == b'\n');
    let traceparent = parts.next().unwrap_or_default();
    let tracestate = parts.next();
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

    let caller = caller_trace_id(&headers);
    if let Some(trace_id) = &caller {
        let sent = sent.as_deref().expect("read from a traceparent");
        assert!(sent.len() >= 55, "{sent:?}");
        assert_eq!(Some(trace_id.as_str().as_bytes()), sent.get(3..35));
        assert!(trace_id.as_str().bytes().any(|b| b != b'0'));
    }

    let (tracing, collector) = &*TRACING;
    let span = continue_trace(tracing, &mut headers);
    let trace_id = span
        .trace_id()
        .expect("tracing is on: the span has a trace id");
    if let Some(caller) = &caller {
        assert_eq!(&trace_id, caller, "the caller's trace is continued");
    }
    let next = headers
        .get("traceparent")
        .expect("a traceparent for the next hop");
    assert_eq!(next.len(), 55);
    assert_eq!(caller_trace_id(&headers).as_ref(), Some(&trace_id));
    if let Some(state) = headers.get("tracestate") {
        assert!(caller.is_some(), "a tracestate sent on for a new trace");
        assert!(!state.is_empty() && state.len() <= 512, "{state:?}");
    }
    drop(span);
    let spans = collector.spans();
    collector.clear();
    assert!(spans.len() <= 1, "one request, one span: {}", spans.len());
    if let (Some(ended), Some(sent)) = (spans.first(), &sent)
        && caller.is_some()
    {
        assert!(ended.parent_span_is_remote);
        assert_eq!(
            Some(ended.parent_span_id.to_string().as_bytes()),
            sent.get(36..52)
        );
        assert_eq!(ended.span_context.trace_id().to_string(), trace_id.as_str());
    }
});
