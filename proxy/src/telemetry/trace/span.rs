//! A request's span: the attributes each stage records on it, and the caller's context it
//! continues.

use std::net::SocketAddr;

use super::*;

// === impl HopSpan ===

impl HopSpan {
    /// No span: tracing is off.
    pub fn disabled() -> Self {
        Self {
            _span: tracing::Span::none(),
            cx: None,
            kind: SpanKind::Inbound,
        }
    }

    /// Whether this is a real span (tracing is on).
    pub fn is_enabled(&self) -> bool {
        self.cx.is_some()
    }

    fn set(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(cx) = &self.cx {
            cx.span().set_attributes(attributes);
        }
    }

    /// The trace id (32 hex digits), when there is a span.
    pub fn trace_id(&self) -> Option<TraceIdHex> {
        let span = self.cx.as_ref()?.span();
        let span_context = span.span_context();
        span_context
            .is_valid()
            .then(|| TraceIdHex::new(span_context.trace_id()))
    }

    /// Who called whom: `hop.peer.id` (the principal) and `hop.dest.id` (the resource).
    pub fn record_hop(&self, peer: &SpiffeId, dest: &SpiffeId) {
        if !self.is_enabled() {
            return;
        }
        self.set([
            KeyValue::new("hop.peer.id", interner::intern(peer.as_str())),
            KeyValue::new("hop.dest.id", interner::intern(dest.as_str())),
        ]);
    }

    /// The authority the request goes to, as `server.address` and, when it names one,
    /// `server.port` (none: left out).
    pub fn record_authority(&self, authority: &str) {
        if !self.is_enabled() || authority.is_empty() {
            return;
        }
        let (host, port) = split_authority(authority);
        let address = KeyValue::new("server.address", interner::intern(host));
        match port {
            Some(port) => self.set([address, KeyValue::new("server.port", i64::from(port))]),
            None => self.set([address]),
        }
    }

    /// The caller's IP, as `client.address`: the peer sidecar (inbound) or the app
    /// (outbound). Formatted once per connection by the caller ([`client_ip`]).
    pub fn record_client(&self, ip: &str) {
        if self.is_enabled() {
            self.set([KeyValue::new("client.address", interner::intern(ip))]);
        }
    }

    /// The hop token this hop carries: verified (inbound) or minted (outbound).
    pub fn record_token(&self, facts: &TokenFacts, jti: &str, prv: Option<&str>) {
        if !self.is_enabled() {
            return;
        }
        // Origin first, the current peer last: `sub` when it is a workload, then the actors
        // from the deepest (least recent) to the outermost (current).
        // `sub` is `enduser.id` and often the chain's origin too: one shared copy for both.
        let sub = interner::intern(&facts.sub);
        let mut chain: Vec<opentelemetry::StringValue> = Vec::with_capacity(facts.actors.len() + 1);
        if facts.sub.starts_with("spiffe://") {
            chain.push(sub.clone());
        }
        chain.extend(facts.actors.iter().rev().map(|a| interner::intern(a)));
        let txn = facts
            .txn
            .as_ref()
            .map(|txn| KeyValue::new("hop.txn", interner::intern(txn)));
        let prv = prv.map(|prv| KeyValue::new("hop.token.prv", interner::intern(prv)));
        let attributes = [
            KeyValue::new("hop.token.jti", interner::intern(jti)),
            KeyValue::new("enduser.id", sub),
            KeyValue::new("hop.chain", Value::Array(chain.into())),
            KeyValue::new(
                "hop.chain.depth",
                i64::try_from(facts.actors.len()).unwrap_or(i64::MAX),
            ),
        ];
        self.set(txn.into_iter().chain(prv).chain(attributes));
    }

    /// The MCP call: `mcp.method.name`, and the name it calls by the OTel MCP conventions
    /// (`gen_ai.tool.name`, `mcp.resource.uri` or `gen_ai.prompt.name`), with the tool's name in
    /// `mcp.tool.name` too.
    pub fn record_mcp(&self, method: &str, name: Option<&str>, protocol_version: &str) {
        if !self.is_enabled() {
            return;
        }
        self.set([KeyValue::new("mcp.method.name", interner::intern(method))]);
        if !protocol_version.is_empty() {
            let version = interner::intern(protocol_version);
            self.set([KeyValue::new("mcp.protocol.version", version)]);
        }
        let key = match method {
            "tools/call" => Some("gen_ai.tool.name"),
            "prompts/get" => Some("gen_ai.prompt.name"),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                Some("mcp.resource.uri")
            }
            _ => None,
        };
        if let (Some(key), Some(name)) = (key, name) {
            let value = interner::intern(name);
            if key == "gen_ai.tool.name" {
                self.set([
                    KeyValue::new("mcp.tool.name", value.clone()),
                    KeyValue::new(key, value),
                ]);
            } else {
                self.set([KeyValue::new(key, value)]);
            }
        }
    }

    /// The Cedar action this hop was decided under.
    pub fn record_action(&self, action: &str) {
        if self.is_enabled() {
            self.set([KeyValue::new("hop.intent.action", interner::intern(action))]);
        }
    }

    /// The decision: `allow`, `deny` or `audit_deny`, with its id and determining policies when
    /// policies were evaluated.
    pub fn record_decision(
        &self,
        decision: &'static str,
        id: Option<&Arc<str>>,
        policies: &[String],
    ) {
        if !self.is_enabled() {
            return;
        }
        let decision = KeyValue::new("hop.decision", decision);
        match id {
            Some(id) => {
                let ids: Vec<opentelemetry::StringValue> =
                    policies.iter().map(|p| interner::intern(p)).collect();
                self.set([
                    decision,
                    KeyValue::new(
                        "hop.decision.id",
                        opentelemetry::StringValue::from(Arc::clone(id)),
                    ),
                    KeyValue::new("hop.policy.ids", Value::Array(ids.into())),
                ]);
            }
            None => self.set([decision]),
        }
    }

    /// A request refused: a 401, 400 or 403 `no_route` is recorded with its label
    /// (`unauthenticated` or `deny`) and the request's own decision id; a policy denial was
    /// recorded with its decision already; a failure after admission (502, 503, 504) leaves the
    /// decision as it was. `decided`: the policy denied it. `reason`: the refusal's code, as
    /// `hop.reason`.
    pub fn record_refusal(
        &self,
        label: DecisionLabel,
        decided: bool,
        decision_id: &Arc<str>,
        reason: Option<&str>,
    ) {
        if !self.is_enabled() {
            return;
        }
        if !decided && label != DecisionLabel::Allow {
            self.record_decision(label.as_str(), Some(decision_id), &[]);
        }
        if let Some(reason) = reason {
            self.set([KeyValue::new("hop.reason", interner::intern(reason))]);
        }
    }

    /// The response status, and the span's status by the HTTP conventions: a server span
    /// (inbound) is an error on 5xx, a client span (outbound) on 4xx too. An error's
    /// `error.type` is hopgate's own code when hopgate answered (`refusal`: `no_route`,
    /// `upstream_unavailable`, a token's reason...), else the status code. The status has no
    /// description: the status code says it.
    pub fn record_status(&self, status: u16, refusal: Option<&str>) {
        let Some(cx) = &self.cx else { return };
        let code = KeyValue::new("http.response.status_code", i64::from(status));
        let error = match self.kind {
            SpanKind::Inbound => status >= 500,
            SpanKind::Outbound => status >= 400,
        };
        if !error {
            self.set([code]);
            return;
        }
        let error_type = match refusal {
            Some(reason) => opentelemetry::StringValue::from(reason.to_owned()),
            None => opentelemetry::StringValue::from(status.to_string()),
        };
        self.set([code, KeyValue::new("error.type", error_type)]);
        cx.span().set_status(Status::error(""));
    }
}

/// A connection's `client.address`, formatted once for all its requests.
pub fn client_ip(addr: SocketAddr) -> Box<str> {
    addr.ip().to_string().into_boxed_str()
}

/// An authority's host and port: `crm.tools:8080` → (`crm.tools`, 8080), `[::1]:80` →
/// (`::1`, 80); no port, or one that does not parse, is `None`.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// The caller's span, from its trace context (and `tracestate`).
pub(super) fn remote_parent(caller: &CallerTrace, headers: &HeaderMap) -> SpanContext {
    let state = headers
        .get(TRACESTATE)
        .filter(|v| v.len() <= TRACESTATE_LIMIT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    SpanContext::new(caller.trace_id, caller.span_id, caller.flags, true, state)
}
