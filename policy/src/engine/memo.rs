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
use crate::HopRequest;

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
pub(crate) fn key(req: &HopRequest<'_>, action: &str) -> String {
    let mut key = Key(String::with_capacity(256));
    key.field(action);
    key.field(req.peer.as_str());
    key.field(req.destination.as_str());
    key.field(req.direction.as_str());
    key.field(req.method);
    key.field(req.path);
    key.field(req.host);
    key.count(req.intent.len());
    for (name, value) in req.intent {
        key.field(name);
        key.field(value);
    }
    match req.token {
        None => key.field("-"),
        Some(token) => {
            key.field("+");
            key.field(&token.sub);
            key.field(&token.iss);
            match &token.txn {
                None => key.field("-"),
                Some(txn) => {
                    key.field("+");
                    key.field(txn);
                }
            }
            for list in [&token.scope, &token.actors] {
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
