//! The encoder against `opentelemetry-proto` and prost, field for field and byte for byte.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use proptest::prelude::*;
use prost::Message as _;

use std::io::IoSlice;

use bytes::Buf as _;

use super::{ExportRequest, SpanEncoder};

fn context(trace: u128, span: u64, remote: bool, state: &str) -> SpanContext {
    let state = if state.is_empty() {
        TraceState::NONE
    } else {
        state.parse::<TraceState>().unwrap()
    };
    SpanContext::new(
        TraceId::from(trace),
        SpanId::from(span),
        TraceFlags::SAMPLED,
        remote,
        state,
    )
}

fn span(name: &'static str, attributes: Vec<KeyValue>, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: context(
            0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
            0xb7ad_6b71_6920_3331,
            false,
            "",
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: Cow::Borrowed(name),
        start_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
        end_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_223_456_789),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    }
}

fn reference(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            spans.to_vec(),
            &ResourceAttributesWithSchema::from(resource),
        ),
    }
}

/// Our bytes decode to the message the SDK's own conversion builds, and are those prost
/// writes for it, byte for byte.
fn assert_same(resource: &Resource, spans: &[SpanData]) {
    let ours = SpanEncoder::new(resource).encode(spans);
    let expected = reference(resource, spans);
    let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).unwrap();
    assert_eq!(decoded, expected);
    assert_eq!(ours, expected.encode_to_vec());
}

#[test]
fn encoded_spans_are_what_the_otlp_conversion_writes_for_every_field() {
    let resource = Resource::builder()
        .with_service_name("inference sidecar")
        .with_attribute(KeyValue::new("deployment.environment", "test"))
        .with_schema_url(
            Vec::<KeyValue>::new(),
            "https://opentelemetry.io/schemas/1.26.0",
        )
        .build();
    let hopgate = InstrumentationScope::builder("hopgate").build();
    let other = InstrumentationScope::builder("other")
        .with_version("1.2.3")
        .with_schema_url("https://example.test/schema")
        .with_attributes([KeyValue::new("scope.attr", true)])
        .build();

    let long = "x".repeat(200);
    let longer = "y".repeat(20_000);
    let mut full = span(
        "hopgate.outbound",
        vec![
            KeyValue::new(
                "hop.peer.id",
                "spiffe://demo.local/ns/agents/sa/support-agent",
            ),
            KeyValue::new("empty", ""),
            KeyValue::new("http.response.status_code", 200_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("negative", -42_i64),
            KeyValue::new("ratio", 0.25_f64),
            KeyValue::new("negative.zero", -0.0_f64),
            KeyValue::new("yes", true),
            KeyValue::new("no", false),
            KeyValue::new("long", long.clone()),
            KeyValue::new("longer", longer),
            KeyValue::new(
                "hop.chain",
                Value::Array(Array::String(vec![
                    StringValue::from("spiffe://a/x"),
                    StringValue::from(""),
                    StringValue::from(long),
                ])),
            ),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, i64::MAX]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
            KeyValue::new("none", Value::Array(Array::String(vec![]))),
        ],
        &hopgate,
    );
    full.span_context = context(1, 2, false, "vendor=opaque,other=1");
    full.parent_span_id = SpanId::from(0x1122_3344_5566_7788);
    full.parent_span_is_remote = true;
    full.span_kind = SpanKind::Client;
    full.dropped_attributes_count = 3;
    full.events.events.push(Event::new(
        "exception",
        SystemTime::UNIX_EPOCH + Duration::from_secs(5),
        vec![KeyValue::new("exception.message", "boom")],
        1,
    ));
    full.events.dropped_count = 2;
    full.links.links.push(Link::new(
        context(7, 8, true, "k=v"),
        vec![KeyValue::new("link.attr", 9_i64)],
        4,
    ));
    full.links.dropped_count = 5;
    full.status = Status::error("HTTP 502");

    let mut ok = span("hopgate.inbound", vec![], &other);
    ok.status = Status::Ok;
    ok.span_kind = SpanKind::Internal;
    let mut producer = span("p", vec![], &hopgate);
    producer.span_kind = SpanKind::Producer;
    producer.status = Status::error("");
    let mut consumer = span("c", vec![], &other);
    consumer.span_kind = SpanKind::Consumer;
    consumer.start_time = SystemTime::UNIX_EPOCH;

    assert_same(&resource, &[full, ok, producer, consumer]);
    assert_same(&resource, &[]);
    assert_same(
        &Resource::builder_empty().build(),
        &[span("bare", vec![], &hopgate)],
    );
}

#[test]
fn a_request_in_pieces_reads_as_one_and_never_past_its_end() {
    let mut request = ExportRequest::default();
    request.push(b"ab".to_vec());
    request.push(Vec::new());
    request.push(b"cde".to_vec());
    assert_eq!(request.remaining(), 5);
    let mut slices = [IoSlice::new(&[]); 4];
    assert_eq!(request.chunks_vectored(&mut slices), 2);
    assert_eq!(&*slices[1], b"cde");
    request.advance(3);
    assert_eq!(request.chunk(), b"de");
    assert_eq!(request.remaining(), 2);
    request.advance(10);
    assert_eq!(request.remaining(), 0);
    assert!(request.chunk().is_empty());
}

#[test]
fn a_batch_of_request_spans_is_one_resource_and_one_scope() {
    let resource = Resource::builder().with_service_name("a").build();
    let hopgate = InstrumentationScope::builder("hopgate").build();
    let spans: Vec<SpanData> = (0..128)
        .map(|i| {
            span(
                "hopgate.inbound",
                vec![KeyValue::new("i", i64::from(i))],
                &hopgate,
            )
        })
        .collect();
    let decoded =
        ExportTraceServiceRequest::decode(SpanEncoder::new(&resource).encode(&spans).as_slice())
            .unwrap();
    assert_eq!(decoded.resource_spans.len(), 1);
    assert_eq!(decoded.resource_spans[0].scope_spans.len(), 1);
    assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 128);
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::I64),
        // NaN is never equal to itself, so the comparison could not hold.
        any::<f64>()
            .prop_filter("not NaN", |f| !f.is_nan())
            .prop_map(Value::F64),
        ".{0,300}".prop_map(|s: String| Value::String(s.into())),
        prop::collection::vec(".{0,40}", 0..5).prop_map(|v| {
            Value::Array(Array::String(
                v.into_iter().map(StringValue::from).collect(),
            ))
        }),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(|v| Value::Array(Array::I64(v))),
    ]
}

proptest! {
    #[test]
    fn any_attributes_encode_as_the_otlp_conversion_does(
        attributes in prop::collection::vec(("[a-z.]{0,20}", value()), 0..20),
        trace in any::<u128>(),
        span_id in any::<u64>(),
        parent in any::<u64>(),
        remote in any::<bool>(),
        start in any::<u64>(),
    ) {
        let hopgate = InstrumentationScope::builder("hopgate").build();
        let attributes = attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect();
        let mut data = span("hopgate.inbound", attributes, &hopgate);
        data.span_context = context(trace, span_id, remote, "");
        data.parent_span_id = SpanId::from(parent);
        data.parent_span_is_remote = remote;
        data.start_time = SystemTime::UNIX_EPOCH + Duration::from_nanos(start);
        assert_same(&Resource::builder().with_service_name("p").build(), &[data]);
    }
}
