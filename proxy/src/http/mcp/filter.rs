//! `tools/list` filtering (`mcp.filter_tools_list`, MCP-06): the inbound side rewrites a
//! `tools/list` result so that it lists only the tools whose `tools/call` the same caller, with
//! the same chain, host, path and intent, would be allowed. Each tool is one Cedar decision,
//! made by the same policy snapshot through its memo, so a list costs a decision per new
//! tool and a memo lookup per repeated one, and can never disagree with the call itself.
//!
//! The result arrives as one JSON-RPC response (`application/json`) or as an SSE stream of
//! messages (`text/event-stream`); each message that is a `tools/list` result is filtered, the
//! others pass unchanged. The body is read in full, up to `mcp.max_body`: a result that cannot
//! be read or parsed is not passed on unfiltered (502, `mcp_result`).

use bytes::Bytes;
use hopgate_config::SpiffeId;
use hopgate_policy::{Direction, HopRequest, McpFacts, TokenFacts};
use http::HeaderMap;
use serde_json::Value;

use super::McpRefusal;
use crate::http::authorize::{Authorizer, HttpFacts};
use crate::telemetry::metrics::DecisionLabel;

/// The facts of a `tools/list` request, owned, to decide each listed tool's `tools/call` once
/// the result is back.
#[derive(Debug)]
pub struct ToolFilter {
    peer: SpiffeId,
    dest: SpiffeId,
    direction: Direction,
    method: String,
    path: String,
    host: String,
    intent: Vec<(String, String)>,
    token: Option<TokenFacts>,
    protocol_version: String,
}

impl ToolFilter {
    /// The filter for a `tools/list` request with these facts.
    pub fn new(request: &HopRequest<'_>, facts: &HttpFacts<'_>, protocol_version: &str) -> Self {
        Self {
            peer: request.peer.clone(),
            dest: request.destination.clone(),
            direction: request.direction,
            method: facts.method.to_owned(),
            path: facts.path.to_owned(),
            host: facts.authority.unwrap_or_default().to_owned(),
            intent: facts
                .intent
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            token: request.token.cloned(),
            protocol_version: protocol_version.to_owned(),
        }
    }

    /// Whether `tools/call` of `tool` would be let through (an `audit_deny` is: audit mode
    /// enforces nothing).
    pub fn allows(&self, authorizer: &Authorizer, tool: &str) -> bool {
        self.allows_with(authorizer, &self.intent_refs(), tool)
    }

    /// The intent entries as the policy request borrows them; built once per list.
    fn intent_refs(&self) -> Vec<(&str, &str)> {
        self.intent
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn allows_with(&self, authorizer: &Authorizer, intent: &[(&str, &str)], tool: &str) -> bool {
        let request = HopRequest {
            peer: &self.peer,
            destination: &self.dest,
            direction: self.direction,
            action: Some("tools/call"),
            method: &self.method,
            path: &self.path,
            host: &self.host,
            intent,
            token: self.token.as_ref(),
            mcp: Some(McpFacts {
                method: "tools/call",
                name: Some(tool),
                protocol_version: &self.protocol_version,
            }),
        };
        authorizer.decide(&request).label != DecisionLabel::Deny
    }

    /// The result `body` with every tool the caller may not call taken out.
    ///
    /// # Errors
    /// [`McpRefusal::BadResult`] when the body is not the JSON or SSE it says it is.
    pub fn apply(
        &self,
        authorizer: &Authorizer,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Bytes, McpRefusal> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let intent = self.intent_refs();
        let allows = |tool: &str| self.allows_with(authorizer, &intent, tool);
        if content_type.starts_with("text/event-stream") {
            filter_events(body, &allows)
        } else {
            let mut message: Value =
                serde_json::from_slice(body).map_err(|_| McpRefusal::BadResult)?;
            filter_message(&mut message, &allows)?;
            Ok(Bytes::from(message.to_string()))
        }
    }
}

/// Drops from a `tools/list` result each tool `allows` refuses; other messages are left as they
/// are, and each message of an array is filtered. A tool without a string name, or with a second
/// key a case-blind parser would read as its name, is dropped: nothing could decide it.
///
/// # Errors
/// [`McpRefusal::BadResult`] when a result's `tools` is not a list, or a key a case-blind
/// parser would read as `tools` stands beside it: a list that cannot be filtered as the client
/// will read it is not passed on.
pub fn filter_message(
    message: &mut Value,
    allows: &dyn Fn(&str) -> bool,
) -> Result<(), McpRefusal> {
    if let Some(messages) = message.as_array_mut() {
        return messages
            .iter_mut()
            .try_for_each(|message| filter_message(message, allows));
    }
    let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if result
        .keys()
        .any(|key| key != "tools" && key.eq_ignore_ascii_case("tools"))
    {
        return Err(McpRefusal::BadResult);
    }
    match result.get_mut("tools") {
        None => Ok(()),
        Some(Value::Array(tools)) => {
            tools.retain(|tool| {
                let unambiguous = tool.as_object().is_some_and(|tool| {
                    !tool
                        .keys()
                        .any(|key| key != "name" && key.eq_ignore_ascii_case("name"))
                });
                unambiguous && tool.get("name").and_then(Value::as_str).is_some_and(allows)
            });
            Ok(())
        }
        Some(_) => Err(McpRefusal::BadResult),
    }
}

/// The same over an SSE stream: each event whose data is a JSON-RPC message is filtered and
/// written back as one `data:` line; comments, ids and other fields are kept as they came.
fn filter_events(body: &[u8], allows: &dyn Fn(&str) -> bool) -> Result<Bytes, McpRefusal> {
    let text = std::str::from_utf8(body).map_err(|_| McpRefusal::BadResult)?;
    // Lines end in CRLF, LF or CR alone, and a stream may open with a BOM (the SSE format):
    // read every spelling as a client would, so that no event is passed on unread.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(normalized.len());
    for event in normalized.split_inclusive("\n\n") {
        let (fields, data): (Vec<&str>, Vec<&str>) = event
            .lines()
            .partition(|line| *line != "data" && !line.starts_with("data:"));
        if data.is_empty() {
            out.push_str(event);
            continue;
        }
        let joined: Vec<&str> = data
            .iter()
            .map(|line| {
                // `data` alone is a data field with an empty value.
                let value = line.strip_prefix("data:").unwrap_or_default();
                value.strip_prefix(' ').unwrap_or(value)
            })
            .collect();
        let joined = joined.join("\n");
        if joined.trim().is_empty() {
            // A priming event (an id and an empty data line): nothing to filter.
            out.push_str(event);
            continue;
        }
        let Ok(mut message) = serde_json::from_str::<Value>(&joined) else {
            return Err(McpRefusal::BadResult);
        };
        filter_message(&mut message, allows)?;
        for field in fields.iter().filter(|f| !f.is_empty()) {
            out.push_str(field);
            out.push('\n');
        }
        out.push_str("data: ");
        out.push_str(&message.to_string());
        out.push_str(if event.ends_with("\n\n") {
            "\n\n"
        } else {
            "\n"
        });
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests;
