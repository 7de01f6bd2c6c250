//! Fuzzes the MCP body reader (MCP-01..04 in docs/security.md): the one JSON-RPC message of a
//! `POST` to an MCP path, checked against the `Mcp-Method`, `Mcp-Name` and
//! `MCP-Protocol-Version` headers. The first input byte picks the headers: bits 0, 1 and 2 set
//! `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version`, each value one line of what follows, and
//! bits 3, 4 and 5 send that header twice; the rest is the body.
//!
//! It must never panic, whatever the bytes, and a call it accepts is the call any JSON parser
//! reads from that body (here `serde_json::Value`): an object, not a batch, with `"jsonrpc":
//! "2.0"`, the same `method`, `id` and `params.name`/`params.uri`, and no `result` or `error`;
//! and it agrees with every MCP header sent, each of which was sent once.
//!
//! A body must be UTF-8 throughout, members nobody reads included (RFC 8259 §8.1): this target
//! found the reader skipping them unchecked (`proxy/src/http/mcp/tests.rs` keeps the input).
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run mcp_body

#![no_main]

use hopgate_proxy::http::mcp::{MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, McpCall};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The line `rest` starts with, and what follows its `\n`.
fn line(rest: &[u8]) -> (&[u8], &[u8]) {
    match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[]),
    }
}

/// A header value as sent, unless it is MCP's `=?base64?...?=` wrapping.
fn plain(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    (!value.starts_with("=?base64?")).then(|| value.to_owned())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (bit, name) in [(0, MCP_METHOD), (1, MCP_NAME), (2, MCP_PROTOCOL_VERSION)] {
        if flags & (1 << bit) == 0 {
            continue;
        }
        let (value, tail) = line(rest);
        rest = tail;
        if let Ok(value) = HeaderValue::from_bytes(value) {
            if flags & (8 << bit) != 0 {
                headers.append(name.clone(), value.clone());
            }
            headers.append(name, value);
        }
    }
    let body = rest;

    let call = match McpCall::parse(body, &headers) {
        Ok(call) => call,
        Err(refusal) => {
            let _ = (refusal.as_str(), refusal.json_rpc());
            return;
        }
    };
    assert_ne!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(&b'['),
        "a batch accepted"
    );
    let read = serde_json::from_slice::<Value>(body);
    let Ok(Value::Object(message)) = read else {
        panic!("accepted a body serde_json does not read as an object: {call:?}");
    };
    assert_eq!(message.get("jsonrpc"), Some(&Value::from("2.0")));
    assert_eq!(message.get("method"), Some(&Value::from(call.method())));
    assert!(!message.contains_key("result") && !message.contains_key("error"));
    assert_eq!(message.get("id").unwrap_or(&Value::Null), call.id());
    let params = message.get("params");
    let named = match call.method() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    };
    match named {
        Some(key) => {
            let name = call.name().expect("the call names what it acts on");
            assert_eq!(params.and_then(|p| p.get(key)), Some(&Value::from(name)));
        }
        None => assert_eq!(call.name(), None),
    }

    for name in [MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION] {
        assert!(headers.get_all(&name).iter().count() <= 1, "{name} twice");
    }
    if let Some(method) = plain(&headers, &MCP_METHOD) {
        assert_eq!(method, call.method());
    }
    if headers.contains_key(MCP_NAME) {
        assert!(
            call.name().is_some(),
            "Mcp-Name matched a call naming nothing"
        );
    }
    if let Some(name) = plain(&headers, &MCP_NAME) {
        assert_eq!(Some(name.as_str()), call.name());
    }
    let facts = call.facts();
    match headers.get(MCP_PROTOCOL_VERSION) {
        Some(version) => assert_eq!(version.as_bytes(), facts.protocol_version.as_bytes()),
        None if call.method() == "initialize" => {
            let offered = params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            assert_eq!(facts.protocol_version, offered);
        }
        None => assert_eq!(facts.protocol_version, ""),
    }
});
