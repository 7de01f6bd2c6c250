//! A small MCP tool server for the end-to-end tests: streamable HTTP on `/mcp`, answering
//! `tools/list` with four ticket tools and `tools/call` with the tool's name, as JSON or, when
//! asked, as an SSE stream. It records every request it gets, so a test can prove that a
//! refused call never reached it. (The system tests run the official MCP SDK; this one is
//! here so the rules can be checked byte for byte.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::idp::Idp;
use super::proxy::POLICY_SCHEMA;
use super::workload::{Reply, Workload, Workloads, request_with_body};

/// The tools the server lists, in order.
pub(crate) const TOOLS: [&str; 4] = [
    "read_ticket",
    "search_tickets",
    "write_ticket",
    "delete_ticket",
];

/// How the server answers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Json,
    /// `text/event-stream`: a progress notification, then the result, 100 ms apart.
    Sse,
    /// JSON labelled `content-encoding: br`, as a server that compresses would answer.
    Encoded,
}

/// One request as the server received it.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Value,
}

pub(crate) struct McpApp {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type AppBody = BoxBody<Bytes, Infallible>;

impl McpApp {
    pub(crate) async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let log = Arc::clone(&log);
                        async move { Ok::<_, Infallible>(serve(req, answer, log).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// Every request received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The tools that were called, in order.
    pub(crate) fn called(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter(|s| s.body["method"] == "tools/call")
            .map(|s| {
                s.body["params"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

async fn serve(
    req: Request<Incoming>,
    answer: Answer,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Response<AppBody> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    log.lock().unwrap().push(Seen {
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let id = body["id"].clone();
    let result = match body["method"].as_str() {
        Some("tools/list") => {
            let tools: Vec<Value> = TOOLS
                .iter()
                .map(|name| json!({"name": name, "description": format!("the {name} tool"), "inputSchema": {"type": "object"}}))
                .collect();
            json!({"tools": tools})
        }
        Some("tools/call") => {
            let name = body["params"]["name"].as_str().unwrap_or_default();
            json!({"content": [{"type": "text", "text": format!("called {name}")}], "isError": false})
        }
        _ => json!({}),
    };
    let message = json!({"jsonrpc": "2.0", "id": id, "result": result});
    if answer != Answer::Sse || id.is_null() {
        let encoding = if answer == Answer::Encoded {
            "br"
        } else {
            "identity"
        };
        return Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", encoding)
            .body(Full::new(Bytes::from(message.to_string())).boxed())
            .unwrap();
    }
    let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}});
    let events = vec![
        format!("event: message\r\ndata: {progress}\r\n\r\n"),
        format!("event: message\r\ndata: {message}\r\n\r\n"),
    ];
    let stream = futures_util::stream::unfold(events.into_iter(), |mut events| async move {
        let event = events.next()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), events))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

/// A JSON-RPC request body.
pub(crate) fn call(id: u64, method: &str, name: Option<&str>) -> String {
    let params = match name {
        Some(name) => json!({"name": name, "arguments": {"id": "T-1"}}),
        None => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

/// The 2026-07-28 headers for `method` (and `name`).
pub(crate) fn mcp_headers<'a>(method: &'a str, name: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    if let Some(name) = name {
        headers.push(("mcp-name", name));
    }
    headers
}

/// An HTTP/1.1 POST of `body` to `addr` with `Host: host`.
pub(crate) async fn post(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    request_with_body(addr, "POST", host, path, headers, body.into()).await
}

/// The tool names of a `tools/list` result, from a JSON body or the last SSE data line.
pub(crate) fn listed(reply: &Reply) -> Vec<String> {
    let message: Value = if reply.body.contains("data:") {
        let data = reply
            .body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .rfind(|d| d.contains("\"tools\""))
            .unwrap_or_else(|| panic!("no tools/list result in {:?}", reply.body));
        serde_json::from_str(data).unwrap()
    } else {
        reply.json()
    };
    message["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tools/list result: {message}"))
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_owned())
        .collect()
}

/// crm's tool rule in the MCP tests: only inference, acting for a person whose chain carries
/// the read scope, may call the reading tools. Each test adds the session methods it needs.
pub(crate) fn read_tools_rule() -> String {
    let inference = super::workload::workload_id("inference");
    format!(
        r#"@id("read-tools-for-people") permit (
  principal == Hop::Workload::"{inference}", action == Hop::Action::"tools/call", resource)
when {{
  context has mcp && context.mcp has name &&
  ["read_ticket", "search_tickets"].contains(context.mcp.name) &&
  context.token has enduser && context.token.enduser &&
  context.token has scope && context.token.scope.contains("tickets.read")
}};
"#
    )
}

/// The chain the MCP tests run, each workload behind its own in-process hopgate: crm (its app
/// an MCP server, its header-read time 1 s), inference routing to crm, and the agent routing to
/// both; crm's and inference's sidecars read MCP, the agent's does not. `alice` is the hop token
/// inference's app received for alice's transaction, which its app relays as an MCP client.
pub(crate) struct AliceChain {
    pub(crate) crm: Workload,
    pub(crate) inference: Workload,
    pub(crate) agent: Workload,
    pub(crate) alice: String,
    _idp: Idp,
    _mesh: Workloads,
}

/// Starts [`AliceChain`] with crm's app at `app`, deciding with `crm_policy`, and `mcp_yaml` as
/// the `mcp` section of crm's and inference's configs.
pub(crate) async fn alice_chain(app: SocketAddr, crm_policy: &str, mcp_yaml: &str) -> AliceChain {
    let mesh = Workloads::new();
    let idp = Idp::new();
    idp.write_jwks(mesh.dir.path());
    let crm = mesh
        .workload("crm")
        .app_at(app)
        .inbound_yaml("  timeouts: { header_read: 1s }\n")
        .policy("schema.cedarschema", POLICY_SCHEMA)
        .policy("crm.cedar", crm_policy)
        .top_yaml(mcp_yaml)
        .start()
        .await;
    let inference = mesh
        .workload("inference")
        .route("crm.tools", &crm, &["tickets.read", "tickets.write"])
        .top_yaml(mcp_yaml)
        .start()
        .await;
    let agent = mesh
        .workload("agent")
        .client_only()
        .route("inference.ml", &inference, &["generate", "tickets.read"])
        .route("crm.tools", &crm, &["tickets.read"])
        .top_yaml(&Idp::token_yaml("jwks.json"))
        .start()
        .await;
    // Alice asks the agent, which asks inference: inference's app now holds her hop token.
    let bearer = format!("Bearer {}", idp.token("alice", "generate tickets.read"));
    let reply = agent
        .call("inference.ml", "/generate", &[("authorization", &bearer)])
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received = inference.app.received();
    let alice = received.last().unwrap().headers["hop-token"]
        .to_str()
        .unwrap()
        .to_owned();
    AliceChain {
        crm,
        inference,
        agent,
        alice,
        _idp: idp,
        _mesh: mesh,
    }
}
