//! MCP requests (SECURITY-SENSITIVE: the MCP body reader).
//!
//! A `POST` to one of `mcp.paths` carries one JSON-RPC message. Its body is read in full, up to
//! `mcp.max_body` and within the header-read timeout, before the decision, and the call it
//! names becomes `context.mcp` and the Cedar action. The body the app gets is the bytes read
//! here, unchanged, so the policy decided exactly the call the tool server runs. What could make
//! two parsers disagree about that call is refused (MCP-01..04 in docs/security.md):
//!
//! - a batch (a JSON array): one decision cannot cover several calls;
//! - a duplicate key among the envelope's fields, or `name`/`uri` in `params`: parsers differ on
//!   which one wins;
//! - anything that is not a JSON-RPC 2.0 request or notification with a string `method`;
//! - a `Mcp-Method` or `Mcp-Name` header (MCP 2026-07-28) that disagrees with the body, or
//!   that appears twice; a body without those headers is decided on the body alone.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use hopgate_policy::McpFacts;
use http::{HeaderMap, HeaderName};
use http_body_util::BodyExt as _;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::Value;

/// The method header of MCP 2026-07-28.
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// The name header of MCP 2026-07-28: the tool, resource URI or prompt.
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// The negotiated protocol version.
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Why an MCP request is refused before its decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum McpRefusal {
    /// `mcp_batch`: the body is a JSON array.
    Batch,
    /// `mcp_parse`: the body is not JSON.
    Parse,
    /// `mcp_invalid`: JSON, but not a JSON-RPC 2.0 request with a string `method`.
    Invalid,
    /// `mcp_duplicate_key`: a key that decides the call appears twice.
    DuplicateKey,
    /// `mcp_header_mismatch`: `Mcp-Method` or `Mcp-Name` disagrees with the body.
    HeaderMismatch,
    /// `mcp_too_large`: the body is longer than `mcp.max_body` (413).
    TooLarge,
    /// `mcp_body_timeout`: the body did not arrive within the header-read timeout (408).
    SlowBody,
    /// `mcp_body`: the body broke off.
    Body,
    /// `mcp_result`: a `tools/list` result to filter could not be read or parsed (502): it is
    /// not passed on unfiltered.
    BadResult,
}

/// One MCP call, as its body and headers agreed on it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpCall {
    method: String,
    name: Option<String>,
    protocol_version: String,
    /// The request's `id`, echoed in an error answer; `Null` for a notification.
    id: Value,
}

// === impl McpRefusal ===

impl McpRefusal {
    /// The stable reason code, for the audit record and the span.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "mcp_batch",
            Self::Parse => "mcp_parse",
            Self::Invalid => "mcp_invalid",
            Self::DuplicateKey => "mcp_duplicate_key",
            Self::HeaderMismatch => "mcp_header_mismatch",
            Self::TooLarge => "mcp_too_large",
            Self::SlowBody => "mcp_body_timeout",
            Self::Body => "mcp_body",
            Self::BadResult => "mcp_result",
        }
    }

    /// The JSON-RPC error code and message of the answer.
    pub fn json_rpc(self) -> (i64, &'static str) {
        match self {
            Self::HeaderMismatch => (-32020, "HeaderMismatch"),
            Self::Parse => (-32700, "Parse error"),
            Self::Batch => (-32600, "Invalid Request: batches are not accepted"),
            Self::DuplicateKey => (
                -32600,
                "Invalid Request: a key appears twice, or in another spelling",
            ),
            Self::Invalid => (-32600, "Invalid Request"),
            Self::TooLarge => (-32600, "Invalid Request: the body exceeds mcp.max_body"),
            Self::SlowBody => (-32600, "Invalid Request: the body arrived too slowly"),
            Self::Body => (-32600, "Invalid Request: the body broke off"),
            Self::BadResult => (
                -32603,
                "Internal error: the tool list could not be filtered",
            ),
        }
    }
}

impl fmt::Display for McpRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl McpCall ===

impl McpCall {
    /// Parses `body` and checks it against the MCP headers of `headers`.
    ///
    /// # Errors
    /// Why the call cannot be decided as one unambiguous JSON-RPC message.
    pub fn parse(body: &[u8], headers: &HeaderMap) -> Result<Self, McpRefusal> {
        // JSON is UTF-8 (RFC 8259 §8.1). serde_json skips the members it ignores without
        // looking at their bytes, so a body with invalid UTF-8 there would pass here and be
        // refused, or read with the bytes replaced, by the app's parser.
        if std::str::from_utf8(body).is_err() {
            return Err(McpRefusal::Parse);
        }
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            return Err(McpRefusal::Batch);
        }
        let refusal = Cell::new(None);
        let mut de = serde_json::Deserializer::from_slice(body);
        let envelope = EnvelopeSeed(&refusal)
            .deserialize(&mut de)
            .and_then(|envelope| de.end().map(|()| envelope));
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(err) => {
                return Err(refusal.get().unwrap_or(if err.is_data() {
                    McpRefusal::Invalid
                } else {
                    McpRefusal::Parse
                }));
            }
        };
        if envelope.jsonrpc.as_deref() != Some("2.0") {
            return Err(McpRefusal::Invalid);
        }
        // A request carries a method and no result: a message that is both could be read as
        // either.
        let Some(method) = envelope.method.filter(|_| !envelope.answer) else {
            return Err(McpRefusal::Invalid);
        };
        let params = envelope.params.unwrap_or_default();
        let name = match method.as_str() {
            "tools/call" | "prompts/get" => Some(params.name),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some(params.uri),
            _ => None,
        };
        // A call of these methods names what it acts on: without it, nothing could decide it.
        let name = match name {
            Some(None) => return Err(McpRefusal::Invalid),
            Some(name) => name,
            None => None,
        };
        if let Some(header) = one_header(headers, &MCP_METHOD)?
            && unwrap_header(header)? != method
        {
            return Err(McpRefusal::HeaderMismatch);
        }
        if let Some(header) = one_header(headers, &MCP_NAME)?
            && Some(unwrap_header(header)?.as_ref()) != name.as_deref()
        {
            return Err(McpRefusal::HeaderMismatch);
        }
        let offered = params.protocol_version.filter(|_| method == "initialize");
        let protocol_version = match (one_header(headers, &MCP_PROTOCOL_VERSION)?, offered) {
            (Some(header), Some(body)) if header != body => {
                return Err(McpRefusal::HeaderMismatch);
            }
            (Some(version), _) => version.to_owned(),
            (None, offered) => offered.unwrap_or_default(),
        };
        Ok(Self {
            method,
            name,
            protocol_version,
            id: envelope.id.unwrap_or(Value::Null),
        })
    }

    /// The call as the policy sees it.
    pub fn facts(&self) -> McpFacts<'_> {
        McpFacts {
            method: &self.method,
            name: self.name.as_deref(),
            protocol_version: &self.protocol_version,
        }
    }

    /// The JSON-RPC method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The tool, resource URI or prompt the call names.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The request's `id` (`Null` for a notification).
    pub fn id(&self) -> &Value {
        &self.id
    }
}

/// Reads an MCP request body: at most `limit` bytes, within `within`. Trailers are dropped.
///
/// # Errors
/// [`McpRefusal::TooLarge`], [`McpRefusal::SlowBody`] or [`McpRefusal::Body`].
pub async fn read_body<B>(body: B, limit: usize, within: Duration) -> Result<Bytes, McpRefusal>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A declared length over the cap is refused before a byte is read.
    if usize::try_from(body.size_hint().lower()).map_or(true, |lower| lower > limit) {
        return Err(McpRefusal::TooLarge);
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(within, limited.collect()).await {
        Err(_) => Err(McpRefusal::SlowBody),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => Err(McpRefusal::TooLarge),
        Ok(Err(_)) => Err(McpRefusal::Body),
    }
}

/// The value of a header that may appear at most once, as visible ASCII.
fn one_header<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, McpRefusal> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(McpRefusal::HeaderMismatch);
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| McpRefusal::HeaderMismatch)
}

/// A header value as the client meant it: MCP sends a value that is not plain printable ASCII
/// (a tool name in another script, edge whitespace) as `=?base64?<standard base64>?=`. A
/// malformed one, non-canonical base64 or not UTF-8, matches nothing.
fn unwrap_header(value: &str) -> Result<Cow<'_, str>, McpRefusal> {
    use base64::Engine as _;
    let Some(payload) = value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Ok(Cow::Borrowed(value));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|_| McpRefusal::HeaderMismatch)?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| McpRefusal::HeaderMismatch)
}

/// The fields of a JSON-RPC message that decide the call.
#[derive(Default)]
struct Envelope {
    jsonrpc: Option<String>,
    method: Option<String>,
    id: Option<Value>,
    params: Option<Params>,
    /// Whether it also has a `result` or an `error`, as a response does.
    answer: bool,
}

/// The fields of `params` that name the call.
#[derive(Default)]
struct Params {
    name: Option<String>,
    uri: Option<String>,
    protocol_version: Option<String>,
}

/// Reads an [`Envelope`], noting in the cell why it refused one.
struct EnvelopeSeed<'c>(&'c Cell<Option<McpRefusal>>);

struct ParamsSeed<'c>(&'c Cell<Option<McpRefusal>>);

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Envelope, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope, A::Error> {
        let mut envelope = Envelope::default();
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<Key>()? {
            let first = match key.0.as_str() {
                "jsonrpc" => seen.first(0) && put(&mut envelope.jsonrpc, map.next_value()?),
                "method" => seen.first(1) && put(&mut envelope.method, string(&mut map, self.0)?),
                "id" => seen.first(2) && put(&mut envelope.id, id(&mut map, self.0)?),
                "params" => {
                    seen.first(3)
                        && put(
                            &mut envelope.params,
                            map.next_value_seed(ParamsSeed(self.0))?,
                        )
                }
                _ if lookalike(&key.0, &["jsonrpc", "method", "id", "params"]) => false,
                _ => {
                    map.next_value::<Checked>()?;
                    envelope.answer |= key.0 == "result" || key.0 == "error";
                    seen.other(key.0)
                }
            };
            if !first {
                return Err(refuse(self.0, McpRefusal::DuplicateKey));
            }
        }
        Ok(envelope)
    }
}

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_> {
    type Value = Params;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Params, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_> {
    type Value = Params;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut params = Params::default();
        let mut seen = Seen::default();
        while let Some(key) = map.next_key::<Key>()? {
            let first = match key.0.as_str() {
                "name" => seen.first(0) && put(&mut params.name, string(&mut map, self.0)?),
                "uri" => seen.first(1) && put(&mut params.uri, string(&mut map, self.0)?),
                "protocolVersion" => {
                    seen.first(2) && put(&mut params.protocol_version, map.next_value()?)
                }
                _ if lookalike(&key.0, &["name", "uri", "protocolVersion"]) => false,
                _ => {
                    map.next_value::<Checked>()?;
                    true
                }
            };
            if !first {
                return Err(refuse(self.0, McpRefusal::DuplicateKey));
            }
        }
        Ok(params)
    }

    /// By-position params name nothing the policy reads.
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Params::default())
    }
}

/// A JSON value nobody reads, read in full all the same: serde's `IgnoredAny` lets serde_json
/// skip it unchecked, so a number out of range (`1e400`) or a lone surrogate (`"\ud800"`) in a
/// member hopgate does not use would pass, and the body the app parses would not be the JSON
/// hopgate accepted (RFC 8259 §6, §8.2). Strings are decoded into serde_json's scratch buffer
/// and numbers parsed; nothing is kept. Nesting is bounded by serde_json's recursion limit.
struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: de::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        de.deserialize_any(Self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Self;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<Self>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<Self, Self>()?.is_some() {}
        Ok(self)
    }
}

/// A key, whether or not the JSON escaped it (an escaped `"m\u0065thod"` is `method`).
struct Key(String);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: de::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        String::deserialize(de).map(Self)
    }
}

/// Which keys were seen: the four (or three) that decide the call by index, and the others by
/// name, so that a duplicate anywhere in the envelope is refused.
#[derive(Default)]
struct Seen {
    known: [bool; 4],
    others: HashSet<String>,
}

impl Seen {
    fn first(&mut self, index: usize) -> bool {
        match self.known.get_mut(index) {
            Some(seen) => !std::mem::replace(seen, true),
            None => false,
        }
    }

    fn other(&mut self, key: String) -> bool {
        self.others.insert(key)
    }
}

/// Whether `key`, not one of `known` itself, could be read as one: a parser that matches keys
/// without regard to case (Go's `encoding/json`, which also folds `ſ` to `s` and the Kelvin
/// sign to `k`) would take `"Name"` for `name`, and a C string would end at a NUL. No key the
/// protocol defines at these two levels is anything but ASCII, so any other key is refused.
fn lookalike(key: &str, known: &[&str]) -> bool {
    !key.is_ascii() || key.contains('\0') || known.iter().any(|k| k.eq_ignore_ascii_case(key))
}

fn put<T>(slot: &mut Option<T>, value: T) -> bool {
    *slot = Some(value);
    true
}

/// A string value; anything else makes the message invalid.
fn string<'de, A: MapAccess<'de>>(
    map: &mut A,
    refusal: &Cell<Option<McpRefusal>>,
) -> Result<String, A::Error> {
    match map.next_value::<Value>()? {
        Value::String(s) => Ok(s),
        _ => Err(refuse(refusal, McpRefusal::Invalid)),
    }
}

/// A JSON-RPC id: a string, a number or null.
fn id<'de, A: MapAccess<'de>>(
    map: &mut A,
    refusal: &Cell<Option<McpRefusal>>,
) -> Result<Value, A::Error> {
    match map.next_value::<Value>()? {
        id @ (Value::String(_) | Value::Number(_) | Value::Null) => Ok(id),
        _ => Err(refuse(refusal, McpRefusal::Invalid)),
    }
}

fn refuse<E: de::Error>(cell: &Cell<Option<McpRefusal>>, refusal: McpRefusal) -> E {
    cell.set(Some(refusal));
    E::custom(refusal)
}

mod filter;

pub use filter::{ToolFilter, filter_message};

#[cfg(test)]
mod tests;
