//! From the records of one transaction to its tree of hops.
//!
//! A hop is the records that share a `token_hash`: the caller's outbound record (the token it
//! minted) and the receiver's inbound record (the token it received); a token reused for two
//! requests gives a hop two records on one side. The parent of a hop is the hop whose
//! `token_hash` is its `token_prv`. A parent no record has becomes an absent hop, a
//! placeholder its children hang under. A record without a `token_hash` is a hop of its own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::record::{Record, Side, TimeKey};

/// The deepest a tree nests. A hop token carries at most 64 actors, so a real chain is never
/// deeper; records that claim a longer one are continued at the top level instead.
pub(crate) const MAX_DEPTH: usize = 128;

/// How a hop hangs in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Under the hop whose token its token names as parent.
    Child,
    /// A first hop: its token has no parent (`token_prv` null).
    Origin,
    /// No record has this hop: its children name its token as their parent.
    Absent,
    /// Its parent is one of its own descendants: the records contradict each other.
    Cycle,
    /// It nests deeper than [`MAX_DEPTH`], so it continues at the top level.
    Cut,
}

// === impl Link ===

impl Link {
    /// The word `--json` gives.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Child => "child",
            Self::Origin => "origin",
            Self::Absent => "absent",
            Self::Cycle => "cycle",
            Self::Cut => "cut",
        }
    }
}

/// One hop: one token and the records about it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hop {
    /// The token's hash (`token_hash`), when a record names it.
    pub(crate) token_hash: Option<String>,
    /// Its parent token's hash (`token_prv`), when a record names it.
    pub(crate) token_prv: Option<String>,
    /// The token's `jti`.
    pub(crate) jti: Option<String>,
    /// Who called: the outbound record's `principal`, else the inbound record's (the mTLS
    /// peer). For an absent hop, unknown.
    pub(crate) caller: Option<String>,
    /// Who was called: the inbound record's `resource`, else the outbound record's. For an
    /// absent hop, the caller of its children.
    pub(crate) destination: Option<String>,
    /// The Cedar action.
    pub(crate) action: Option<String>,
    /// Its records: outbound first, then inbound, then of an unknown side; each side in time
    /// order. Empty for an absent hop.
    pub(crate) records: Vec<Record>,
}

// === impl Hop ===

impl Hop {
    /// A hop of `records`, all about one token; the fields come from the first record that has
    /// each, the outbound side first.
    fn of(mut records: Vec<Record>) -> Self {
        records.sort_by(|a, b| a.side.cmp(&b.side).then(a.order(b)));
        let first = |key: &str, sides: &[Side]| {
            sides.iter().find_map(|side| {
                records
                    .iter()
                    .filter(|r| r.side == *side)
                    .find_map(|r| r.str(key))
                    .map(str::to_owned)
            })
        };
        let all = [Side::Outbound, Side::Inbound, Side::Unknown];
        Self {
            token_hash: first("token_hash", &all),
            token_prv: first("token_prv", &all),
            jti: first("token_jti", &all),
            caller: first("principal", &all),
            destination: first("resource", &[Side::Inbound, Side::Outbound, Side::Unknown]),
            action: first("action", &all),
            records,
        }
    }

    /// Whether no record has this hop.
    pub(crate) fn is_absent(&self) -> bool {
        self.records.is_empty()
    }

    /// Its earliest record: when the hop happened.
    fn earliest(&self) -> Option<&Record> {
        self.records.iter().min_by(|a, b| a.order(b))
    }
}

/// A hop in the tree, with the hops that relayed its token below it.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// The hop.
    pub(crate) hop: Hop,
    /// How it hangs in the tree.
    pub(crate) link: Link,
    /// The hops whose tokens name this hop's as parent, in time order.
    pub(crate) children: Vec<Self>,
}

/// The tree of one transaction.
#[derive(Debug, Clone)]
pub(crate) struct Trace {
    /// The transaction id.
    pub(crate) txn: String,
    /// The end users the records name (`sub`), in order of first appearance; one, normally.
    pub(crate) subs: Vec<String>,
    /// How many records of the transaction there are.
    pub(crate) records: usize,
    /// How many hops have a record.
    pub(crate) hops: usize,
    /// The sources that hold records of the transaction, in the order given.
    pub(crate) sources: Vec<String>,
    /// How many sources were read.
    pub(crate) sources_read: usize,
    /// The top-level hops: first hops, absent parents, then hops continued from elsewhere.
    pub(crate) roots: Vec<Node>,
}

/// The tree of `records`, all of one transaction.
pub(crate) fn build(txn: &str, records: Vec<Record>, sources_read: usize) -> Trace {
    let count = records.len();
    let mut subs: Vec<String> = Vec::new();
    let mut sources: Vec<(usize, String)> = Vec::new();
    for record in &records {
        if let Some(sub) = record.str("sub")
            && !subs.iter().any(|s| s == sub)
        {
            subs.push(sub.to_owned());
        }
        if !sources.iter().any(|(i, _)| *i == record.source_index) {
            sources.push((record.source_index, record.source.clone()));
        }
    }
    sources.sort();

    let mut hops = group(records);
    let present = hops.len();
    add_absent_parents(&mut hops);
    let roots = link(hops);
    Trace {
        txn: txn.to_owned(),
        subs,
        records: count,
        hops: present,
        sources: sources.into_iter().map(|(_, name)| name).collect(),
        sources_read,
        roots,
    }
}

/// The hops of `records`: one per `token_hash`, one per record without one.
fn group(records: Vec<Record>) -> Vec<Hop> {
    let mut by_hash: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    let mut loose: Vec<Record> = Vec::new();
    for record in records {
        match record.str("token_hash").map(str::to_owned) {
            Some(hash) => by_hash.entry(hash).or_default().push(record),
            None => loose.push(record),
        }
    }
    by_hash
        .into_values()
        .map(Hop::of)
        .chain(loose.into_iter().map(|r| Hop::of(vec![r])))
        .collect()
}

/// Adds an absent hop for every parent hash that no record has, its destination the caller of
/// its children when they agree.
fn add_absent_parents(hops: &mut Vec<Hop>) {
    let known: BTreeSet<String> = hops.iter().filter_map(|h| h.token_hash.clone()).collect();
    let mut absent: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for hop in hops.iter() {
        if let Some(prv) = &hop.token_prv
            && !known.contains(prv)
        {
            absent
                .entry(prv.clone())
                .or_default()
                .push(hop.caller.clone());
        }
    }
    for (hash, callers) in absent {
        let first = callers.first().cloned().flatten();
        let agree = callers.iter().all(|c| *c == first);
        hops.push(Hop {
            token_hash: Some(hash),
            destination: if agree { first } else { None },
            ..Hop::default()
        });
    }
}

/// Links the hops into trees and returns their roots.
fn link(hops: Vec<Hop>) -> Vec<Node> {
    let index: BTreeMap<String, usize> = hops
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.token_hash.clone().map(|hash| (hash, i)))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); hops.len()];
    let mut roots: Vec<usize> = Vec::new();
    for (i, hop) in hops.iter().enumerate() {
        match hop.token_prv.as_ref().and_then(|prv| index.get(prv)) {
            Some(&parent) if parent != i => {
                if let Some(list) = children.get_mut(parent) {
                    list.push(i);
                }
            }
            // A token that is its own parent: left for the cycle pass.
            Some(_) => {}
            None => roots.push(i),
        }
    }
    let keys: Vec<_> = (0..hops.len())
        .map(|i| sort_key(&hops, &children, i))
        .collect();
    let key = |i: &usize| keys.get(*i).cloned();
    for list in &mut children {
        list.sort_by_cached_key(key);
    }
    roots.sort_by_cached_key(key);

    let mut slots: Vec<Option<Hop>> = hops.into_iter().map(Some).collect();
    let mut queue: VecDeque<(usize, Link)> = roots
        .into_iter()
        .map(|i| {
            let absent = slots
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(Hop::is_absent);
            (i, if absent { Link::Absent } else { Link::Origin })
        })
        .collect();
    let mut out = Vec::new();
    loop {
        while let Some((i, link)) = queue.pop_front() {
            let mut cut = Vec::new();
            if let Some(node) = subtree(i, link, 0, &mut slots, &children, &mut cut) {
                out.push(node);
            }
            queue.extend(cut.into_iter().map(|i| (i, Link::Cut)));
        }
        // What is left is on a cycle of parents, or below one: each such group from its
        // earliest hop on.
        let left: Vec<usize> = (0..slots.len())
            .filter(|i| slots.get(*i).is_some_and(Option::is_some))
            .collect();
        let Some(first) = left.into_iter().min_by(|a, b| {
            let time = |i: &usize| {
                slots
                    .get(*i)
                    .and_then(Option::as_ref)
                    .and_then(Hop::earliest)
            };
            match (time(a), time(b)) {
                (Some(x), Some(y)) => x.order(y),
                _ => a.cmp(b),
            }
        }) else {
            break;
        };
        queue.push_back((first, Link::Cycle));
    }
    out
}

/// The node of hop `i` and its descendants, taking them out of `slots`; hops below
/// [`MAX_DEPTH`] are left in `cut` instead.
fn subtree(
    i: usize,
    link: Link,
    depth: usize,
    slots: &mut [Option<Hop>],
    children: &[Vec<usize>],
    cut: &mut Vec<usize>,
) -> Option<Node> {
    let hop = slots.get_mut(i).and_then(Option::take)?;
    let mut nodes = Vec::new();
    for &child in children.get(i).map(Vec::as_slice).unwrap_or_default() {
        if depth.saturating_add(1) >= MAX_DEPTH {
            if slots.get(child).is_some_and(Option::is_some) {
                cut.push(child);
            }
        } else if let Some(node) = subtree(
            child,
            Link::Child,
            depth.saturating_add(1),
            slots,
            children,
            cut,
        ) {
            nodes.push(node);
        }
    }
    Some(Node {
        hop,
        link,
        children: nodes,
    })
}

/// The order of siblings: by the earliest record (an absent hop: its earliest child's), then
/// by where it was read.
fn sort_key(hops: &[Hop], children: &[Vec<usize>], i: usize) -> (TimeKey, usize, usize) {
    let hop = hops.get(i);
    let record = hop.and_then(Hop::earliest).or_else(|| {
        children
            .get(i)
            .into_iter()
            .flatten()
            .filter_map(|c| hops.get(*c).and_then(Hop::earliest))
            .min_by(|a, b| a.order(b))
    });
    record.map_or((TimeKey::None, usize::MAX, usize::MAX), |r| {
        (r.time(), r.source_index, r.line)
    })
}
