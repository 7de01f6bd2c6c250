//! `hopgate_requests_total{direction,decision,code,peer,dest}`, counted without formatting a
//! label on the request path.
//!
//! A request's parties are interned when its record is made: each SPIFFE ID is looked up in a
//! table of the identities seen so far and becomes a small number ([`PartyLabels`]). The table
//! holds at most `telemetry.metrics.max_identities` of them; past that, a new one is `other`,
//! for good (a counter that moved to another label value would reset, and an evicted one would
//! come back as a new series). A party the side does not know, such as the destination of a
//! request refused before its route was found, is `unknown`.
//!
//! When the request ends, direction, decision, status code and the two numbers pack into one
//! `u64`, and that key finds the series' counter in a map of its own. Only a label set seen for
//! the first time takes the write lock, copies the label values (the interned `Arc<str>`s) and
//! creates the series in the [`SortedFamily`] a scrape reads.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use foldhash::fast::FixedState;
use prometheus_client::metrics::counter::Counter;

use super::family::SortedFamily;
use super::labels::{DecisionLabel, Direction, IdentityLabel, RequestLabels};

/// The label value of a party the side does not know.
const UNKNOWN: u16 = 0;
/// The label value of every identity past the cap.
const OTHER: u16 = 1;

/// A request's `peer` and `dest`, interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartyLabels {
    peer: u16,
    dest: u16,
}

/// The request counters.
pub(super) struct RequestSeries {
    family: SortedFamily<RequestLabels, Counter>,
    identities: Identities,
    counters: RwLock<HashMap<u64, Counter, FixedState>>,
}

/// The SPIFFE IDs the labels take, in the order they were first seen, after `unknown` and
/// `other`.
struct Identities {
    cap: usize,
    table: RwLock<Table>,
}

struct Table {
    index: HashMap<Arc<str>, u16, FixedState>,
    names: Vec<Arc<str>>,
}

// === impl PartyLabels ===

impl PartyLabels {
    /// PartyLabels the side does not know (used where no record is made).
    pub const UNKNOWN: Self = Self {
        peer: UNKNOWN,
        dest: UNKNOWN,
    };
}

// === impl RequestSeries ===

impl RequestSeries {
    /// No series yet; at most `max_identities` distinct `peer`/`dest` values.
    pub(super) fn new(max_identities: usize) -> Self {
        Self {
            family: SortedFamily::new(),
            identities: Identities::new(max_identities),
            counters: RwLock::new(HashMap::with_hasher(FixedState::with_seed(0))),
        }
    }

    /// What a scrape reads.
    pub(super) fn family(&self) -> SortedFamily<RequestLabels, Counter> {
        self.family.clone()
    }

    /// The interned `peer` and `dest` of a request.
    pub(super) fn parties(&self, peer: Option<&str>, dest: Option<&str>) -> PartyLabels {
        PartyLabels {
            peer: self.identities.intern(peer),
            dest: self.identities.intern(dest),
        }
    }

    /// Counts one request.
    pub(super) fn count(
        &self,
        direction: Direction,
        decision: DecisionLabel,
        code: u16,
        parties: PartyLabels,
    ) {
        let key = u64::from(direction as u8)
            | u64::from(decision as u8) << 8
            | u64::from(code) << 16
            | u64::from(parties.peer) << 32
            | u64::from(parties.dest) << 48;
        if let Some(counter) = self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            counter.inc();
            return;
        }
        let labels = RequestLabels {
            direction,
            decision,
            code,
            peer: self.identities.label(parties.peer),
            dest: self.identities.label(parties.dest),
        };
        let counter = self.family.get_or_create(&labels);
        counter.inc();
        self.counters
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(counter);
    }
}

// === impl Identities ===

impl Identities {
    fn new(cap: usize) -> Self {
        // The cap is at most 10,000 (config), far inside the numbers a `u16` gives.
        let cap = cap.min(usize::from(u16::MAX) - 2);
        Self {
            cap,
            table: RwLock::new(Table {
                index: HashMap::with_hasher(FixedState::with_seed(0)),
                names: vec![Arc::from("unknown"), Arc::from("other")],
            }),
        }
    }

    fn intern(&self, id: Option<&str>) -> u16 {
        let Some(id) = id else {
            return UNKNOWN;
        };
        if let Some(&n) = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .index
            .get(id)
        {
            return n;
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&n) = table.index.get(id) {
            return n;
        }
        let seen = table.names.len().saturating_sub(2);
        let Ok(n) = u16::try_from(table.names.len()) else {
            return OTHER;
        };
        if seen >= self.cap {
            return OTHER;
        }
        let name: Arc<str> = Arc::from(id);
        table.names.push(Arc::clone(&name));
        table.index.insert(name, n);
        n
    }

    fn label(&self, n: u16) -> IdentityLabel {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let name = table
            .names
            .get(usize::from(n))
            .or_else(|| table.names.get(usize::from(UNKNOWN)))
            .map_or_else(|| Arc::from("unknown"), Arc::clone);
        IdentityLabel(name)
    }
}
