//! crm as an MCP tool server (streamable HTTP on `POST /mcp`, JSON answers), the MCP calls
//! the inference app makes to it for alice (step 5), and how step 5 reads what came back.

use super::*;

/// The MCP revision the demo speaks (its `Mcp-Method` and `Mcp-Name` headers are 2026-07-28's).
pub(super) const PROTOCOL_VERSION: &str = "2026-07-28";

/// The tools crm's app lists, in order, with their descriptions: everything it can do, whoever
/// asks. What a caller is shown is its sidecar's filter.
pub(super) const TOOLS: [(&str, &str); 3] = [
    ("read_ticket", "Read one ticket by its id."),
    ("search_tickets", "Search the tickets by text."),
    ("write_ticket", "Change a ticket's status or summary."),
];

/// The calls the inference app makes to crm for step 5, each with its JSON-RPC id and, for a
/// `tools/call`, the tool and its arguments.
const CALLS: [(u64, &str, Option<&str>); 3] = [
    (1, "tools/list", None),
    (2, "tools/call", Some("read_ticket")),
    (3, "tools/call", Some("write_ticket")),
];

// === crm: the tool server ===

/// crm's answer to one JSON-RPC message on `/mcp`.
pub(super) async fn serve(req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != http::Method::POST {
        return rpc_error(405, &Value::Null, -32600, "POST a JSON-RPC message to /mcp");
    }
    let message = match req.into_body().collect().await {
        Ok(body) => serde_json::from_slice::<Value>(&body.to_bytes()).ok(),
        Err(_) => None,
    };
    let Some(message) = message.filter(Value::is_object) else {
        return rpc_error(400, &Value::Null, -32700, "Parse error");
    };
    let Some(id) = message.get("id") else {
        // A notification (`notifications/initialized`, ...): accepted, nothing to answer.
        return mcp_response(202, String::new());
    };
    let params = field(&message, "params");
    let result = match field(&message, "method").as_str().unwrap_or_default() {
        "initialize" => json!({
            "protocolVersion": field(params, "protocolVersion").as_str().unwrap_or(PROTOCOL_VERSION),
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "crm", "version": env!("CARGO_PKG_VERSION") },
        }),
        "ping" => json!({}),
        "tools/list" => json!({ "tools": TOOLS.map(|(name, description)| json!({
            "name": name,
            "description": description,
            "inputSchema": {
                "type": "object",
                "properties": { "id": { "type": "string" }, "text": { "type": "string" } },
            },
        })) }),
        "tools/call" => {
            let arguments = field(params, "arguments");
            let ticket = field(arguments, "id").as_str().unwrap_or("42");
            let text = match field(params, "name").as_str().unwrap_or_default() {
                "read_ticket" => {
                    json!({ "ticket": ticket, "status": "open", "summary": "printer on fire" })
                        .to_string()
                }
                "search_tickets" => {
                    json!([{ "ticket": "42", "summary": "printer on fire" }]).to_string()
                }
                "write_ticket" => format!("ticket {ticket} updated"),
                other => {
                    let message = format!("Unknown tool: {}", other.escape_debug());
                    return rpc_error(200, id, -32602, &message);
                }
            };
            json!({ "content": [{ "type": "text", "text": text }], "isError": false })
        }
        _ => return rpc_error(200, id, -32601, "Method not found"),
    };
    let answer = json!({ "jsonrpc": "2.0", "id": id, "result": result });
    mcp_response(200, answer.to_string())
}

fn rpc_error(status: u16, id: &Value, code: i64, message: &str) -> Response<Full<Bytes>> {
    let answer = json!({
        "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message },
    });
    mcp_response(status, answer.to_string())
}

fn mcp_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Reply { status, body }.relay();
    if status != 202 {
        rsp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    rsp
}

// === inference: the MCP client ===

/// What the inference app does on `/crm-tools`: [`CALLS`] to `http://crm.tools/mcp` through
/// its sidecar, relaying `relayed` (the hop token it received and the trace context), each
/// with the MCP 2026-07-28 headers. It answers with what came back, call by call.
pub(super) async fn use_crm_tools(
    outbound: SocketAddr,
    relayed: &[(&str, &str)],
) -> Response<Full<Bytes>> {
    let mut answers = Vec::new();
    for (id, method, tool) in CALLS {
        let params = tool.map_or_else(
            || json!({}),
            |name| {
                let arguments = if name == "write_ticket" {
                    json!({ "id": "42", "status": "closed" })
                } else {
                    json!({ "id": "42" })
                };
                json!({ "name": name, "arguments": arguments })
            },
        );
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut headers = relayed.to_vec();
        headers.extend([
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", PROTOCOL_VERSION),
            ("mcp-method", method),
        ]);
        if let Some(name) = tool {
            headers.push(("mcp-name", name));
        }
        let reply = post(outbound, "crm.tools", "/mcp", &headers, body.to_string()).await;
        let answer = serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body));
        answers.push(json!({
            "id": id, "method": method, "tool": tool, "status": reply.status, "answer": answer,
        }));
    }
    json_response(200, &json!({ "calls": answers }))
}

// === step 5: what came back ===

/// One MCP call the inference app made, and crm's sidecar's answer.
pub(super) struct Answered {
    pub(super) id: u64,
    pub(super) method: String,
    pub(super) tool: Option<String>,
    pub(super) status: u16,
    pub(super) answer: Value,
}

impl Answered {
    /// The calls in the inference app's `/crm-tools` answer.
    pub(super) fn parse(body: &str) -> Vec<Self> {
        let Ok(body) = serde_json::from_str::<Value>(body) else {
            return Vec::new();
        };
        field(&body, "calls")
            .as_array()
            .into_iter()
            .flatten()
            .map(|call| Self {
                id: field(call, "id").as_u64().unwrap_or_default(),
                method: field(call, "method")
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                tool: field(call, "tool").as_str().map(str::to_owned),
                status: field(call, "status")
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or_default(),
                answer: field(call, "answer").clone(),
            })
            .collect()
    }

    /// The call as `tools/call write_ticket (id 3)`.
    pub(super) fn label(&self) -> String {
        match &self.tool {
            Some(tool) => format!("{} {tool} (id {})", self.method, self.id),
            None => format!("{} (id {})", self.method, self.id),
        }
    }

    /// The names in a `tools/list` result.
    pub(super) fn tools(&self) -> Vec<&str> {
        field(field(&self.answer, "result"), "tools")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tool| field(tool, "name").as_str())
            .collect()
    }

    /// The text of a `tools/call` result that is not a tool error.
    pub(super) fn text(&self) -> Option<&str> {
        let result = field(&self.answer, "result");
        if field(result, "isError") != &Value::Bool(false) {
            return None;
        }
        field(result, "content")
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| field(c, "type") == "text")
            .and_then(|c| field(c, "text").as_str())
    }

    /// The JSON-RPC error, when the answer is one for this call's id.
    pub(super) fn error(&self) -> Option<RpcError<'_>> {
        let error = self.answer.get("error")?;
        let data = field(error, "data");
        (field(&self.answer, "jsonrpc") == "2.0" && field(&self.answer, "id") == self.id).then(
            || RpcError {
                code: field(error, "code").as_i64().unwrap_or_default(),
                message: field(error, "message").as_str().unwrap_or_default(),
                decision_id: field(data, "decision_id").as_str().unwrap_or_default(),
                reason: field(data, "reason").as_str().unwrap_or_default(),
            },
        )
    }
}

/// A JSON-RPC error hopgate answered with.
pub(super) struct RpcError<'a> {
    pub(super) code: i64,
    pub(super) message: &'a str,
    pub(super) decision_id: &'a str,
    pub(super) reason: &'a str,
}
