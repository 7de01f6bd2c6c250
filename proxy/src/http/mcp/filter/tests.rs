//! `tools/list` filtering against real Cedar decisions (MCP-06): a listed tool stays exactly
//! when its `tools/call` would be let through, in plain JSON and in SSE.

use hopgate_config::{InboundMode, SpiffeId};
use hopgate_policy::{Direction, PolicyStore, TokenFacts};
use http::{HeaderMap, HeaderValue, Request};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::hop::test_support::{Cedar, Fixture};

const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";
const TOOLS: [&str; 4] = [
    "read_ticket",
    "search_tickets",
    "write_ticket",
    "delete_ticket",
];

/// The tools a caller whose token carries `tickets.read` may call: the reading ones.
const READERS: &str = r#"
@id("read-tools") permit (principal, action == Hop::Action::"tools/call", resource)
when {
  context has mcp && context.mcp has name &&
  ["read_ticket", "search_tickets"].contains(context.mcp.name) &&
  context.token has scope && context.token.scope.contains("tickets.read")
};
"#;

fn authorizer(policies: &str, mode: InboundMode) -> (Authorizer, Fixture) {
    let fx = Fixture::new(
        "crm",
        "inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\n",
        Some(Cedar {
            file: "p.cedar",
            text: policies,
            section: "",
        }),
    );
    let store = PolicyStore::load(fx.config.policy().unwrap().dir(), "call").unwrap();
    (Authorizer::new(Some(store), mode, fx.config.intent()), fx)
}

fn token(scope: &[&str]) -> TokenFacts {
    TokenFacts {
        sub: "alice".to_owned(),
        iss: INFERENCE.to_owned(),
        txn: Some("t-1".to_owned()),
        scope: scope.iter().map(|s| (*s).to_owned()).collect(),
        actors: Vec::new(),
        tctx: Vec::new(),
    }
}

/// The filter of a `tools/list` from inference to crm, with `token` (or none).
fn filter(token: Option<&TokenFacts>) -> ToolFilter {
    let (parts, ()) = Request::post("/mcp")
        .header("host", "crm")
        .body(())
        .unwrap()
        .into_parts();
    let facts = HttpFacts::from_parts(&parts, "intent-").unwrap();
    let (peer, dest) = (
        SpiffeId::parse(INFERENCE).unwrap(),
        SpiffeId::parse(CRM).unwrap(),
    );
    let request = facts.hop_request(&peer, &dest, Direction::Inbound, token);
    ToolFilter::new(&request, &facts, "2026-07-28")
}

fn list_result(tools: &[&str]) -> Value {
    let tools: Vec<Value> = tools
        .iter()
        .map(|name| json!({"name": name, "inputSchema": {"type": "object"}}))
        .collect();
    json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": tools}})
}

fn names(message: &Value) -> Vec<String> {
    message["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_owned())
        .collect()
}

fn content_type(value: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(value));
    headers
}

#[test]
fn mcp_06_a_json_tools_list_keeps_only_the_tools_this_chain_may_call() {
    let (authorizer, _dir) = authorizer(READERS, InboundMode::Enforce);
    let body = list_result(&TOOLS).to_string();
    let json = content_type("application/json");

    let reader = token(&["tickets.read"]);
    let out = filter(Some(&reader))
        .apply(&authorizer, &json, body.as_bytes())
        .unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(names(&out), ["read_ticket", "search_tickets"]);
    assert_eq!(out["id"], 3, "the response keeps its id");

    // The same caller without the scope in its chain sees none of them.
    let out = filter(Some(&token(&[])))
        .apply(&authorizer, &json, body.as_bytes())
        .unwrap();
    assert_eq!(
        names(&serde_json::from_slice(&out).unwrap()),
        Vec::<String>::new()
    );
    let out = filter(None)
        .apply(&authorizer, &json, body.as_bytes())
        .unwrap();
    assert_eq!(
        names(&serde_json::from_slice(&out).unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn mcp_06_audit_mode_lists_every_tool_because_it_enforces_nothing() {
    let (authorizer, _dir) = authorizer(READERS, InboundMode::Audit);
    let body = list_result(&TOOLS).to_string();
    let out = filter(None)
        .apply(
            &authorizer,
            &content_type("application/json"),
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(names(&serde_json::from_slice(&out).unwrap()), TOOLS);
}

#[test]
fn mcp_06_an_sse_tools_list_is_filtered_and_its_other_events_pass_as_they_came() {
    let (authorizer, _dir) = authorizer(READERS, InboundMode::Enforce);
    let notification = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"listing"}}"#;
    let body = format!(
        "id: 0\r\ndata: \r\n\r\n: a comment\nevent: message\ndata: {notification}\n\nevent: message\nid: 2\ndata: {}\n\n",
        list_result(&TOOLS)
    );
    let reader = token(&["tickets.read"]);
    let out = filter(Some(&reader))
        .apply(
            &authorizer,
            &content_type("text/event-stream"),
            body.as_bytes(),
        )
        .unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    let events: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(
        events.first(),
        Some(&"id: 0\ndata: "),
        "the priming event is kept: {text}"
    );
    assert!(text.contains(": a comment\nevent: message\n"), "{text}");
    let notification: Value = serde_json::from_str(notification).unwrap();
    assert!(
        text.contains(&format!("data: {notification}\n\n")),
        "{text}"
    );
    let last = events.iter().find(|e| e.contains("id: 2")).unwrap();
    assert!(last.starts_with("event: message\nid: 2\ndata: "), "{last}");
    let data = last.rsplit("data: ").next().unwrap();
    assert_eq!(
        names(&serde_json::from_str(data).unwrap()),
        ["read_ticket", "search_tickets"]
    );
}

#[test]
fn mcp_06_a_multi_line_sse_data_field_is_read_as_one_message() {
    let (authorizer, _dir) = authorizer(READERS, InboundMode::Enforce);
    let pretty = serde_json::to_string_pretty(&list_result(&TOOLS)).unwrap();
    let data: String = pretty
        .lines()
        .map(|line| format!("data: {line}\n"))
        .collect();
    let body = format!("event: message\n{data}\n");
    let out = filter(Some(&token(&["tickets.read"])))
        .apply(
            &authorizer,
            &content_type("text/event-stream"),
            body.as_bytes(),
        )
        .unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    let data = text.trim_end().rsplit("data: ").next().unwrap();
    assert_eq!(
        names(&serde_json::from_str(data).unwrap()),
        ["read_ticket", "search_tickets"]
    );
}

#[test]
fn mcp_06_a_result_that_is_not_what_it_says_is_never_passed_on_unfiltered() {
    let (authorizer, _dir) = authorizer(READERS, InboundMode::Enforce);
    let check = filter(None);
    for (kind, body) in [
        ("application/json", "{\"jsonrpc\":\"2.0\",\"result\":"),
        ("application/json", "\u{fffd}"),
        ("text/event-stream", "data: {not json\n\n"),
        ("text/event-stream", "data: \u{0}\n\n"),
    ] {
        let headers = content_type(kind);
        assert_eq!(
            check
                .apply(&authorizer, &headers, body.as_bytes())
                .unwrap_err(),
            McpRefusal::BadResult,
            "{kind}: {body}"
        );
    }
    let invalid_utf8 = [b'd', b'a', b't', b'a', b':', 0xff, b'\n', b'\n'];
    assert_eq!(
        check
            .apply(
                &authorizer,
                &content_type("text/event-stream"),
                &invalid_utf8
            )
            .unwrap_err(),
        McpRefusal::BadResult
    );
}

#[test]
fn a_tool_without_a_string_name_is_dropped_and_other_messages_are_untouched() {
    let mut list =
        json!({"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":1},{"title":"x"},{"name":"ok"}]}});
    filter_message(&mut list, &|_| true).unwrap();
    assert_eq!(names(&list), ["ok"]);
    let mut error = json!({"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}});
    let before = error.clone();
    filter_message(&mut error, &|_| false).unwrap();
    assert_eq!(error, before);
}

#[test]
fn mcp_06_every_spelling_of_an_sse_event_is_read_and_filtered() {
    let (authorizer, _dir) = authorizer(READERS, InboundMode::Enforce);
    let message = list_result(&TOOLS);
    let reader = token(&["tickets.read"]);
    for body in [
        // CR alone ends lines too, a BOM may open the stream, and `data` alone is a field.
        format!("event: message\rdata: {message}\r\r"),
        format!("\u{feff}data: {message}\n\n"),
        format!("id: 1\n\rdata: {message}\n\n"),
        format!("data\ndata: {message}\n\n"),
    ] {
        let out = filter(Some(&reader))
            .apply(
                &authorizer,
                &content_type("text/event-stream"),
                body.as_bytes(),
            )
            .unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            !text.contains("write_ticket"),
            "{body:?} came out as {text:?}"
        );
        assert!(
            text.contains("read_ticket"),
            "{body:?} came out as {text:?}"
        );
    }
}

#[test]
fn mcp_06_a_batch_of_results_is_filtered_and_a_list_a_client_could_read_otherwise_is_refused() {
    let (authorizer, _dir) = authorizer(READERS, InboundMode::Enforce);
    let json = content_type("application/json");
    let reader = token(&["tickets.read"]);
    let batch = format!("[{}]", list_result(&TOOLS));
    let out = filter(Some(&reader))
        .apply(&authorizer, &json, batch.as_bytes())
        .unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(names(&out[0]), ["read_ticket", "search_tickets"]);
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"delete_ticket"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"Tools":[{"name":"delete_ticket"}]}}"#,
    ] {
        let refused = filter(Some(&reader)).apply(&authorizer, &json, body.as_bytes());
        assert_eq!(refused.unwrap_err(), McpRefusal::BadResult, "{body}");
    }
    // A tool a case-blind client would read under another name is not listed.
    let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_ticket","Name":"delete_ticket"}]}}"#;
    let out = filter(Some(&reader))
        .apply(&authorizer, &json, body.as_bytes())
        .unwrap();
    assert_eq!(
        names(&serde_json::from_slice(&out).unwrap()),
        Vec::<String>::new()
    );
}

/// A policy that lets exactly `allowed` be called, by name.
fn permit_only(allowed: &[&str]) -> String {
    if allowed.is_empty() {
        return String::new();
    }
    let names: Vec<String> = allowed.iter().map(|name| format!("{name:?}")).collect();
    format!(
        r#"permit (principal, action == Hop::Action::"tools/call", resource)
        when {{ context has mcp && context.mcp has name && [{}].contains(context.mcp.name) }};"#,
        names.join(", ")
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The filtered list is the listed tools, in order, whose own `tools/call` decision is
    /// an allow: the filter decides nothing itself.
    #[test]
    fn mcp_06_the_filtered_list_equals_the_per_tool_decisions(
        allowed in proptest::sample::subsequence(TOOLS.to_vec(), 0..=TOOLS.len()),
        listed in proptest::collection::vec(proptest::sample::select(TOOLS.to_vec()), 0..8),
        sse in any::<bool>(),
    ) {
        let (authorizer, _dir) = authorizer(&permit_only(&allowed), InboundMode::Enforce);
        let check = filter(None);
        let expected: Vec<String> = listed
            .iter()
            .filter(|tool| check.allows(&authorizer, tool))
            .map(|tool| (*tool).to_owned())
            .collect();
        let by_policy: Vec<String> = listed
            .iter()
            .filter(|tool| allowed.contains(tool))
            .map(|tool| (*tool).to_owned())
            .collect();
        prop_assert_eq!(&expected, &by_policy);

        let message = list_result(&listed);
        let (headers, body) = if sse {
            (content_type("text/event-stream"), format!("event: message\ndata: {message}\n\n"))
        } else {
            (content_type("application/json"), message.to_string())
        };
        let out = check.apply(&authorizer, &headers, body.as_bytes()).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        let json = if sse { text.trim_end().trim_start_matches("event: message\ndata: ") } else { text };
        prop_assert_eq!(names(&serde_json::from_str(json).unwrap()), expected);
    }
}
