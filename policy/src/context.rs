//! The Cedar request shape, in one place: the Cedar-free facts the proxy hands over for one hop
//! ([`HopRequest`]), the context attributes hopgate fills from them with their Cedar types
//! ([`HTTP`], [`TOKEN`]), how the context is built from typed values (no JSON, no per-request
//! schema pass), and the memo key ([`key`]) that holds every fact an evaluation reads.
//!
//! ```text
//! context = {
//!   direction: "inbound" | "outbound",
//!   http:   { method, path, host },
//!   intent: { <the intent headers the schema declares for the action> },
//!   token:  { present, enduser?, sub?, iss?, txn?, scope?, actors?, depth?, origin?,
//!             tctx?: { <the tctx entries the schema declares for the action> } },
//! }
//! ```
//!
//! The schema check (`schema.rs`) reads the same tables, so a schema that validates declares
//! exactly the types filled here. A new attribute is one row in a table here (with a new
//! [`HopRequest`] field, if it needs one, which [`key`] must then take too: it destructures
//! the request without `..`, so forgetting is a compile error), the proxy's code filling it,
//! and the shipped example schema.

use std::fmt;

use cedar_policy::{Context, RestrictedExpression};
use hopgate_config::SpiffeId;

use crate::TokenFacts;
use crate::usage::ContextUsage;

mod key;

pub(crate) use key::key;

/// The Cedar type of a context attribute hopgate fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Bool,
    Long,
    StringSet,
}

/// One context attribute hopgate fills: its name, its type, whether it is always set (else
/// the schema must declare it optional) and how its value is read.
pub(crate) struct Attr<F> {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) always: bool,
    value: F,
}

type HttpValue = for<'r, 's> fn(&'r HopRequest<'s>) -> &'r str;
type TokenValue = fn(&TokenFacts) -> Option<RestrictedExpression>;

/// `context.http`: every attribute always set.
pub(crate) const HTTP: [Attr<HttpValue>; 3] = [
    http("method", |r| r.method),
    http("path", |r| r.path),
    http("host", |r| r.host),
];

/// `context.token`, besides `present` (a `Bool`, always set) and `tctx` (a record, like
/// `intent`): each set when the call carries a token that has it.
pub(crate) const TOKEN: [Attr<TokenValue>; 8] = [
    token("enduser", Kind::Bool, |t| {
        Some(RestrictedExpression::new_bool(t.enduser()))
    }),
    token("sub", Kind::String, |t| Some(string(&t.sub))),
    token("iss", Kind::String, |t| Some(string(&t.iss))),
    token("txn", Kind::String, |t| t.txn.as_deref().map(string)),
    token("scope", Kind::StringSet, |t| Some(string_set(&t.scope))),
    token("actors", Kind::StringSet, |t| Some(string_set(&t.actors))),
    token("depth", Kind::Long, |t| {
        Some(RestrictedExpression::new_long(
            i64::try_from(t.depth()).unwrap_or(i64::MAX),
        ))
    }),
    token("origin", Kind::String, |t| t.origin().map(string)),
];

const fn http(name: &'static str, value: HttpValue) -> Attr<HttpValue> {
    Attr {
        name,
        kind: Kind::String,
        always: true,
        value,
    }
}

const fn token(name: &'static str, kind: Kind, value: TokenValue) -> Attr<TokenValue> {
    Attr {
        name,
        kind,
        always: false,
        value,
    }
}

/// The type and always-set flag of `context.token.<name>`, `present` included.
pub(crate) fn token_attr(name: &str) -> Option<(Kind, bool)> {
    if name == "present" {
        return Some((Kind::Bool, true));
    }
    TOKEN
        .iter()
        .find(|a| a.name == name)
        .map(|a| (a.kind, a.always))
}

/// The type and always-set flag of `context.mcp.<name>`.
pub(crate) fn mcp_attr(name: &str) -> Option<(Kind, bool)> {
    match name {
        "method" | "protocol_version" => Some((Kind::String, true)),
        "name" => Some((Kind::String, false)),
        _ => None,
    }
}

/// Whether an action is an MCP method: a JSON-RPC method of the protocol (`initialize`,
/// `ping`, or a name with a `/`, such as `tools/call`). Where a sidecar reads MCP, only an MCP
/// request is decided as one, and it always carries `context.mcp`; any other request naming
/// one as its intent action is refused before the policy.
pub fn is_mcp_method(action: &str) -> bool {
    matches!(action, "initialize" | "ping") || action.contains('/')
}

/// The type and always-set flag of `context.http.<name>`.
pub(crate) fn http_attr(name: &str) -> Option<(Kind, bool)> {
    HTTP.iter()
        .find(|a| a.name == name)
        .map(|a| (a.kind, a.always))
}

/// Which side of a hop asks: the callee's sidecar (`inbound`) or the caller's egress check
/// (`outbound`). Policies see it as `context.direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The callee's sidecar checks an incoming call.
    Inbound,
    /// The caller's sidecar checks a call before it leaves.
    Outbound,
}

/// One hop, as the proxy saw it. Built per request; borrows everything.
#[derive(Clone, Copy, Debug)]
pub struct HopRequest<'a> {
    /// The verified mTLS peer: `principal`.
    pub peer: &'a SpiffeId,
    /// The workload being called: `resource` (inbound: this workload; outbound: the route's
    /// identity).
    pub destination: &'a SpiffeId,
    /// Which side asks.
    pub direction: Direction,
    /// The `intent-action` header value; `None` means the snapshot's default action.
    pub action: Option<&'a str>,
    /// `context.http.method`.
    pub method: &'a str,
    /// `context.http.path`.
    pub path: &'a str,
    /// `context.http.host`.
    pub host: &'a str,
    /// Intent headers, prefix stripped, lowercase names: `("purpose", "support")`. Only those
    /// the schema declares in the action's `context.intent` record reach Cedar, as Strings; when
    /// a name repeats, the first value counts.
    pub intent: &'a [(&'a str, &'a str)],
    /// The verified hop token's facts, if the call carried one.
    pub token: Option<&'a TokenFacts>,
    /// The MCP call, for a request on an MCP path (`context.mcp`); its method is then the
    /// action.
    pub mcp: Option<McpFacts<'a>>,
}

/// One MCP (JSON-RPC) call as the body and its headers agreed on: `context.mcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McpFacts<'a> {
    /// The JSON-RPC method: `tools/call`, `tools/list`, `resources/read`, ...
    pub method: &'a str,
    /// The tool (`tools/call`), resource URI (`resources/read`) or prompt (`prompts/get`) named.
    pub name: Option<&'a str>,
    /// The `MCP-Protocol-Version` header (for `initialize`, the version the body asks for);
    /// empty when neither says.
    pub protocol_version: &'a str,
}

// === impl Direction ===

impl Direction {
    /// `"inbound"` or `"outbound"`, as policies compare it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl HopRequest ===

impl<'a> HopRequest<'a> {
    /// A `GET /` from `peer` to `destination` with no authority, no intent headers and no
    /// token: the base that callers set the facts they have on, with `..`.
    pub fn new(peer: &'a SpiffeId, destination: &'a SpiffeId, direction: Direction) -> Self {
        Self {
            peer,
            destination,
            direction,
            action: None,
            method: "GET",
            path: "/",
            host: "",
            intent: &[],
            token: None,
            mcp: None,
        }
    }
}

impl HopRequest<'_> {
    /// The Cedar context for this hop. `intent_attrs` and `tctx_attrs` are the attribute names
    /// the schema declares for the action in `context.intent` and `context.token.tctx`, sorted;
    /// `usage` says which attributes any policy can observe (the others are left out: building
    /// each costs, reading none changes nothing).
    pub(crate) fn context(
        &self,
        intent_attrs: &[String],
        tctx_attrs: &[String],
        usage: &ContextUsage,
    ) -> Result<Context, String> {
        let mut pairs = Vec::with_capacity(4);
        if usage.has("direction") {
            pairs.push(("direction".to_owned(), string(self.direction.as_str())));
        }
        if let Some(http) = usage.field("http") {
            let fields = HTTP
                .iter()
                .filter(|attr| http.has(attr.name))
                .map(|attr| (attr.name.to_owned(), string((attr.value)(self))));
            pairs.push(("http".to_owned(), record(fields)?));
        }
        if let Some(intent) = usage.field("intent") {
            let fields = intent_attrs
                .iter()
                .filter(|name| intent.has(name))
                .filter_map(|name| self.intent_value(name).map(|v| (name.clone(), string(v))));
            pairs.push(("intent".to_owned(), record(fields)?));
        }
        if let Some(token) = usage.field("token") {
            pairs.push((
                "token".to_owned(),
                token_record(self.token, tctx_attrs, token)?,
            ));
        }
        if let (Some(mcp), Some(observed)) = (&self.mcp, usage.field("mcp")) {
            let mut fields = vec![
                ("method".to_owned(), string(mcp.method)),
                ("protocol_version".to_owned(), string(mcp.protocol_version)),
            ];
            if let Some(name) = mcp.name.filter(|_| observed.has("name")) {
                fields.push(("name".to_owned(), string(name)));
            }
            pairs.push(("mcp".to_owned(), record(fields)?));
        }
        Context::from_pairs(pairs).map_err(|e| e.to_string())
    }

    fn intent_value(&self, name: &str) -> Option<&str> {
        self.intent
            .iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| *value)
    }
}

/// `present` is always set; the other fields when the token has them and a policy observes them.
/// `tctx` holds the entries the schema declares (`tctx_attrs`) that the token has.
fn token_record(
    token: Option<&TokenFacts>,
    tctx_attrs: &[String],
    usage: &ContextUsage,
) -> Result<RestrictedExpression, String> {
    let mut fields = Vec::with_capacity(TOKEN.len() + 2);
    fields.push((
        "present".to_owned(),
        RestrictedExpression::new_bool(token.is_some()),
    ));
    if let Some(token) = token {
        fields.extend(
            TOKEN
                .iter()
                .filter(|attr| usage.has(attr.name))
                .filter_map(|attr| Some((attr.name.to_owned(), (attr.value)(token)?))),
        );
        if let Some(tctx) = usage.field("tctx") {
            let entries = tctx_attrs
                .iter()
                .filter(|name| tctx.has(name))
                .filter_map(|name| {
                    let (_, value) = token.tctx.iter().find(|(k, _)| k == name)?;
                    Some((name.clone(), string(value)))
                });
            fields.push(("tctx".to_owned(), record(entries)?));
        }
    }
    record(fields)
}

fn record(
    fields: impl IntoIterator<Item = (String, RestrictedExpression)>,
) -> Result<RestrictedExpression, String> {
    RestrictedExpression::new_record(fields).map_err(|e| e.to_string())
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

fn string_set(values: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(values.iter().map(|v| string(v)))
}
