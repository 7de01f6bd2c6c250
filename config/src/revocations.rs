//! `revocations.yaml`: hop tokens, subjects and workloads refused whatever the policies say.
//!
//! The file is a YAML list; each entry names exactly one key and why it is revoked:
//!
//! ```yaml
//! - txn: Zk9hY2VudHJhbHRyYW5zYWN0   # a transaction id (hop token `txn`)
//!   reason: incident 4711
//! - peer: spiffe://demo.local/ns/agents/sa/support-agent
//!   reason: compromised workload
//!   until: 2026-12-31T00:00:00Z
//! ```
//!
//! `txn`, `jti` and `sub` match the hop token's claims of that name, `peer` the calling
//! workload's SPIFFE ID and `actor` any SPIFFE ID of the token's delegation chain. An entry with
//! `until` stops matching at that instant.
//!
//! An invalid file never reads as an empty list (RVK-05): a file with nothing in it is an error
//! (`[]` is the empty list), so is a document that is not a list, and one bad entry fails the
//! whole file. Every problem is reported at once, each with its entry's path (`[3].until`).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::check::{Check, at};
use crate::{FieldError, SpiffeId, yaml};

/// The most entries a revocations file may hold.
pub const MAX_REVOCATIONS: usize = 20_000;

/// The longest `txn` or `jti` value, in bytes.
const MAX_TOKEN_ID_LEN: usize = 256;

/// The longest `sub` value, in bytes.
const MAX_SUB_LEN: usize = 1024;

/// The longest `reason`, in bytes.
const MAX_REASON_LEN: usize = 1024;

/// How many problems one parse reports; the rest are counted.
const MAX_REPORTED: usize = 100;

/// The message of a file with nothing in it (RVK-05).
const EMPTY: &str = "empty; write `[]` for no revocations";

/// What an entry revokes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RevocationKey {
    /// The hop token's `txn` claim: one transaction, every hop of it.
    Txn,
    /// The hop token's `jti` claim: one token.
    Jti,
    /// The hop token's `sub` claim: one end user or subject.
    Sub,
    /// The calling workload's SPIFFE ID (the principal of the hop).
    Peer,
    /// Any SPIFFE ID of the token's delegation chain: its `iss` and every `act` sub.
    Actor,
}

/// One entry of `revocations.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    key: RevocationKey,
    value: String,
    reason: String,
    until: Option<SystemTime>,
}

/// The parsed `revocations.yaml`, indexed by key kind and value.
#[derive(Clone, Default)]
pub struct Revocations {
    entries: Vec<Revocation>,
    // Per key kind: value → indices into `entries`, ascending (file order).
    txn: Index,
    jti: Index,
    sub: Index,
    peer: Index,
    actor: Index,
}

/// Value → indices of the entries with that value, in file order.
type Index = HashMap<String, Vec<usize>>;

/// What a hop offers to match against: the token's claims, the peer and the delegation chain.
#[derive(Clone, Copy, Debug, Default)]
pub struct RevocationFacts<'a> {
    /// The hop token's `txn` claim.
    pub txn: Option<&'a str>,
    /// The hop token's `jti` claim.
    pub jti: Option<&'a str>,
    /// The hop token's `sub` claim.
    pub sub: Option<&'a str>,
    /// The calling workload's SPIFFE ID.
    pub peer: Option<&'a str>,
    /// Every SPIFFE ID of the token's delegation chain (its `iss` and every `act` sub).
    pub actors: &'a [String],
}

/// Why a revocations file was refused: every problem, each with its entry's path.
///
/// Displays one problem a line, each naming the file: `revocations.yaml: [3].until: ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationsError {
    path: PathBuf,
    errors: Vec<FieldError>,
}

/// An entry as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    txn: Option<String>,
    jti: Option<String>,
    sub: Option<String>,
    peer: Option<String>,
    actor: Option<String>,
    reason: Option<String>,
    until: Option<String>,
}

// === impl RevocationKey ===

impl RevocationKey {
    /// Every key kind, in the order the file format lists them.
    pub const ALL: [Self; 5] = [Self::Txn, Self::Jti, Self::Sub, Self::Peer, Self::Actor];

    /// The key as written in the file: `txn`, `jti`, `sub`, `peer` or `actor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Txn => "txn",
            Self::Jti => "jti",
            Self::Sub => "sub",
            Self::Peer => "peer",
            Self::Actor => "actor",
        }
    }
}

impl fmt::Display for RevocationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Revocation ===

impl Revocation {
    /// What the entry revokes by.
    pub fn key(&self) -> RevocationKey {
        self.key
    }

    /// The revoked value: a `txn`, `jti` or `sub`, or a canonical SPIFFE ID.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Why, as written.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When the entry stops matching; `None`: never.
    pub fn until(&self) -> Option<SystemTime> {
        self.until
    }

    /// Whether the entry still matches at `now`: it has no `until`, or `now` is before it.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

// === impl Revocations ===

impl Revocations {
    /// No revocations: what a policy folder without `revocations.yaml` has.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Parses the text of a revocations file; `path` names the file in the problems.
    ///
    /// # Errors
    /// Every problem found, each with its entry's path: a file with nothing in it (RVK-05),
    /// YAML syntax, a document that is not a list, more than [`MAX_REVOCATIONS`] entries, an
    /// entry with no key or two, unknown keys, bad values, a missing `reason`, an `until` that
    /// is not RFC 3339 with an offset.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RevocationsError> {
        let error = |errors| RevocationsError {
            path: path.to_owned(),
            errors,
        };
        if is_blank(text) {
            return Err(error(vec![FieldError::new("", EMPTY)]));
        }
        let base_dir = path.parent().unwrap_or(Path::new("/")).to_owned();
        let mut check = Check::new(base_dir);
        let raw = yaml::from_str::<Vec<Option<RawEntry>>>(text, &mut check);
        let mut revocations = Self::empty();
        let mut complete = false;
        match raw {
            Some(raw) if raw.len() > MAX_REVOCATIONS => check.error(
                "",
                format!(
                    "holds {} entries; at most {MAX_REVOCATIONS} are allowed",
                    raw.len()
                ),
            ),
            Some(raw) => {
                complete = true;
                for (i, raw) in raw.into_iter().enumerate() {
                    match entry(raw, &format!("[{i}]"), &mut check) {
                        Some(entry) => revocations.push(entry),
                        None => complete = false,
                    }
                }
            }
            None => {}
        }
        let mut errors = check.into_errors();
        if errors.is_empty() && !complete {
            // INVARIANT: every step that drops something reports why; this is a safety net.
            errors.push(FieldError::new("", "the revocations could not be read"));
        }
        if errors.is_empty() {
            return Ok(revocations);
        }
        if errors.len() > MAX_REPORTED {
            let more = errors.len() - MAX_REPORTED;
            errors.truncate(MAX_REPORTED);
            errors.push(FieldError::new("", format!("and {more} more problems")));
        }
        Err(error(errors))
    }

    /// How many entries there are, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none: the cheap check before building any facts.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first entry, in file order, that matches `facts` and is still active at `now`.
    pub fn matching(&self, facts: &RevocationFacts<'_>, now: SystemTime) -> Option<&Revocation> {
        if self.entries.is_empty() {
            return None;
        }
        let singles = [
            (&self.txn, facts.txn),
            (&self.jti, facts.jti),
            (&self.sub, facts.sub),
            (&self.peer, facts.peer),
        ];
        let single_hits = singles
            .into_iter()
            .filter_map(|(index, fact)| index.get(fact?));
        let actor_hits = facts
            .actors
            .iter()
            .filter_map(|actor| self.actor.get(actor.as_str()));
        single_hits
            .chain(actor_hits)
            .filter_map(|indices| {
                indices.iter().copied().find(|&i| {
                    self.entries
                        .get(i)
                        .is_some_and(|entry| entry.is_active(now))
                })
            })
            .min()
            .and_then(|i| self.entries.get(i))
    }

    /// Every entry, in file order, expired ones included.
    pub fn entries(&self) -> impl Iterator<Item = &Revocation> {
        self.entries.iter()
    }

    fn push(&mut self, entry: Revocation) {
        let index = match entry.key {
            RevocationKey::Txn => &mut self.txn,
            RevocationKey::Jti => &mut self.jti,
            RevocationKey::Sub => &mut self.sub,
            RevocationKey::Peer => &mut self.peer,
            RevocationKey::Actor => &mut self.actor,
        };
        index
            .entry(entry.value.clone())
            .or_default()
            .push(self.entries.len());
        self.entries.push(entry);
    }
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: a file may hold a hundred thousand entries.
        f.debug_struct("Revocations")
            .field("entries", &self.entries.len())
            .field("txn", &self.txn.len())
            .field("jti", &self.jti.len())
            .field("sub", &self.sub.len())
            .field("peer", &self.peer.len())
            .field("actor", &self.actor.len())
            .finish()
    }
}

// === impl RevocationsError ===

impl RevocationsError {
    /// The file, as given to [`Revocations::parse`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every problem, each with its path inside the file (`[3].until`); an empty path is a
    /// problem with the file as a whole.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }
}

impl fmt::Display for RevocationsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {error}", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for RevocationsError {}

/// Whether `text` holds nothing but blank lines, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

/// Validates one entry at `path` (`[3]`); `None` after reporting why.
fn entry(raw: Option<RawEntry>, path: &str, check: &mut Check) -> Option<Revocation> {
    let Some(raw) = raw else {
        // Quiet when the item was dropped for its shape: that was reported.
        check.error(path, "expected a map, found nothing");
        return None;
    };
    let keys = [
        (RevocationKey::Txn, raw.txn),
        (RevocationKey::Jti, raw.jti),
        (RevocationKey::Sub, raw.sub),
        (RevocationKey::Peer, raw.peer),
        (RevocationKey::Actor, raw.actor),
    ];
    // A key dropped for its shape was written: it counts, but its problem is already told.
    let written: Vec<RevocationKey> = keys
        .iter()
        .filter(|(key, value)| value.is_some() || check.dropped_within(&at(path, key.as_str())))
        .map(|(key, _)| *key)
        .collect();
    let key_value = match written.as_slice() {
        [] => {
            let names: Vec<&str> = RevocationKey::ALL.iter().map(|k| k.as_str()).collect();
            check.error(
                path,
                format!(
                    "names nothing to revoke; expected one of {}",
                    yaml::one_of(&names)
                ),
            );
            None
        }
        [key] => keys
            .into_iter()
            .find(|(k, _)| k == key)
            .and_then(|(key, value)| Some((key, value?)))
            .and_then(|(key, value)| {
                value_of(key, value, &at(path, key.as_str()), check).map(|value| (key, value))
            }),
        many => {
            let names: Vec<String> = many.iter().map(|k| format!("`{k}`")).collect();
            let (last, init) = names.split_last()?;
            check.error(
                path,
                format!(
                    "has {} and {last}; an entry revokes by exactly one key",
                    init.join(", ")
                ),
            );
            None
        }
    };
    let reason = reason(raw.reason, &at(path, "reason"), check);
    let until = match raw.until {
        Some(value) => until(&value, &at(path, "until"), check).map(Some),
        None => Some(None),
    };
    let (key, value) = key_value?;
    Some(Revocation {
        key,
        value,
        reason: reason?,
        until: until?,
    })
}

/// A key's value, checked for its kind: canonical SPIFFE IDs for `peer` and `actor`.
fn value_of(key: RevocationKey, value: String, path: &str, check: &mut Check) -> Option<String> {
    match key {
        RevocationKey::Txn | RevocationKey::Jti => {
            let value = check.parse_word(value, path)?;
            bounded(value, MAX_TOKEN_ID_LEN, path, check)
        }
        RevocationKey::Sub if value.is_empty() => {
            check.error(path, "is empty");
            None
        }
        RevocationKey::Sub => bounded(value, MAX_SUB_LEN, path, check),
        RevocationKey::Peer | RevocationKey::Actor => match SpiffeId::parse(&value) {
            Ok(id) if id.is_root() => {
                check.error(
                    path,
                    format!("`{id}` has no path; it names a trust domain, never a workload"),
                );
                None
            }
            Ok(id) => Some(id.as_str().to_owned()),
            Err(e) => {
                let shown = value.escape_debug();
                check.error(path, format!("`{shown}` is not a SPIFFE ID: {e}"));
                None
            }
        },
    }
}

/// The required `reason`: not blank, no control characters, at most [`MAX_REASON_LEN`] bytes.
fn reason(value: Option<String>, path: &str, check: &mut Check) -> Option<String> {
    let value = check.required(value, path)?;
    if value.trim().is_empty() {
        check.error(path, "is empty");
        return None;
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        let c = c.escape_debug();
        check.error(
            path,
            format!("holds `{c}`; control characters are not allowed"),
        );
        return None;
    }
    bounded(value, MAX_REASON_LEN, path, check)
}

/// `value`, if it is at most `max` bytes long.
fn bounded(value: String, max: usize, path: &str, check: &mut Check) -> Option<String> {
    if value.len() > max {
        check.error(
            path,
            format!("is {} bytes long; at most {max} are allowed", value.len()),
        );
        return None;
    }
    Some(value)
}

/// An RFC 3339 time with an offset (`Z` or `±hh:mm`), such as `2026-12-31T00:00:00Z`.
fn until(value: &str, path: &str, check: &mut Check) -> Option<SystemTime> {
    // `time` takes any byte between date and time; RFC 3339 allows only `T` (or `t`).
    let separator = value.as_bytes().get(10).copied();
    let parsed = match (value.is_ascii(), separator) {
        (true, Some(b'T' | b't')) => OffsetDateTime::parse(value, &Rfc3339).ok(),
        _ => None,
    };
    match parsed.and_then(system_time) {
        Some(time) => Some(time),
        None => {
            let shown = value.escape_debug();
            check.error(
                path,
                format!(
                    "`{shown}` is not an RFC 3339 time with an offset, such as \
                     `2026-12-31T00:00:00Z`"
                ),
            );
            None
        }
    }
}

/// The same instant as a `SystemTime`; `None` outside its range.
fn system_time(time: OffsetDateTime) -> Option<SystemTime> {
    let seconds = time.unix_timestamp();
    let whole = Duration::from_secs(seconds.unsigned_abs());
    let at_second = match seconds >= 0 {
        true => SystemTime::UNIX_EPOCH.checked_add(whole),
        false => SystemTime::UNIX_EPOCH.checked_sub(whole),
    }?;
    at_second.checked_add(Duration::from_nanos(u64::from(time.nanosecond())))
}

#[cfg(test)]
mod tests;
