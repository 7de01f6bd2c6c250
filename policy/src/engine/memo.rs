//! Decisions a snapshot already made, keyed by every fact an evaluation reads.
//!
//! A Cedar evaluation is a pure function of the policies, the entities and the request: no
//! clock, no randomness, no I/O. Within one snapshot (policies and entities fixed) the same
//! principal, action, resource and context always give the same effect, determining policies
//! and errors. So they are kept here and reused; each use still gets its own decision id. A
//! reload builds a new snapshot with an empty memo, so a memoized decision never outlives the
//! policies that made it.
//!
//! The key holds every field of the [`HopRequest`] that the context can be built from, not only
//! those the policies observe: a wider key costs reuse, never correctness. The memo is bounded;
//! when full it starts over.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use super::DenyReason;
use crate::{HopRequest, TokenFacts};

/// At most this many decisions are kept per snapshot.
const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct DecisionMemo {
    decisions: Mutex<HashMap<String, Memoized>>,
}

/// What a decision says besides its id.
#[derive(Clone, Debug)]
pub(crate) struct Memoized {
    pub(crate) reason: Option<DenyReason>,
    pub(crate) policies: Vec<String>,
    pub(crate) errors: Vec<String>,
}

// === impl DecisionMemo ===

impl DecisionMemo {
    pub(crate) fn get(&self, key: &str) -> Option<Memoized> {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    pub(crate) fn insert(&self, key: String, decision: Memoized) {
        let mut decisions = self
            .decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if decisions.len() >= CAPACITY {
            decisions.clear();
        }
        decisions.insert(key, decision);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Every fact of `req` under `action`, each field length-prefixed (and each list
/// count-prefixed) so that no two different requests share a key.
///
/// The request and its token are destructured without `..` on purpose: a field added to
/// [`HopRequest`] or [`TokenFacts`] does not compile until it is written here (or skipped with
/// a reason), so it can never silently share a cached decision with requests that differ only
/// in it. `keys_differ_in_every_field` checks each field is written.
pub(crate) fn key(req: &HopRequest<'_>, action: &str) -> String {
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
    use hopgate_config::SpiffeId;

    use super::*;
    use crate::Direction;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
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
        let base_key = key(&base, "call");
        let tokens = [
            TokenFacts {
                sub: "bob".to_owned(),
                ..token.clone()
            },
            TokenFacts {
                iss: "spiffe://example.org/c".to_owned(),
                ..token.clone()
            },
            TokenFacts {
                txn: None,
                ..token.clone()
            },
            TokenFacts {
                scope: vec!["write".to_owned()],
                ..token.clone()
            },
            TokenFacts {
                actors: vec![],
                ..token.clone()
            },
        ];
        let other_intent = [("purpose", "billing")];
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
        for (field, token) in ["sub", "iss", "txn", "scope", "actors"]
            .into_iter()
            .zip(&tokens)
        {
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
}
