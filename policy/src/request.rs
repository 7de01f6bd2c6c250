//! `HopRequest`: the Cedar-free facts the proxy hands over for one hop, and how they become a
//! Cedar `context` built from typed values (no JSON, no per-request schema pass).
//!
//! ```text
//! context = {
//!   direction: "inbound" | "outbound",
//!   http:   { method, path, host },
//!   intent: { <the intent headers the schema declares for the action> },
//!   token:  { present, sub?, iss?, txn?, scope?, actors?, depth?, origin? },
//! }
//! ```

use std::fmt;

use cedar_policy::{Context, RestrictedExpression};
use hopgate_config::SpiffeId;

use crate::TokenFacts;
use crate::usage::ContextUsage;

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
            let fields = [
                ("method", self.method),
                ("path", self.path),
                ("host", self.host),
            ];
            let fields = fields
                .into_iter()
                .filter(|(name, _)| http.has(name))
                .map(|(name, value)| (name.to_owned(), string(value)));
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
    let mut fields = vec![(
        "present".to_owned(),
        RestrictedExpression::new_bool(token.is_some()),
    )];
    let Some(token) = token else {
        return record(fields);
    };
    let mut add = |name: &str, value: &dyn Fn() -> RestrictedExpression| {
        if usage.has(name) {
            fields.push((name.to_owned(), value()));
        }
    };
    add("sub", &|| string(&token.sub));
    add("iss", &|| string(&token.iss));
    add("scope", &|| string_set(&token.scope));
    add("actors", &|| string_set(&token.actors));
    add("depth", &|| {
        RestrictedExpression::new_long(i64::try_from(token.depth()).unwrap_or(i64::MAX))
    });
    if let Some(txn) = &token.txn {
        add("txn", &|| string(txn));
    }
    if let Some(origin) = token.origin() {
        add("origin", &|| string(origin));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_displays_as_policies_compare_it() {
        assert_eq!(Direction::Inbound.to_string(), "inbound");
        assert_eq!(Direction::Outbound.to_string(), "outbound");
    }
}
