//! MCP through the real stack (docs/security.md, MCP-01..07): agent → inference → crm, where
//! crm is an MCP tool server and its sidecar decides each call by its tool, bound to the mTLS
//! peer and the delegation chain.
//!
//! inference's sidecar reads MCP too, so a malformed call is refused before it leaves;
//! the agent's does not, so a call the agent sends straight to crm is checked by crm's.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::mcp_app::{
    AliceChain, Answer, McpApp, TOOLS, alice_chain, call, listed, mcp_headers, post,
    read_tools_rule,
};
use crate::support::workload::{Reply, Workloads, workload_id};

const MCP: &str = "mcp:\n  paths: [/mcp]\n  max_body: 4KiB\n";

/// crm's rules: anyone may open a session and list; only inference, acting for a person
/// whose chain carries the read scope, may call the reading tools; plain HTTP is `call`.
fn crm_policy() -> String {
    let session = r#"@id("mcp-session") permit (principal, action in
  [Hop::Action::"initialize", Hop::Action::"ping", Hop::Action::"tools/list"], resource);
@id("plain-http") permit (principal, action == Hop::Action::"call", resource);
"#;
    format!("{session}{}", read_tools_rule())
}

struct Mesh {
    app: McpApp,
    chain: AliceChain,
}

async fn mesh(answer: Answer) -> Mesh {
    let app = McpApp::start(answer).await;
    let chain = alice_chain(app.addr, &crm_policy(), MCP).await;
    Mesh { app, chain }
}

impl Mesh {
    /// inference's app calls crm's MCP endpoint; `for_alice` relays alice's hop token.
    async fn inference(&self, for_alice: bool, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut headers = headers.to_vec();
        if for_alice {
            headers.push(("hop-token", self.chain.alice.as_str()));
        }
        post(
            self.chain.inference.outbound,
            "crm.tools",
            "/mcp",
            &headers,
            body.to_owned(),
        )
        .await
    }

    /// The agent calls crm directly, through a sidecar that does not read MCP.
    async fn agent(&self, headers: &[(&str, &str)], body: &str) -> Reply {
        post(
            self.chain.agent.outbound,
            "crm.tools",
            "/mcp",
            headers,
            body.to_owned(),
        )
        .await
    }

    fn crm_audit(&self, method: &str) -> Vec<Value> {
        self.chain
            .crm
            .audit_records()
            .into_iter()
            .filter(|r| r["mcp_method"] == method)
            .collect()
    }
}

#[tokio::test]
async fn mcp_06_tools_list_is_filtered_per_caller_and_per_chain() {
    let mesh = mesh(Answer::Json).await;
    let list = call(1, "tools/list", None);
    let headers = mcp_headers("tools/list", None);

    // inference acting for alice: the reading tools, and only those.
    let mut compressed = headers.clone();
    compressed.push(("accept-encoding", "gzip, br"));
    let reply = mesh.inference(true, &compressed, &list).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(listed(&reply), ["read_ticket", "search_tickets"]);
    assert_eq!(reply.json()["id"], 1);
    // The same, from a client without the 2026-07-28 headers: decided on the body alone.
    let reply = mesh.inference(true, &[], &list).await;
    assert_eq!(listed(&reply), ["read_ticket", "search_tickets"]);

    // The same caller on its own behalf: nobody behind the call, so none.
    let reply = mesh.inference(false, &headers, &list).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(listed(&reply), Vec::<String>::new());

    // The agent calling crm directly, for alice too: another caller, none.
    let reply = mesh.agent(&headers, &list).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(listed(&reply), Vec::<String>::new());

    // The server listed all four each time; the sidecar took them out. It was asked for a list
    // it can read: uncompressed.
    let seen = mesh.app.seen();
    assert_eq!(seen.len(), 4);
    assert!(
        seen[0].headers.get("accept-encoding").is_none(),
        "{:?}",
        seen[0].headers
    );
    let lists = mesh.crm_audit("tools/list");
    assert_eq!(lists.len(), 4, "{lists:?}");
    assert!(lists.iter().all(|r| r["effect"] == "allow"), "{lists:?}");
}

#[tokio::test]
async fn mcp_05_a_denied_tool_call_is_a_json_rpc_403_with_its_id_and_never_reaches_the_server() {
    let mesh = mesh(Answer::Json).await;

    let allowed = mesh
        .inference(
            true,
            &mcp_headers("tools/call", Some("read_ticket")),
            &call(41, "tools/call", Some("read_ticket")),
        )
        .await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(
        allowed.json()["result"]["content"][0]["text"],
        "called read_ticket"
    );

    for headers in [mcp_headers("tools/call", Some("write_ticket")), Vec::new()] {
        let denied = mesh
            .inference(
                true,
                &headers,
                &call(42, "tools/call", Some("write_ticket")),
            )
            .await;
        assert_eq!(denied.status, 403, "{}", denied.body);
        assert_eq!(
            denied.headers["content-type"], "application/json",
            "{:?}",
            denied.headers
        );
        let body = denied.json();
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["id"], 42, "the request's id: {body}");
        assert_eq!(body["error"]["code"], -32001, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("denies"),
            "{body}"
        );
        assert_eq!(body["error"]["data"]["reason"], "forbidden", "{body}");
        let decision_id = body["error"]["data"]["decision_id"].as_str().unwrap();
        assert!(!decision_id.is_empty(), "{body}");
        // crm's audit record names the tool and the same decision.
        let record = mesh
            .crm_audit("tools/call")
            .into_iter()
            .find(|r| r["decision_id"] == decision_id)
            .unwrap_or_else(|| panic!("no record of {decision_id}"));
        assert_eq!(record["mcp_name"], "write_ticket", "{record}");
        assert_eq!(record["effect"], "deny", "{record}");
        assert_eq!(record["action"], "tools/call", "{record}");
    }
    assert_eq!(
        mesh.app.called(),
        ["read_ticket"],
        "a denied call never reached crm"
    );
}

#[tokio::test]
async fn mcp_01_a_header_that_names_another_tool_than_the_body_is_400_on_both_sides() {
    let mesh = mesh(Answer::Json).await;
    let body = call(7, "tools/call", Some("delete_ticket"));
    let headers = mcp_headers("tools/call", Some("read_ticket"));
    // Refused by inference's own sidecar before it leaves, and by crm's for the agent.
    for reply in [
        mesh.inference(true, &headers, &body).await,
        mesh.agent(&headers, &body).await,
    ] {
        assert_eq!(reply.status, 400, "{}", reply.body);
        let error = reply.json();
        assert_eq!(error["error"]["code"], -32020, "{error}");
        assert_eq!(
            error["error"]["data"]["reason"], "mcp_header_mismatch",
            "{error}"
        );
    }
    // A method header that disagrees is the same refusal.
    let reply = mesh.agent(&mcp_headers("tools/list", None), &body).await;
    assert_eq!(reply.json()["error"]["code"], -32020, "{}", reply.body);
    assert!(mesh.app.seen().is_empty(), "{:?}", mesh.app.seen());
}

#[tokio::test]
async fn mcp_02_mcp_04_batches_duplicate_keys_and_bodies_that_are_not_json_rpc_are_400() {
    let mesh = mesh(Answer::Json).await;
    let cases = [
        (
            "a batch",
            format!("[{},{}]", call(1, "tools/list", None), call(2, "tools/call", Some("delete_ticket"))),
        ),
        (
            "a duplicate method",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"delete_ticket"}}"#.to_owned(),
        ),
        (
            "a duplicate tool name",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_ticket","name":"delete_ticket"}}"#.to_owned(),
        ),
        ("not JSON", "tools/call delete_ticket".to_owned()),
        ("no method", r#"{"jsonrpc":"2.0","id":1,"params":{}}"#.to_owned()),
        ("not JSON-RPC 2.0", r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#.to_owned()),
    ];
    for (what, body) in &cases {
        let reply = mesh
            .agent(&[("content-type", "application/json")], body)
            .await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.body);
        let error = reply.json();
        assert_eq!(error["jsonrpc"], "2.0", "{what}: {error}");
        assert!(
            error["error"]["code"].as_i64().unwrap() < -32000,
            "{what}: {error}"
        );
        assert!(
            error["error"]["data"]["decision_id"].is_string(),
            "{what}: {error}"
        );
    }
    assert!(mesh.app.seen().is_empty(), "{:?}", mesh.app.seen());
}

#[tokio::test]
async fn mcp_03_a_body_over_max_body_is_413_and_a_slow_one_times_out() {
    let mesh = mesh(Answer::Json).await;
    let padding = "x".repeat(5 * 1024);
    let big = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_ticket","arguments":{"pad":padding}}}).to_string();
    // On crm's side (the agent's sidecar passes it on) and on inference's own.
    assert_eq!(mesh.agent(&[], &big).await.status, 413);
    assert_eq!(mesh.inference(true, &[], &big).await.status, 413);

    // A body that stops halfway: crm's header-read time (1 s) bounds the wait.
    let mut stream = tokio::net::TcpStream::connect(mesh.chain.agent.outbound)
        .await
        .unwrap();
    let head = "POST /mcp HTTP/1.1\r\nhost: crm.tools\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(br#"{"jsonrpc":"2.0","id":1,"#)
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), async {
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body within 8 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        mesh.app.seen().is_empty(),
        "nothing buffered past the cap reached crm"
    );
}

#[tokio::test]
async fn mcp_07_a_non_mcp_path_with_an_mcp_looking_body_is_decided_as_plain_http() {
    let mesh = mesh(Answer::Json).await;
    let body = call(9, "tools/call", Some("delete_ticket"));
    let reply = post(
        mesh.chain.inference.outbound,
        "crm.tools",
        "/api/tickets",
        &[
            ("hop-token", mesh.chain.alice.as_str()),
            ("content-type", "application/json"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = mesh.app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/tickets");
    let record = mesh
        .chain
        .crm
        .audit_records()
        .into_iter()
        .find(|r| r["path"] == "/api/tickets")
        .unwrap();
    assert_eq!(record["action"], "call", "{record}");
    assert!(
        record.get("mcp_method").is_none_or(Value::is_null),
        "{record}"
    );

    // Nor can a header borrow an MCP method as the action of a plain request.
    let reply = post(
        mesh.chain.agent.outbound,
        "crm.tools",
        "/api/tickets",
        &[("intent-action", "tools/call")],
        body,
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(mesh.app.seen().len(), 1);

    // An MCP path in another case or with a slash, as a lenient router would still route it,
    // is decided as MCP: the call the policy denies is refused, not let through as `call`.
    for path in ["/MCP", "/mcp/"] {
        let denied = post(
            mesh.chain.inference.outbound,
            "crm.tools",
            path,
            &[("hop-token", mesh.chain.alice.as_str())],
            call(10, "tools/call", Some("delete_ticket")),
        )
        .await;
        assert_eq!(denied.status, 403, "{path}: {}", denied.body);
        assert_eq!(denied.json()["id"], 10, "{path}: {}", denied.body);
    }
    assert_eq!(mesh.app.seen().len(), 1);
}

#[tokio::test]
async fn mcp_06_an_sse_tools_list_is_filtered_and_an_sse_tools_call_streams_through() {
    let mesh = mesh(Answer::Sse).await;
    let reply = mesh
        .inference(
            true,
            &mcp_headers("tools/list", None),
            &call(3, "tools/list", None),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert_eq!(listed(&reply), ["read_ticket", "search_tickets"]);
    assert!(
        reply.body.contains("notifications/progress"),
        "{}",
        reply.body
    );
    assert_eq!(TOOLS.len(), 4);

    let reply = mesh
        .inference(
            true,
            &mcp_headers("tools/call", Some("search_tickets")),
            &call(4, "tools/call", Some("search_tickets")),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    let events: Vec<Value> = reply
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{}", reply.body);
    assert_eq!(events[0]["method"], "notifications/progress");
    assert_eq!(
        events[1]["result"]["content"][0]["text"],
        "called search_tickets"
    );
}

#[tokio::test]
async fn mcp_06_a_tools_list_result_the_sidecar_cannot_read_is_a_502_never_passed_on() {
    let mesh = mesh(Answer::Encoded).await;
    let reply = mesh
        .inference(
            true,
            &mcp_headers("tools/list", None),
            &call(5, "tools/list", None),
        )
        .await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let error = reply.json();
    assert_eq!(error["id"], 5, "{error}");
    assert_eq!(error["error"]["data"]["reason"], "mcp_result", "{error}");
    assert!(!reply.body.contains("delete_ticket"), "{}", reply.body);
    // A call's answer is not read, so it passes as it came.
    let reply = mesh
        .inference(
            true,
            &mcp_headers("tools/call", Some("read_ticket")),
            &call(6, "tools/call", Some("read_ticket")),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["content-encoding"], "br");
}

#[tokio::test]
async fn without_an_mcp_section_an_action_with_a_slash_is_an_ordinary_action() {
    // Nothing is MCP here, so `intent-action: tools/call` names an action like any other.
    let mesh = Workloads::new();
    let agent = workload_id("agent");
    let crm = mesh
        .workload("crm")
        .policy("schema.cedarschema", crate::support::proxy::POLICY_SCHEMA)
        .policy(
            "crm.cedar",
            &format!(
                r#"permit (principal == Hop::Workload::"{agent}", action == Hop::Action::"tools/call", resource)
                when {{ !(context has mcp) }};"#
            ),
        )
        .start()
        .await;
    let caller = mesh
        .workload("agent")
        .client_only()
        .route("crm.tools", &crm, &[])
        .start()
        .await;
    let reply = caller
        .call("crm.tools", "/tickets", &[("intent-action", "tools/call")])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(crm.app.received().len(), 1);
}
