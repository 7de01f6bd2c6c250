//! `TokenFacts`: what Cedar sees of a verified hop token (`context.token`).
//!
//! The proxy verifies the token; this crate only reads the claims it was handed. Every value here
//! is data: it reaches Cedar as a string or set value, never as policy text (CED-04).

use hopgate_config::SpiffeId;
use serde_json::Value;
use thiserror::Error;

use crate::PolicyError;

/// The most actors an `act` chain may hold before the claims are refused. The proxy caps chains
/// at `token.max_depth` (default 8) long before this; the bound keeps a hostile claim set from
/// costing more than a few hundred steps here.
pub const MAX_ACTORS: usize = 64;

/// The facts of a verified hop token that policies may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenFacts {
    /// `sub`: the end user, or the origin workload's SPIFFE ID.
    pub sub: String,
    /// `iss`: the SPIFFE ID of the workload that minted the token.
    pub iss: String,
    /// `txn`: the transaction id, unchanged along the chain.
    pub txn: Option<String>,
    /// `scope`, split on spaces.
    pub scope: Vec<String>,
    /// The `act` chain's `sub`s, outermost (most recent actor) first.
    pub actors: Vec<String>,
    /// `tctx`: the transaction context the origin signed in, its String entries sorted by name
    /// (entries of other types are not visible to policies).
    pub tctx: Vec<(String, String)>,
}

// === impl TokenFacts ===

impl TokenFacts {
    /// Reads the claims of a hop token (docs/tokens.md, "Claims"): `sub` and `iss` (strings,
    /// required), `txn` (string, optional), `scope` (space-separated string, optional) and `act`
    /// (RFC 8693 nested `{ "sub": ..., "act": { ... } }`, optional, read by [`act_chain`]) and
    /// `tctx` (an object, optional; its String entries). Other claims are ignored.
    ///
    /// # Errors
    /// [`PolicyError::Claims`] when `claims` is not an object, `sub` or `iss` is missing or not
    /// a string, `txn` or `scope` is not a string, `tctx` is not an object, or [`act_chain`]
    /// refuses `act` (at most [`MAX_ACTORS`] actors).
    pub fn from_claims(claims: &Value) -> Result<Self, PolicyError> {
        let object = claims
            .as_object()
            .ok_or_else(|| claims_error("the claims are not a JSON object"))?;
        let sub = required_string(object.get("sub"), "sub")?;
        let iss = required_string(object.get("iss"), "iss")?;
        let txn = optional_string(object.get("txn"), "txn")?;
        let scope = optional_string(object.get("scope"), "scope")?
            .map(|scope| {
                scope
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let actors = act_chain(object.get("act"), MAX_ACTORS)
            .map_err(|err| claims_error(&err.to_string()))?;
        let tctx = match object.get("tctx") {
            None => Vec::new(),
            Some(Value::Object(entries)) => tctx_entries(entries),
            Some(_) => return Err(claims_error("`tctx` is not a JSON object")),
        };
        Ok(Self {
            sub,
            iss,
            txn,
            scope,
            actors,
            tctx,
        })
    }

    /// Whether the chain was started for an end user: its `sub` came from a verified origin
    /// token. A chain a workload started for itself has that workload's SPIFFE ID as `sub`, and
    /// an origin token whose `sub` is a SPIFFE ID is refused, so the two never look alike.
    pub fn enduser(&self) -> bool {
        SpiffeId::parse(&self.sub).is_err()
    }

    /// How many actors the `act` chain holds (0 without `act`).
    pub fn depth(&self) -> usize {
        self.actors.len()
    }

    /// The workload that started the chain: `sub` when it is a SPIFFE ID, else the deepest
    /// (least recent) actor; `None` when `sub` is an end user and there is no `act`.
    pub fn origin(&self) -> Option<&str> {
        if SpiffeId::parse(&self.sub).is_ok() {
            return Some(&self.sub);
        }
        self.actors.last().map(String::as_str)
    }
}

/// The String entries of a `tctx` object, sorted by name: what `context.token.tctx` holds.
pub fn tctx_entries(entries: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    let mut tctx: Vec<(String, String)> = entries
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect();
    tctx.sort();
    tctx
}

/// Why an `act` chain was refused, and at which level (0: the outermost).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ActError {
    /// The chain holds more actors than allowed.
    #[error("`act` holds more than {0} actors")]
    TooDeep(usize),
    /// A level is not a JSON object.
    #[error("`act` level {0} is not an object")]
    NotObject(usize),
    /// A level has no `sub`, or one that is not a string.
    #[error("`act` level {0} has no string `sub`")]
    NoSub(usize),
    /// A level's `sub` is not a canonical SPIFFE ID: every actor is a workload.
    #[error("`act` level {0}'s `sub` is not a canonical SPIFFE ID")]
    NotWorkload(usize),
}

/// The actors of an RFC 8693 `act` chain (`{ "sub": ..., "act": { ... } }`), outermost (most
/// recent) first: the one walker of `act`, for the proxy's token verifier and for
/// [`TokenFacts::from_claims`] alike. Past `max` actors it stops without walking further.
///
/// # Errors
/// [`ActError`], naming the level at fault.
pub fn act_chain(act: Option<&Value>, max: usize) -> Result<Vec<String>, ActError> {
    let mut actors = Vec::new();
    let mut level = act;
    while let Some(value) = level {
        let at = actors.len();
        if at == max {
            return Err(ActError::TooDeep(max));
        }
        let Value::Object(object) = value else {
            return Err(ActError::NotObject(at));
        };
        let sub = object
            .get("sub")
            .and_then(Value::as_str)
            .ok_or(ActError::NoSub(at))?;
        if SpiffeId::parse(sub).is_err() {
            return Err(ActError::NotWorkload(at));
        }
        actors.push(sub.to_owned());
        level = object.get("act");
    }
    Ok(actors)
}

fn required_string(value: Option<&Value>, name: &str) -> Result<String, PolicyError> {
    optional_string(value, name)?.ok_or_else(|| claims_error(&format!("`{name}` is missing")))
}

fn optional_string(value: Option<&Value>, name: &str) -> Result<Option<String>, PolicyError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(claims_error(&format!("`{name}` is not a string"))),
    }
}

fn claims_error(message: &str) -> PolicyError {
    PolicyError::Claims(message.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
    const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";

    #[test]
    fn design_example_gives_actors_depth_and_origin() {
        let claims = json!({
            "sub": "alice", "iss": INFERENCE, "txn": "t-1", "scope": "tickets.read  inference.generate",
            "act": { "sub": INFERENCE, "act": { "sub": AGENT } },
        });
        let facts = TokenFacts::from_claims(&claims).unwrap();
        assert_eq!(facts.actors, [INFERENCE, AGENT]);
        assert_eq!(facts.depth(), 2);
        assert_eq!(facts.origin(), Some(AGENT));
        assert_eq!(facts.scope, ["tickets.read", "inference.generate"]);
        assert_eq!(facts.txn.as_deref(), Some("t-1"));
    }

    #[test]
    fn tctx_keeps_its_string_entries_sorted_and_enduser_follows_sub() {
        let claims = json!({
            "sub": "alice", "iss": AGENT,
            "tctx": { "team": "red", "purpose": "support", "level": 3 },
        });
        let facts = TokenFacts::from_claims(&claims).unwrap();
        assert_eq!(
            facts.tctx,
            [
                ("purpose".to_owned(), "support".to_owned()),
                ("team".to_owned(), "red".to_owned())
            ]
        );
        assert!(facts.enduser());
        let workload = TokenFacts::from_claims(&json!({ "sub": AGENT, "iss": AGENT })).unwrap();
        assert!(!workload.enduser() && workload.tctx.is_empty());
    }

    #[test]
    fn origin_is_sub_when_sub_is_a_spiffe_id() {
        let claims = json!({ "sub": AGENT, "iss": AGENT });
        let facts = TokenFacts::from_claims(&claims).unwrap();
        assert_eq!(facts.depth(), 0);
        assert_eq!(facts.origin(), Some(AGENT));
        assert!(facts.scope.is_empty());
    }

    #[test]
    fn origin_is_none_for_an_end_user_without_actors() {
        let facts = TokenFacts::from_claims(&json!({ "sub": "alice", "iss": AGENT })).unwrap();
        assert_eq!(facts.origin(), None);
    }

    #[test]
    fn claims_of_the_wrong_shape_are_refused_with_the_claim_named() {
        let cases = [
            (json!([]), "not a JSON object"),
            (json!({ "iss": AGENT }), "`sub` is missing"),
            (json!({ "sub": 1, "iss": AGENT }), "`sub` is not a string"),
            (
                json!({ "sub": "a", "iss": AGENT, "scope": ["x"] }),
                "`scope` is not a string",
            ),
            (
                json!({ "sub": "a", "iss": AGENT, "act": "x" }),
                "`act` level 0",
            ),
            (
                json!({ "sub": "a", "iss": AGENT, "act": { "act": {} } }),
                "`act` level 0 has no",
            ),
            (
                json!({ "sub": "a", "iss": AGENT, "act": { "sub": AGENT, "act": { "sub": "bob" } } }),
                "`act` level 1's `sub` is not a canonical SPIFFE ID",
            ),
            (
                json!({ "sub": "a", "iss": AGENT, "tctx": "support" }),
                "`tctx` is not a JSON object",
            ),
        ];
        for (claims, expected) in cases {
            let err = TokenFacts::from_claims(&claims).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn an_act_chain_past_the_bound_is_refused() {
        let mut act = json!({ "sub": AGENT });
        for _ in 0..MAX_ACTORS {
            act = json!({ "sub": AGENT, "act": act });
        }
        let err = TokenFacts::from_claims(&json!({ "sub": "a", "iss": AGENT, "act": act }));
        assert!(err.unwrap_err().to_string().contains("more than 64"));
    }

    proptest! {
        #[test]
        fn from_claims_does_not_panic(sub in ".*", scope in ".*", depth in 0usize..80) {
            let mut act = Value::Null;
            for i in 0..depth {
                act = if i % 7 == 6 { json!({ "act": act }) } else { json!({ "sub": sub, "act": act }) };
            }
            let _ = TokenFacts::from_claims(&json!({ "sub": sub, "iss": "x", "scope": scope, "act": act }));
        }
    }
}
