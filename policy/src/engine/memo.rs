//! Decisions a snapshot already made, keyed by every fact an evaluation reads.
//!
//! A Cedar evaluation is a pure function of the policies, the entities and the request: no
//! clock, no randomness, no I/O. Within one snapshot (policies and entities fixed) the same
//! principal, action, resource and context always give the same effect, determining policies
//! and errors. So they are kept here and reused; each use still gets its own decision id. A
//! reload builds a new snapshot with an empty memo, so a memoized decision never outlives the
//! policies that made it.
//!
//! The key ([`crate::context::key`]) holds every field of the [`crate::HopRequest`] that the
//! context can be built from, not only those the policies observe: a wider key costs reuse,
//! never correctness. The memo is bounded; when full it starts over.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::DenyReason;

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
