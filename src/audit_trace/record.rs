//! Reading audit records out of sidecar logs: which lines count, and the fields the trace reads.
//!
//! A line counts when, from its first `{`, it parses as a JSON object whose `target` is
//! `hopgate::audit`: the sidecar's own stdout, and `kubectl logs --prefix` or `--timestamps`
//! output, whose prefix stands before the `{`. Log lines, seal lines (`hopgate::audit.seal`),
//! malformed JSON and anything else are skipped. Every field may be null or of an unexpected
//! type; such a field reads as absent, and the record still counts.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// The `target` of an audit record.
const AUDIT_TARGET: &str = "hopgate::audit";

/// Which side of a hop wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    /// The caller's sidecar: the record of the token it minted for the next hop.
    Outbound,
    /// The receiver's sidecar: the record of the token it received.
    Inbound,
    /// A `direction` that is neither (absent, null, or another value).
    Unknown,
}

// === impl Side ===

impl Side {
    /// The side a record's `direction` names.
    fn of(direction: Option<&str>) -> Self {
        match direction {
            Some("outbound") => Self::Outbound,
            Some("inbound") => Self::Inbound,
            _ => Self::Unknown,
        }
    }

    /// The word the tree shows.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
            Self::Unknown => "?",
        }
    }
}

/// One audit record, with where it was read.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// The name of the file (or in-memory source) it was read from.
    pub(crate) source: String,
    /// Which of the sources it came from, in the order they were given.
    pub(crate) source_index: usize,
    /// Its line in that source, from 1.
    pub(crate) line: usize,
    /// Which side of the hop wrote it.
    pub(crate) side: Side,
    /// The record's fields, as written.
    pub(crate) fields: Map<String, Value>,
}

// === impl Record ===

impl Record {
    /// A string field; `None` when absent, null, empty or not a string.
    pub(crate) fn str(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// A whole non-negative number field; `None` when absent, null or not one.
    pub(crate) fn u64(&self, key: &str) -> Option<u64> {
        self.fields.get(key).and_then(Value::as_u64)
    }

    /// The strings of an array field (its other members skipped); empty when it is not an array.
    pub(crate) fn strings(&self, key: &str) -> Vec<String> {
        match self.fields.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `file:line`, as the tree names the record.
    pub(crate) fn location(&self) -> String {
        format!("{}:{}", self.source, self.line)
    }

    /// The record's place in time, for ordering.
    pub(crate) fn time(&self) -> TimeKey {
        TimeKey::parse(self.str("timestamp"))
    }

    /// Orders records by time, then by where they were read.
    pub(crate) fn order(&self, other: &Self) -> Ordering {
        self.time()
            .cmp(&other.time())
            .then(self.source_index.cmp(&other.source_index))
            .then(self.line.cmp(&other.line))
    }
}

/// The fields of `line` when it is an audit record; `None` for anything else.
pub(crate) fn parse_line(line: &str) -> Option<Map<String, Value>> {
    let start = line.find('{')?;
    let json = line.get(start..)?;
    // serde_json bounds its own recursion: deeply nested input is an error, not a crash.
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(fields))
            if fields.get("target").and_then(Value::as_str) == Some(AUDIT_TARGET) =>
        {
            Some(fields)
        }
        _ => None,
    }
}

/// The audit records of `source`, numbered by line; `counted` is every audit record in it,
/// whatever its transaction.
pub(crate) fn records_of(
    txn: &str,
    source_index: usize,
    name: &str,
    lines: &[String],
    counted: &mut usize,
) -> Vec<Record> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(fields) = parse_line(line) else {
            continue;
        };
        *counted += 1;
        if fields.get("txn").and_then(Value::as_str) != Some(txn) {
            continue;
        }
        let side = Side::of(fields.get("direction").and_then(Value::as_str));
        out.push(Record {
            source: name.to_owned(),
            source_index,
            line: i.saturating_add(1),
            side,
            fields,
        });
    }
    out
}

/// An RFC 3339 UTC timestamp as a sortable key: the seconds, then the fraction in nanoseconds,
/// so `10:15:02Z` comes before `10:15:02.118Z`. A timestamp missing or of another shape sorts
/// after every well-formed one, by its text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimeKey {
    /// `YYYY-MM-DDTHH:MM:SS` and the fraction's nanoseconds.
    At(String, u32),
    /// Any other text.
    Other(String),
    /// No timestamp.
    None,
}

// === impl TimeKey ===

impl TimeKey {
    /// The key of `timestamp`.
    fn parse(timestamp: Option<&str>) -> Self {
        let Some(ts) = timestamp else {
            return Self::None;
        };
        let (Some(seconds), Some(rest)) = (ts.get(..19), ts.get(19..)) else {
            return Self::Other(ts.to_owned());
        };
        let shaped = seconds.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T' || b == b't' || b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
        if !shaped {
            return Self::Other(ts.to_owned());
        }
        let mut nanos: u32 = 0;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits: Vec<u32> = fraction
                .chars()
                .map_while(|c| c.to_digit(10))
                .take(9)
                .collect();
            let mut scale = 100_000_000_u32;
            for digit in digits {
                nanos = nanos.saturating_add(digit.saturating_mul(scale));
                scale /= 10;
            }
        }
        Self::At(seconds.replace(['t', ' '], "T"), nanos)
    }
}
