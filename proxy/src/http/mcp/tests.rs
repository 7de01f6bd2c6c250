//! The MCP body reader on its own: what it accepts, what it refuses and why (MCP-01..04).

use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt as _, Full, StreamBody};
use serde_json::json;

use super::*;

mod never_panics;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn parse(body: &str) -> Result<McpCall, McpRefusal> {
    McpCall::parse(body.as_bytes(), &HeaderMap::new())
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_ticket","arguments":{"id":"T-1"}}}"#;

#[test]
fn a_tools_call_names_its_method_tool_and_id() {
    let call = McpCall::parse(
        CALL.as_bytes(),
        &headers(&[
            ("mcp-method", "tools/call"),
            ("mcp-name", "read_ticket"),
            ("mcp-protocol-version", "2026-07-28"),
        ]),
    )
    .unwrap();
    assert_eq!(
        call.facts(),
        McpFacts {
            method: "tools/call",
            name: Some("read_ticket"),
            protocol_version: "2026-07-28",
        }
    );
    assert_eq!(call.id(), &json!(7));
}

#[test]
fn a_body_without_the_mcp_headers_is_decided_on_the_body_alone() {
    let call = parse(CALL).unwrap();
    assert_eq!(call.name(), Some("read_ticket"));
    assert_eq!(call.facts().protocol_version, "");
    let init = parse(
        r#"{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}}"#,
    )
    .unwrap();
    assert_eq!(init.facts().protocol_version, "2025-06-18");
    assert_eq!(init.name(), None);
}

#[test]
fn resources_read_names_its_uri_and_prompts_get_its_prompt() {
    let read = parse(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"crm://tickets/T-1"}}"#).unwrap();
    assert_eq!(read.name(), Some("crm://tickets/T-1"));
    let prompt =
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"triage"}}"#)
            .unwrap();
    assert_eq!(prompt.name(), Some("triage"));
    let list = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
    assert_eq!((list.method(), list.name()), ("tools/list", None));
    // A notification has no id.
    let note = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
    assert_eq!(note.id(), &Value::Null);
}

#[test]
fn mcp_01_a_name_header_that_disagrees_with_the_body_is_refused() {
    for pairs in [
        &[("mcp-name", "read_ticket")][..],
        &[("mcp-method", "tools/list")],
        &[("mcp-name", "read_ticket"), ("mcp-name", "delete_ticket")],
    ] {
        let body = CALL.replace("read_ticket", "delete_ticket");
        let got = McpCall::parse(body.as_bytes(), &headers(pairs));
        assert_eq!(got, Err(McpRefusal::HeaderMismatch), "{pairs:?}");
    }
    // A name header on a call that names nothing disagrees too.
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    assert_eq!(
        McpCall::parse(list.as_bytes(), &headers(&[("mcp-name", "x")])),
        Err(McpRefusal::HeaderMismatch)
    );
    assert_eq!(McpRefusal::HeaderMismatch.json_rpc().0, -32020);
}

#[test]
fn mcp_01_a_name_header_in_mcps_base64_form_is_compared_as_the_name_it_carries() {
    let body =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"tickets_für_alle"}}"#;
    // base64 of the UTF-8 of `tickets_für_alle`, as the MCP SDKs send it.
    let sent = headers(&[("mcp-name", "=?base64?dGlja2V0c19mw7xyX2FsbGU=?=")]);
    let call = McpCall::parse(body.as_bytes(), &sent).unwrap();
    assert_eq!(call.name(), Some("tickets_für_alle"));
    for other in [
        "=?base64?cmVhZF90aWNrZXQ=?=",        // read_ticket
        "=?base64?dGlja2V0c19mw7xyX2FsbGU?=", // unpadded
        "=?base64?not base64?=",
        "=?base64?/w==?=", // not UTF-8
    ] {
        let sent = headers(&[("mcp-name", other)]);
        assert_eq!(
            McpCall::parse(body.as_bytes(), &sent).err(),
            Some(McpRefusal::HeaderMismatch),
            "{other}"
        );
    }
}

#[test]
fn mcp_02_a_batch_is_refused() {
    assert_eq!(parse(&format!(" [{CALL},{CALL}]")), Err(McpRefusal::Batch));
    assert_eq!(parse("[]"), Err(McpRefusal::Batch));
}

#[test]
fn mcp_04_a_duplicate_method_or_name_is_refused_however_it_is_spelled() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_ticket","name":"delete_ticket"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","m\u0065thod":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","extra":1,"extra":2}"#,
    ] {
        assert_eq!(parse(body), Err(McpRefusal::DuplicateKey), "{body}");
    }
}

#[test]
fn mcp_04_a_key_a_case_blind_parser_would_take_for_a_deciding_one_is_refused() {
    // Go's encoding/json matches keys without regard to case and folds `ſ` and the Kelvin
    // sign; the last match wins there, so each of these would run another call than decided.
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_ticket","Name":"delete_ticket"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","PARAMS":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"paramſ":{"name":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","nam\u0000e":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","URI":"b"}}"#,
    ] {
        assert_eq!(parse(body), Err(McpRefusal::DuplicateKey), "{body}");
    }
    // Keys the protocol does define pass, whatever else they hold.
    let call = parse(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"Name":"ü"},"_meta":{}}}"#,
    );
    assert_eq!(call.unwrap().name(), Some("a"));
}

#[test]
fn a_call_that_names_nothing_or_is_also_a_response_is_refused() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_ticket"]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"uri":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","result":{"tools":[]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","error":{"code":1,"message":"x"}}"#,
    ] {
        assert_eq!(parse(body), Err(McpRefusal::Invalid), "{body}");
    }
}

#[test]
fn mcp_01_an_initialize_whose_header_and_body_name_other_revisions_is_refused() {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05"}}"#;
    let other = headers(&[("mcp-protocol-version", "2025-06-18")]);
    assert_eq!(
        McpCall::parse(body.as_bytes(), &other).err(),
        Some(McpRefusal::HeaderMismatch)
    );
    let same = headers(&[("mcp-protocol-version", "2024-11-05")]);
    let call = McpCall::parse(body.as_bytes(), &same).unwrap();
    assert_eq!(call.facts().protocol_version, "2024-11-05");
}

#[test]
fn a_body_of_sixty_thousand_distinct_keys_is_read() {
    // Their duplicate check is a set: a list searched per key would take minutes here.
    let keys: Vec<String> = (0..60_000).map(|i| format!("\"k{i}\":0")).collect();
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping",{}}}"#,
        keys.join(",")
    );
    assert_eq!(parse(&body).unwrap().method(), "ping");
}

#[test]
fn a_body_that_is_not_json_rpc_is_refused() {
    for (body, why) in [
        ("not json", McpRefusal::Parse),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list""#,
            McpRefusal::Parse,
        ),
        (&format!("{CALL} {{}}"), McpRefusal::Parse),
        (r#""tools/call""#, McpRefusal::Invalid),
        (r#"{"id":1,"method":"tools/list"}"#, McpRefusal::Invalid),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
            McpRefusal::Invalid,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            McpRefusal::Invalid,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            McpRefusal::Invalid,
        ),
        (
            r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            McpRefusal::Invalid,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            McpRefusal::Invalid,
        ),
        ("", McpRefusal::Parse),
    ] {
        assert_eq!(parse(body), Err(why), "{body}");
    }
}

#[tokio::test]
async fn mcp_03_a_body_over_the_cap_is_refused_whether_declared_or_streamed() {
    let within = Duration::from_secs(1);
    let declared = Full::new(Bytes::from(vec![b' '; 2048]));
    assert_eq!(
        read_body(declared, 1024, within).await,
        Err(McpRefusal::TooLarge)
    );
    let chunks = (0..4)
        .map(|_| Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b' '; 400]))));
    let streamed = StreamBody::new(futures_util::stream::iter(chunks));
    assert_eq!(
        read_body(streamed, 1024, within).await,
        Err(McpRefusal::TooLarge)
    );
    let ok = Full::new(Bytes::from_static(CALL.as_bytes()));
    assert_eq!(read_body(ok, 1024, within).await.unwrap(), CALL.as_bytes());
}

#[tokio::test(start_paused = true)]
async fn mcp_03_a_body_sent_too_slowly_is_refused_at_the_timeout() {
    let stalled = StreamBody::new(futures_util::stream::pending::<
        Result<http_body::Frame<Bytes>, std::io::Error>,
    >());
    let got = read_body(stalled.boxed(), 1024, Duration::from_secs(3)).await;
    assert_eq!(got, Err(McpRefusal::SlowBody));
}

#[test]
fn a_body_that_is_not_utf8_is_not_json_even_in_a_member_nobody_reads() {
    // Found by the mcp_body fuzz target: serde_json skips ignored members without checking
    // their bytes, so this passed, where a strict parser refuses it (RFC 8259 §8.1).
    let body = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\",\"x\":\"\xff\"}";
    assert_eq!(
        McpCall::parse(body, &HeaderMap::new()),
        Err(McpRefusal::Parse)
    );
}
