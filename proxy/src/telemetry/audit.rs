//! Audit records: one JSON line per policy decision on stdout, target `hopgate::audit`.
//!
//! The record names who called whom, for what, under which decision and policies. It never
//! holds a token, a key or the request's headers (SECURITY-RULES TEL-01): only the decision's
//! facts and, from a verified hop token, its `jti`, `txn`, `sub` and depth.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use hopgate_config::{InboundMode, SpiffeId};
use hopgate_policy::{Decision, DenyReason, Direction, Effect, TokenFacts};
use serde_json::json;

/// Where audit lines go: stdout in the sidecar; a buffer in tests that run it in-process.
#[derive(Clone, Default)]
pub enum AuditSink {
    /// One line per record on the process's stdout.
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

// === impl AuditRecord ===

impl AuditRecord<'_> {
    /// The record as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        let d = self.decision;
        let effect = match (d.effect(), self.mode) {
            (Effect::Allow, _) => "allow",
            (Effect::Deny, InboundMode::Enforce) => "deny",
            (Effect::Deny, InboundMode::Audit) => "audit_deny",
        };
        json!({
            "timestamp": crate::admin::rfc3339(SystemTime::now()),
            "level": "INFO",
            "target": "hopgate::audit",
            "decision_id": d.id(),
            "effect": effect,
            "mode": self.mode.to_string(),
            "direction": self.direction.to_string(),
            "principal": self.principal.as_str(),
            "action": d.action(),
            "resource": self.resource.as_str(),
            "policies": d.policies(),
            "errors": d.errors(),
            "reason": d.reason().map(DenyReason::as_str),
            "txn": self.token.and_then(|t| t.txn.as_deref()),
            "trace_id": self.trace_id,
            "token_jti": self.token_jti,
            "sub": self.token.map(|t| t.sub.as_str()),
            "depth": self.token.map(TokenFacts::depth),
        })
        .to_string()
    }

    /// Writes the record to `sink` as one line.
    ///
    /// On stdout the line is written whole under stdout's lock, so it never interleaves with a
    /// log line. A failed write (stdout closed) is not a reason to fail the request.
    pub fn emit(&self, sink: &AuditSink) {
        let line = self.to_json();
        match sink {
            AuditSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = out
                    .write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"));
            }
            AuditSink::Memory(lines) => lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line),
        }
    }
}

// === impl AuditSink ===

impl fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stdout => "AuditSink::Stdout",
            Self::Memory(_) => "AuditSink::Memory",
        })
    }
}

/// The trace id of a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`), if well formed
/// and not all zeros (SECURITY-RULES TEL-02: a malformed one is ignored, never an error).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(span, 16)
        && hex(flags, 2)
        && (version != "00" || parts.next().is_none());
    valid.then_some(trace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_traceparent_yields_its_trace_id() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        // TEL-02
        for tp in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(tp), None, "{tp}");
        }
    }
}
