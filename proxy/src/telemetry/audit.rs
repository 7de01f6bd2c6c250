//! Audit records: one JSON line per policy decision on stdout, target `hopgate::audit`.
//!
//! The record names who called whom, for what, under which decision and policies. It never
//! holds a token, a key or the request's headers (TEL-01 in docs/security.md): only the
//! decision's facts and, from a verified hop token, its `jti`, `txn`, `sub` and depth.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use hopgate_config::{InboundMode, SpiffeId};
use hopgate_policy::{Decision, DenyReason, Direction, Effect, TokenFacts};
use serde::Serialize;

use super::stdout::{Kept, stdout};

/// Where audit lines go: stdout in the sidecar; a buffer in tests that run it in-process.
#[derive(Clone, Default)]
pub enum AuditSink {
    /// One line per record on the process's stdout, through its bounded buffer (see
    /// [`super::stdout`]).
    #[default]
    Stdout,
    /// Kept in memory, for tests.
    Memory(Arc<Mutex<Vec<String>>>),
}

/// What one audit line says, besides the decision itself.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// The decision being recorded.
    pub decision: &'a Decision,
    /// Whether a deny was enforced or only recorded.
    pub mode: InboundMode,
    /// Which side of the hop decided.
    pub direction: Direction,
    /// The caller.
    pub principal: &'a SpiffeId,
    /// The destination.
    pub resource: &'a SpiffeId,
    /// The W3C trace id of the request, when it carried one.
    pub trace_id: Option<&'a str>,
    /// The verified hop token's facts, when there was one.
    pub token: Option<&'a TokenFacts>,
    /// The verified hop token's `jti`, when there was one.
    pub token_jti: Option<&'a str>,
}

/// The line's shape, field for field in the documented order; absent facts are `null`.
/// Serialized straight from borrowed fields: no intermediate JSON value is built.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: String,
    level: &'static str,
    target: &'static str,
    decision_id: &'a str,
    effect: &'static str,
    mode: &'static str,
    direction: &'static str,
    principal: &'a str,
    action: &'a str,
    resource: &'a str,
    policies: &'a [String],
    errors: &'a [String],
    reason: Option<&'static str>,
    txn: Option<&'a str>,
    trace_id: Option<&'a str>,
    token_jti: Option<&'a str>,
    sub: Option<&'a str>,
    depth: Option<usize>,
}

// === impl AuditRecord ===

impl AuditRecord<'_> {
    /// The record as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(512);
        self.write_json(&mut out);
        // serde_json writes UTF-8 only.
        String::from_utf8(out).unwrap_or_default()
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let d = self.decision;
        let effect = match (d.effect(), self.mode) {
            (Effect::Allow, _) => "allow",
            (Effect::Deny, InboundMode::Enforce) => "deny",
            (Effect::Deny, InboundMode::Audit) => "audit_deny",
        };
        let line = Line {
            timestamp: crate::time::rfc3339(SystemTime::now()),
            level: "INFO",
            target: "hopgate::audit",
            decision_id: d.id(),
            effect,
            mode: match self.mode {
                InboundMode::Enforce => "enforce",
                InboundMode::Audit => "audit",
            },
            direction: self.direction.as_str(),
            principal: self.principal.as_str(),
            action: d.action(),
            resource: self.resource.as_str(),
            policies: d.policies(),
            errors: d.errors(),
            reason: d.reason().map(DenyReason::as_str),
            txn: self.token.and_then(|t| t.txn.as_deref()),
            trace_id: self.trace_id,
            token_jti: self.token_jti,
            sub: self.token.map(|t| t.sub.as_str()),
            depth: self.token.map(TokenFacts::depth),
        };
        // Writing plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(out, &line);
    }

    /// Writes the record to `sink` as one line; [`Kept::Dropped`] when the buffer to stdout
    /// is full, for the caller to count.
    ///
    /// On stdout the line joins the buffer the writer thread drains (see [`super::stdout`]): it
    /// never blocks the request, it never interleaves with a log line, and under load one write
    /// carries many records.
    pub fn emit(&self, sink: &AuditSink) -> Kept {
        match sink {
            AuditSink::Stdout => stdout().record(|buf| self.write_json(buf)),
            AuditSink::Memory(lines) => {
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(self.to_json());
                Kept::Buffered
            }
        }
    }
}

/// Writes the audit lines not yet written to stdout, waiting at most two seconds. The sidecar
/// calls it on its way out, so a graceful stop loses no record, and a stdout nobody reads cannot
/// hold the exit.
pub fn flush_stdout() {
    stdout().flush(std::time::Duration::from_secs(2));
}

// === impl AuditSink ===

impl AuditSink {
    /// Whether new requests are to be refused because their records could not be kept
    /// (`telemetry.audit.when_full: refuse` and the buffer to stdout is full).
    pub fn refusing(&self) -> bool {
        match self {
            Self::Stdout => stdout().refusing(),
            Self::Memory(_) => false,
        }
    }
}

impl fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stdout => "AuditSink::Stdout",
            Self::Memory(_) => "AuditSink::Memory",
        })
    }
}
