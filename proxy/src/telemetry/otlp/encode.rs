//! Ended spans encoded straight into `ExportTraceServiceRequest` bytes, in one pass from the
//! SDK's [`SpanData`] (see the module above for why).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use super::wire::{FIXED64, LEN, Writer, varint_width};

/// `SpanFlags`: the span says whether its parent is remote, and whether it is.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;

/// Spans encoded as they ended, waiting for export: for each instrumentation scope, in the
/// order the scopes first appeared, its `ScopeSpans.spans` entries back to back.
///
/// A span is encoded (and its `SpanData` freed) on the thread that ended it, right away, so the
/// export task only wraps the bytes: a batch no longer holds the thread while it is encoded.
#[derive(Default)]
pub(in crate::telemetry) struct EncodedSpans {
    scopes: Vec<(InstrumentationScope, Vec<u8>)>,
    count: usize,
}

impl EncodedSpans {
    /// Encodes `span` after those before it.
    pub(in crate::telemetry) fn push(&mut self, span: &SpanData) {
        let scope = &span.instrumentation_scope;
        let group = match self.scopes.iter().position(|(s, _)| s == scope) {
            Some(group) => group,
            None => {
                self.scopes.push((scope.clone(), Vec::new()));
                self.scopes.len() - 1
            }
        };
        if let Some((_, entries)) = self.scopes.get_mut(group) {
            let mut w = Writer {
                buf: std::mem::take(entries),
            };
            w.message(2, |w| self::span(w, span));
            *entries = w.buf;
            self.count += 1;
        }
    }

    /// How many spans are waiting.
    pub(in crate::telemetry) fn len(&self) -> usize {
        self.count
    }

    pub(in crate::telemetry) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The spans waiting, leaving room for as many again.
    pub(in crate::telemetry) fn take(&mut self) -> Self {
        let fresh = self
            .scopes
            .iter()
            .map(|(scope, entries)| (scope.clone(), Vec::with_capacity(entries.len())))
            .collect();
        Self {
            scopes: std::mem::replace(&mut self.scopes, fresh),
            count: std::mem::take(&mut self.count),
        }
    }
}

impl std::fmt::Debug for EncodedSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedSpans")
            .field("spans", &self.count)
            .field(
                "bytes",
                &self.scopes.iter().map(|(_, e)| e.len()).sum::<usize>(),
            )
            .finish()
    }
}

/// Encodes `ExportTraceServiceRequest`s for one resource.
#[derive(Debug)]
pub(in crate::telemetry) struct SpanEncoder {
    /// The `Resource` message's body, encoded once.
    resource: Vec<u8>,
    resource_schema_url: String,
}

impl SpanEncoder {
    pub(in crate::telemetry) fn new(resource: &Resource) -> Self {
        let mut w = Writer::default();
        for (key, value) in resource.iter() {
            w.message(1, |w| key_value(w, key.as_str(), value));
        }
        Self {
            resource: w.buf,
            resource_schema_url: resource.schema_url().unwrap_or_default().to_owned(),
        }
    }

    /// The request carrying `spans`: one `ResourceSpans`, one `ScopeSpans` per instrumentation
    /// scope. Each scope's spans go out in the buffer they were encoded into; only the heads
    /// around them are written here, their lengths summed first.
    pub(in crate::telemetry) fn request(&self, spans: EncodedSpans) -> ExportRequest {
        let mut resource_spans =
            field_len(self.resource.len()) + string_field_len(&self.resource_schema_url);
        let mut scopes = Vec::with_capacity(spans.scopes.len());
        // A scope kept from an earlier batch may have no spans in this one.
        for (scope, entries) in spans.scopes.into_iter().filter(|(_, e)| !e.is_empty()) {
            let mut message = Writer::default();
            instrumentation_scope(&mut message, &scope);
            let schema = scope.schema_url().unwrap_or_default();
            let scope_spans =
                field_len(message.buf.len()) + entries.len() + string_field_len(schema);
            resource_spans += field_len(scope_spans);
            let mut head = Writer::default();
            head.tag(2, LEN);
            head.varint(scope_spans as u64);
            head.len_field(1, &message.buf);
            let mut tail = Writer::default();
            tail.string(3, schema);
            scopes.push((head.buf, entries, tail.buf));
        }
        let mut request = ExportRequest::default();
        let mut head = Writer::default();
        head.tag(1, LEN);
        head.varint(resource_spans as u64);
        head.len_field(1, &self.resource);
        request.push(head.buf);
        for (head, entries, tail) in scopes {
            request.push(head);
            request.push(entries);
            request.push(tail);
        }
        let mut tail = Writer::default();
        tail.string(3, &self.resource_schema_url);
        request.push(tail.buf);
        request
    }

    /// The request carrying `spans`, encoded in one go.
    #[cfg(test)]
    pub(super) fn encode(&self, spans: &[SpanData]) -> Vec<u8> {
        let mut encoded = EncodedSpans::default();
        for span in spans {
            encoded.push(span);
        }
        let mut request = self.request(encoded);
        request.copy_to_bytes(request.remaining()).to_vec()
    }
}

/// An encoded `ExportTraceServiceRequest`, in the pieces it was written in: sent as it is,
/// with vectored writes over HTTP, and copied once into the gRPC frame. A clone (for another
/// try) shares the pieces.
#[derive(Clone, Debug, Default)]
pub(in crate::telemetry) struct ExportRequest {
    /// Never an empty part: [`Buf::chunk`] is empty only at the end.
    parts: VecDeque<Bytes>,
    remaining: usize,
}

impl ExportRequest {
    pub(super) fn push(&mut self, part: Vec<u8>) {
        if !part.is_empty() {
            self.remaining += part.len();
            self.parts.push_back(Bytes::from(part));
        }
    }
}

impl Buf for ExportRequest {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.parts.front().map_or(&[], |part| part.chunk())
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, part) in dst.iter_mut().zip(&self.parts) {
            *slot = IoSlice::new(part);
            filled += 1;
        }
        filled
    }

    /// Past the end is the end: nothing here panics.
    fn advance(&mut self, mut count: usize) {
        while count > 0 {
            let Some(front) = self.parts.front_mut() else {
                break;
            };
            let len = front.len();
            if count < len {
                front.advance(count);
                self.remaining -= count;
                break;
            }
            self.remaining -= len;
            count -= len;
            self.parts.pop_front();
        }
    }
}

fn instrumentation_scope(w: &mut Writer, scope: &InstrumentationScope) {
    w.string(1, scope.name());
    w.string(2, scope.version().unwrap_or_default());
    for kv in scope.attributes() {
        w.message(3, |w| key_value(w, kv.key.as_str(), &kv.value));
    }
}

fn span(w: &mut Writer, span: &SpanData) {
    let cx = &span.span_context;
    w.bytes(1, &cx.trace_id().to_bytes());
    w.bytes(2, &cx.span_id().to_bytes());
    w.string(3, &cx.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        w.bytes(4, &span.parent_span_id.to_bytes());
    }
    w.string(5, &span.name);
    w.uint(6, span_kind(&span.span_kind));
    w.fixed64(7, nanos(span.start_time));
    w.fixed64(8, nanos(span.end_time));
    attributes(w, 9, &span.attributes);
    w.uint(10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        w.message(11, |w| {
            w.fixed64(1, nanos(event.timestamp));
            w.string(2, &event.name);
            attributes(w, 3, &event.attributes);
            w.uint(4, u64::from(event.dropped_attributes_count));
        });
    }
    w.uint(12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        let cx = &link.span_context;
        w.message(13, |w| {
            w.bytes(1, &cx.trace_id().to_bytes());
            w.bytes(2, &cx.span_id().to_bytes());
            w.string(3, &cx.trace_state().header());
            attributes(w, 4, &link.attributes);
            w.uint(5, u64::from(link.dropped_attributes_count));
            w.fixed32(6, flags(cx.is_remote(), cx.trace_flags().to_u8()));
        });
    }
    w.uint(14, u64::from(span.links.dropped_count));
    // Always present, as the SDK's own conversion has it: code 0 (unset) is written as nothing.
    w.message(15, |w| match &span.status {
        Status::Unset => {}
        Status::Ok => w.uint(3, 1),
        Status::Error { description } => {
            w.string(2, description);
            w.uint(3, 2);
        }
    });
    w.fixed32(
        16,
        flags(span.parent_span_is_remote, cx.trace_flags().to_u8()),
    );
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn flags(parent_is_remote: bool, trace_flags: u8) -> u32 {
    let remote = if parent_is_remote {
        CONTEXT_IS_REMOTE
    } else {
        0
    };
    u32::from(trace_flags) | CONTEXT_HAS_IS_REMOTE | remote
}

/// Nanoseconds since the Unix epoch; 0 before it, saturating far after it.
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `attributes` as repeated `KeyValue` field `field`. Every length is known before it is
/// written (an attribute value nests at most two messages deep), so nothing is moved after.
fn attributes(w: &mut Writer, field: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        let key = kv.key.as_str().as_bytes();
        // Most attributes are short strings: two four-byte heads around the key and the value.
        if let Value::String(value) = &kv.value
            && let Some(()) = short_string_attribute(w, field, key, value.as_str().as_bytes())
        {
            continue;
        }
        // An array's length is summed once, for its own head and for the heads around it.
        let array = match &kv.value {
            Value::Array(array) => Some((array, array_len(array))),
            _ => None,
        };
        let value_len = match array {
            Some((_, len)) => field_len(len),
            None => any_value_len(&kv.value),
        };
        let key_len = if key.is_empty() {
            0
        } else {
            field_len(key.len())
        };
        w.tag(field, LEN);
        w.varint((key_len + field_len(value_len)) as u64);
        w.bytes(1, key);
        w.tag(2, LEN);
        w.varint(value_len as u64);
        match array {
            Some((array, len)) => array_value(w, array, len),
            None => any_value(w, &kv.value),
        }
    }
}

/// `KeyValue { key, value: AnyValue { string_value } }` when every length fits in one byte;
/// `None` (and nothing written) when one does not.
fn short_string_attribute(w: &mut Writer, field: u32, key: &[u8], value: &[u8]) -> Option<()> {
    let tag = u8::try_from(field << 3 | LEN).ok().filter(|t| *t < 0x80)?;
    let key_len = u8::try_from(key.len())
        .ok()
        .filter(|l| (1..0x80).contains(l))?;
    let value_len = u8::try_from(value.len()).ok().filter(|l| *l < 0x80)?;
    let any_value = value_len.checked_add(2).filter(|l| *l < 0x80)?;
    let key_value = (key_len + 2)
        .checked_add(any_value + 2)
        .filter(|l| *l < 0x80)?;
    w.buf.reserve(usize::from(key_value) + 2);
    w.raw(&[tag, key_value, 1 << 3 | LEN as u8, key_len]);
    w.raw(key);
    w.raw(&[2 << 3 | LEN as u8, any_value, 1 << 3 | LEN as u8, value_len]);
    w.raw(value);
    Some(())
}

fn key_value(w: &mut Writer, key: &str, value: &Value) {
    w.string(1, key);
    w.message(2, |w| any_value(w, value));
}

/// How long a string field is, left out when empty.
fn string_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

/// How long a field of `len` bytes is with its tag (field numbers below 16) and length.
fn field_len(len: usize) -> usize {
    1 + varint_width(len as u64) + len
}

/// How long `value` is as an `AnyValue` body.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => 2,
        Value::I64(i) => 1 + varint_width(u64::from_ne_bytes(i.to_ne_bytes())),
        Value::F64(_) => 9,
        Value::String(s) => field_len(s.as_str().len()),
        Value::Array(array) => field_len(array_len(array)),
        other => field_len(other.as_str().len()),
    }
}

/// How long `array` is as an `ArrayValue` body: each element an `AnyValue` message.
fn array_len(array: &Array) -> usize {
    match array {
        Array::Bool(values) => values.len() * field_len(2),
        Array::I64(values) => values
            .iter()
            .map(|i| field_len(any_value_len(&Value::I64(*i))))
            .sum(),
        Array::F64(values) => values.len() * field_len(9),
        Array::String(values) => values
            .iter()
            .map(|s| field_len(field_len(s.as_str().len())))
            .sum(),
        other => field_len(field_len(other.to_string().len())),
    }
}

/// The `AnyValue` oneof: the chosen field is written even when it holds its default.
fn any_value(w: &mut Writer, value: &Value) {
    match value {
        Value::Bool(b) => w.varint_field(2, u64::from(*b)),
        // int64 is the two's complement as a varint: a negative number takes ten bytes.
        Value::I64(i) => w.varint_field(3, u64::from_ne_bytes(i.to_ne_bytes())),
        Value::F64(f) => {
            w.tag(4, FIXED64);
            w.buf.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::String(s) => w.len_field(1, s.as_str().as_bytes()),
        Value::Array(array) => array_value(w, array, array_len(array)),
        other => w.len_field(1, other.as_str().as_bytes()),
    }
}

/// `AnyValue.array_value` (field 5), whose body is `len` bytes long.
fn array_value(w: &mut Writer, array: &Array, len: usize) {
    w.tag(5, LEN);
    w.varint(len as u64);
    match array {
        Array::Bool(values) => array_values(w, values.iter().map(|b| Value::Bool(*b))),
        Array::I64(values) => array_values(w, values.iter().map(|i| Value::I64(*i))),
        Array::F64(values) => array_values(w, values.iter().map(|f| Value::F64(*f))),
        Array::String(values) => {
            for s in values {
                let s = s.as_str().as_bytes();
                w.tag(1, LEN);
                w.varint(field_len(s.len()) as u64);
                w.len_field(1, s);
            }
        }
        // A kind of array newer than this encoder: its text, rather than nothing.
        other => {
            let text = other.to_string();
            w.tag(1, LEN);
            w.varint(field_len(text.len()) as u64);
            w.len_field(1, text.as_bytes());
        }
    }
}

fn array_values(w: &mut Writer, values: impl Iterator<Item = Value>) {
    for value in values {
        w.tag(1, LEN);
        w.varint(any_value_len(&value) as u64);
        any_value(w, &value);
    }
}
