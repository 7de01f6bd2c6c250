//! The `mcp_body` fuzz target's properties, as proptests: the body reader never panics, and a
//! call it accepts is the call any JSON parser reads from the body, agreeing with the MCP
//! headers sent.

use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde_json::Map;

use super::*;

/// The fuzz target's framing: the first byte's bits 0, 1 and 2 send `Mcp-Method`, `Mcp-Name`
/// and `MCP-Protocol-Version`, each value one line of what follows, and bits 3, 4 and 5 send
/// that header twice; the rest is the body.
fn framed(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let Some((&flags, mut rest)) = data.split_first() else {
        return (headers, data);
    };
    for (bit, name) in [(0, MCP_METHOD), (1, MCP_NAME), (2, MCP_PROTOCOL_VERSION)] {
        if flags & (1 << bit) == 0 {
            continue;
        }
        let (value, tail) = match rest.iter().position(|b| *b == b'\n') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &[][..]),
        };
        rest = tail;
        if let Ok(value) = HeaderValue::from_bytes(value) {
            if flags & (8 << bit) != 0 {
                headers.append(name.clone(), value.clone());
            }
            headers.append(name, value);
        }
    }
    (headers, rest)
}

/// A header value as sent, unless it is MCP's `=?base64?...?=` wrapping.
fn plain(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    (!value.starts_with("=?base64?")).then(|| value.to_owned())
}

/// What the `mcp_body` fuzz target asserts: the reader never panics, and a call it accepts is
/// the call `serde_json::Value` reads from the body (an object, not a batch, `"jsonrpc":
/// "2.0"`, the same `method`, `id` and `params.name`/`params.uri`, no `result` or `error`),
/// agreeing with every MCP header sent, each sent once.
fn assert_accepts_only_what_json_reads(
    body: &[u8],
    headers: &HeaderMap,
) -> Result<(), TestCaseError> {
    let call = match McpCall::parse(body, headers) {
        Ok(call) => call,
        Err(refusal) => {
            let _ = (refusal.as_str(), refusal.json_rpc());
            return Ok(());
        }
    };
    let shown = String::from_utf8_lossy(body);
    prop_assert_ne!(
        body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(&b'['),
        "a batch accepted: {}",
        shown
    );
    let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(body) else {
        return Err(TestCaseError::fail(format!(
            "accepted a body serde_json does not read as an object: {call:?}: {shown}"
        )));
    };
    assert_the_body_names_the_call(&message, &call, &shown)?;
    for name in [MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION] {
        prop_assert!(headers.get_all(&name).iter().count() <= 1, "{} twice", name);
    }
    if let Some(method) = plain(headers, &MCP_METHOD) {
        prop_assert_eq!(method.as_str(), call.method());
    }
    if headers.contains_key(MCP_NAME) {
        prop_assert!(
            call.name().is_some(),
            "Mcp-Name matched a call naming nothing"
        );
    }
    if let Some(name) = plain(headers, &MCP_NAME) {
        prop_assert_eq!(Some(name.as_str()), call.name());
    }
    let facts = call.facts();
    match headers.get(MCP_PROTOCOL_VERSION) {
        Some(version) => {
            prop_assert_eq!(version.as_bytes(), facts.protocol_version.as_bytes());
        }
        None if call.method() == "initialize" => {
            let offered = message
                .get("params")
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            prop_assert_eq!(facts.protocol_version, offered);
        }
        None => prop_assert_eq!(facts.protocol_version, ""),
    }
    Ok(())
}

/// The fuzz target's comparison of the call with the message `serde_json::Value` read.
fn assert_the_body_names_the_call(
    message: &Map<String, Value>,
    call: &McpCall,
    shown: &str,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        message.get("jsonrpc"),
        Some(&Value::from("2.0")),
        "{}",
        shown
    );
    prop_assert_eq!(
        message.get("method"),
        Some(&Value::from(call.method())),
        "{}",
        shown
    );
    prop_assert!(!message.contains_key("result") && !message.contains_key("error"));
    prop_assert_eq!(
        message.get("id").unwrap_or(&Value::Null),
        call.id(),
        "{}",
        shown
    );
    let params = message.get("params");
    let named = match call.method() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    };
    match named {
        Some(key) => {
            let name = call.name().map(Value::from);
            prop_assert!(name.is_some(), "the call names what it acts on: {}", shown);
            prop_assert_eq!(params.and_then(|p| p.get(key)), name.as_ref(), "{}", shown);
        }
        None => prop_assert_eq!(call.name(), None, "{}", shown),
    }
    Ok(())
}

/// JSON values of every kind, including the ones parsers disagree on (a lone surrogate, a
/// number out of range, an escaped NUL).
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "null", "true", "7", "-0", "1.5", "1e400", "18446744073709551616", r#""""#,
            r#""ü""#, r#""\ud800""#, r#""\u0000""#, "{}", "[]", r#"[1,{"a":[]}]"#,
            r#"{"name":"x"}"#, r#""2.0""#, r#""tools/call""#,
        ])
        .prop_map(str::to_owned),
        1 => ".{0,8}".prop_map(|text: String| Value::from(text).to_string()),
    ]
}

/// `{"key":value,...}` of these members, in this order (repeats and all).
fn object(members: Vec<(&'static str, String)>) -> String {
    let members: Vec<String> = members
        .into_iter()
        .map(|(key, value)| format!(r#""{key}":{value}"#))
        .collect();
    format!("{{{}}}", members.join(","))
}

/// A JSON-RPC request of the methods MCP names, with random members added, some spelled the
/// way a case-blind or escape-decoding parser would also take for a deciding one.
fn json_rpc_body() -> impl Strategy<Value = String> {
    let method = select(vec![
        "tools/call",
        "tools/list",
        "resources/read",
        "resources/subscribe",
        "prompts/get",
        "initialize",
        "ping",
        "notifications/initialized",
    ]);
    let text = || {
        prop_oneof![
            4 => select(vec![r#""read_ticket""#, r#""crm://t/1""#, r#""2025-06-18""#])
                .prop_map(str::to_owned),
            1 => json_value(),
        ]
    };
    let odd_param = (
        select(vec![
            "name",
            "Name",
            "URI",
            "arguments",
            "_meta",
            r"nam\u0065",
            "protocolversion",
        ]),
        json_value(),
    );
    let params = (
        prop::option::weighted(0.6, text()),
        prop::option::weighted(0.6, text()),
        prop::option::weighted(0.4, text()),
        prop::option::weighted(0.2, odd_param),
    )
        .prop_flat_map(|(name, uri, version, odd)| {
            let members: Vec<(&'static str, String)> = [
                name.map(|v| ("name", v)),
                uri.map(|v| ("uri", v)),
                version.map(|v| ("protocolVersion", v)),
                odd,
            ]
            .into_iter()
            .flatten()
            .collect();
            Just(members).prop_shuffle().prop_map(object)
        });
    let extra = (
        select(vec![
            "jsonrpc",
            "id",
            "method",
            "params",
            "result",
            "error",
            "Method",
            r"m\u0065thod",
            "PARAMS",
            "extra",
            "_meta",
        ]),
        json_value(),
    );
    let jsonrpc = prop_oneof![8 => Just(r#""2.0""#), 1 => Just(r#""1.0""#), 1 => Just("2")];
    (
        prop::option::weighted(0.95, jsonrpc),
        prop::option::weighted(0.95, method.prop_map(|m| format!("\"{m}\""))),
        prop::option::of(select(vec!["1", r#""a""#, "null", "{}", "1.5", "-7"])),
        prop::option::weighted(0.8, params),
        prop::option::weighted(0.3, extra),
    )
        .prop_flat_map(|(jsonrpc, method, id, params, extra)| {
            let members: Vec<(&'static str, String)> = [
                jsonrpc.map(|v| ("jsonrpc", v.to_owned())),
                method.map(|v| ("method", v)),
                id.map(|v| ("id", v.to_owned())),
                params.map(|v| ("params", v)),
                extra,
            ]
            .into_iter()
            .flatten()
            .collect();
            Just(members).prop_shuffle().prop_map(object)
        })
}

/// A JSON-RPC body, maybe with bytes flipped or cut short, and MCP headers that agree with it
/// or not, each maybe sent twice.
fn near_valid_request() -> impl Strategy<Value = (Vec<u8>, HeaderMap)> {
    let value = prop_oneof![
        3 => select(vec![
            "tools/call", "tools/list", "initialize", "read_ticket", "crm://t/1", "2025-06-18",
            "=?base64?cmVhZF90aWNrZXQ=?=", "=?base64?/w==?=", "",
        ])
        .prop_map(str::to_owned),
        1 => ".{0,6}",
    ];
    let header = prop::option::weighted(0.3, (value, prop::bool::weighted(0.1)));
    (
        json_rpc_body(),
        prop::option::weighted(0.15, (any::<Index>(), 1..=255u8)),
        prop::option::weighted(0.05, any::<Index>()),
        [header.clone(), header.clone(), header],
    )
        .prop_map(|(body, flip, cut, sent)| {
            let mut body = body.into_bytes();
            if let Some((at, bits)) = flip {
                let at = at.index(body.len());
                body[at] ^= bits;
            }
            if let Some(cut) = cut {
                body.truncate(cut.index(body.len()));
            }
            let mut headers = HeaderMap::new();
            let names = [MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION];
            for (name, sent) in names.into_iter().zip(sent) {
                let Some((value, twice)) = sent else { continue };
                let Ok(value) = HeaderValue::from_str(&value) else {
                    continue;
                };
                if twice {
                    headers.append(name.clone(), value.clone());
                }
                headers.append(name, value);
            }
            (body, headers)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_mcp_body_reader_never_panics_on_arbitrary_bytes(
        data in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let (headers, body) = framed(&data);
        assert_accepts_only_what_json_reads(body, &headers)?;
    }

    #[test]
    fn the_mcp_body_reader_never_panics_on_a_json_rpc_body_with_random_members(
        (body, headers) in near_valid_request(),
    ) {
        assert_accepts_only_what_json_reads(&body, &headers)?;
    }
}

#[test]
fn a_number_out_of_range_or_a_lone_surrogate_in_a_member_nobody_reads_is_not_json() {
    let ok = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","x":1e300}"#;
    assert!(McpCall::parse(ok, &HeaderMap::new()).is_ok());
    for body in [
        &br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","x":1e400}"#[..],
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","x":"\ud800"}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","\ud800":1}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":[-1e999]}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["\udfff"]}"#,
    ] {
        let shown = String::from_utf8_lossy(body);
        assert!(McpCall::parse(body, &HeaderMap::new()).is_err(), "{shown}");
    }
}
