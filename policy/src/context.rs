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
//!   token:  { present, sub?, iss?, txn?, scope?, actors?, depth?, origin? },
//! }
//! ```
//!
//! The schema check (`schema.rs`) reads the same tables, so a schema that validates declares
//! exactly the types filled here. A new attribute is one row in a table here (with a new
//! [`HopRequest`] field, if it needs one, which [`key`] must then take too: it destructures
//! the request without `..`, so forgetting is a compile error), the proxy's code filling it,
//! and the shipped example schema.

use std::fmt;
use std::fmt::Write as _;

use cedar_policy::{Context, RestrictedExpression};
use hopgate_config::SpiffeId;

use crate::TokenFacts;
use crate::usage::ContextUsage;

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

/// `context.token`, besides `present` (a `Bool`, always set): each set when the call carries
/// a token that has it.
pub(crate) const TOKEN: [Attr<TokenValue>; 7] = [
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
        }
    }
}

impl HopRequest<'_> {
    /// The Cedar context for this hop. `intent_attrs` are the intent attribute names the schema
    /// declares for the action, sorted; `usage` says which attributes any policy can observe
    /// (the others are left out: building each costs, reading none changes nothing).
    pub(crate) fn context(
        &self,
        intent_attrs: &[String],
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
            pairs.push(("token".to_owned(), token_record(self.token, token)?));
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
fn token_record(
    token: Option<&TokenFacts>,
    usage: &ContextUsage,
) -> Result<RestrictedExpression, String> {
    let mut fields = Vec::with_capacity(TOKEN.len() + 1);
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

/// Every fact of `req` under `action` that a policy can observe, each field length-prefixed
/// (and each list count-prefixed) so that no two different requests share a key.
///
/// `token.txn` is written only when `usage` says a policy observes it: it is new with every
/// transaction, so keying on it unobserved would make every transaction miss the memo, and a
/// field the context leaves out (see [`token_record`]) cannot change a decision.
///
/// The request and its token are destructured without `..` on purpose: a field added to
/// [`HopRequest`] or [`TokenFacts`] does not compile until it is written here (or skipped with
/// a reason), so it can never silently share a cached decision with requests that differ only
/// in it. `keys_differ_in_every_field` checks each field is written.
pub(crate) fn key(req: &HopRequest<'_>, action: &str, usage: &ContextUsage) -> String {
    let txn_observed = usage.field("token").is_some_and(|token| token.has("txn"));
    let HopRequest {
        peer,
        destination,
        direction,
        // The header's value, or none: `action` is what it resolved to, which is what decides.
        action: _,
        method,
        path,
        host,
        intent,
        token,
    } = req;
    let mut key = Key(String::with_capacity(256));
    key.field(action);
    key.field(peer.as_str());
    key.field(destination.as_str());
    key.field(direction.as_str());
    key.field(method);
    key.field(path);
    key.field(host);
    key.count(intent.len());
    for (name, value) in *intent {
        key.field(name);
        key.field(value);
    }
    match token {
        None => key.field("-"),
        Some(TokenFacts {
            sub,
            iss,
            txn,
            scope,
            actors,
        }) => {
            key.field("+");
            key.field(sub);
            key.field(iss);
            match txn {
                _ if !txn_observed => key.field("~"),
                None => key.field("-"),
                Some(txn) => {
                    key.field("+");
                    key.field(txn);
                }
            }
            for list in [scope, actors] {
                key.count(list.len());
                for item in list {
                    key.field(item);
                }
            }
        }
    }
    key.0
}

/// A key being written, without an allocation per number.
struct Key(String);

impl Key {
    fn field(&mut self, s: &str) {
        // Writing to a String cannot fail.
        let _ = write!(self.0, "{}:", s.len());
        self.0.push_str(s);
    }

    fn count(&mut self, n: usize) {
        let _ = write!(self.0, "#{n};");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    /// The key as policies that observe everything would have it.
    fn key(req: &HopRequest<'_>, action: &str) -> String {
        super::key(req, action, &ContextUsage::everything())
    }

    #[test]
    fn an_unobserved_txn_is_left_out_of_the_key_and_an_observed_one_is_not() {
        let (peer, dest) = (id("spiffe://example.org/a"), id("spiffe://example.org/b"));
        let facts = |txn: &str| TokenFacts {
            sub: "alice".to_owned(),
            iss: "spiffe://example.org/a".to_owned(),
            txn: Some(txn.to_owned()),
            scope: vec!["read".to_owned()],
            actors: vec![],
        };
        let (t1, t2) = (facts("t1"), facts("t2"));
        let request = |token| HopRequest {
            peer: &peer,
            destination: &dest,
            direction: Direction::Inbound,
            action: None,
            method: "GET",
            path: "/",
            host: "b",
            intent: &[],
            token: Some(token),
        };
        let policies = |text: &str| ContextUsage::of(&text.parse().unwrap());
        let scope_only = policies(
            "permit (principal, action, resource) when { context.token.scope.contains(\"read\") };",
        );
        assert_eq!(
            super::key(&request(&t1), "call", &scope_only),
            super::key(&request(&t2), "call", &scope_only),
            "two transactions, one decision"
        );
        let reads_txn = policies(
            "forbid (principal, action, resource) when { context.token has txn && context.token.txn == \"t1\" };",
        );
        assert_ne!(
            super::key(&request(&t1), "call", &reads_txn),
            super::key(&request(&t2), "call", &reads_txn)
        );
    }

    #[test]
    fn keys_differ_in_every_field() {
        let (peer, dest, other) = (
            id("spiffe://example.org/a"),
            id("spiffe://example.org/b"),
            id("spiffe://example.org/c"),
        );
        let token = TokenFacts {
            sub: "alice".to_owned(),
            iss: "spiffe://example.org/a".to_owned(),
            txn: Some("t1".to_owned()),
            scope: vec!["read".to_owned()],
            actors: vec!["spiffe://example.org/a".to_owned()],
        };
        let intent = [("purpose", "support")];
        let other_intent = [("purpose", "billing")];
        let base = HopRequest {
            peer: &peer,
            destination: &dest,
            direction: Direction::Inbound,
            action: None,
            method: "GET",
            path: "/",
            host: "b",
            intent: &intent,
            token: Some(&token),
        };
        let tokens = [
            (
                "sub",
                TokenFacts {
                    sub: "bob".to_owned(),
                    ..token.clone()
                },
            ),
            (
                "iss",
                TokenFacts {
                    iss: "spiffe://example.org/c".to_owned(),
                    ..token.clone()
                },
            ),
            (
                "txn",
                TokenFacts {
                    txn: None,
                    ..token.clone()
                },
            ),
            (
                "scope",
                TokenFacts {
                    scope: vec!["write".to_owned()],
                    ..token.clone()
                },
            ),
            (
                "actors",
                TokenFacts {
                    actors: vec![],
                    ..token.clone()
                },
            ),
        ];
        let base_key = key(&base, "call");
        let mut variants = vec![
            ("action", key(&base, "read")),
            (
                "peer",
                key(
                    &HopRequest {
                        peer: &other,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "destination",
                key(
                    &HopRequest {
                        destination: &other,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "direction",
                key(
                    &HopRequest {
                        direction: Direction::Outbound,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "method",
                key(
                    &HopRequest {
                        method: "POST",
                        ..base
                    },
                    "call",
                ),
            ),
            ("path", key(&HopRequest { path: "/x", ..base }, "call")),
            ("host", key(&HopRequest { host: "c", ..base }, "call")),
            (
                "intent",
                key(
                    &HopRequest {
                        intent: &other_intent,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "token",
                key(
                    &HopRequest {
                        token: None,
                        ..base
                    },
                    "call",
                ),
            ),
        ];
        for (field, token) in &tokens {
            variants.push((
                field,
                key(
                    &HopRequest {
                        token: Some(token),
                        ..base
                    },
                    "call",
                ),
            ));
        }
        for (field, variant) in &variants {
            assert_ne!(*variant, base_key, "`{field}` is not part of the memo key");
        }
    }

    #[test]
    fn every_filled_attribute_has_a_type_and_one_name() {
        let mut names: Vec<&str> = TOKEN.iter().map(|a| a.name).collect();
        names.push("present");
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            TOKEN.len() + 1,
            "a token attribute is listed twice"
        );
        assert_eq!(token_attr("present"), Some((Kind::Bool, true)));
        assert_eq!(http_attr("host"), Some((Kind::String, true)));
        assert_eq!(http_attr("query"), None);
    }

    #[test]
    fn direction_displays_as_policies_compare_it() {
        assert_eq!(Direction::Inbound.to_string(), "inbound");
        assert_eq!(Direction::Outbound.to_string(), "outbound");
    }
}
