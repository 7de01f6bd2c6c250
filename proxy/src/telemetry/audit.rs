//! Audit records: one JSON line per request, on every side, whatever happened, on stdout with
//! target `hopgate::audit`.
//!
//! The record names who called whom, for what, under which decision and policies, and how it
//! ended. It never holds a token, a key or the request's headers (TEL-01 in docs/security.md):
//! only the decision's facts and, from the hop token, its `jti`, hash, `prv`, `txn`, `sub` and
//! depth.
//!
//! A record is written in two steps. Its head ([`AuditHead`]) is serialized when the request is
//! admitted or refused, while the facts it reads are still borrowed from the request; the end
//! ([`AuditEnd`]: effect, reason, status, duration) is appended when the response head goes out
//! or the request fails. Nothing is copied in between.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hopgate_config::InboundMode;
use hopgate_policy::{Direction, McpFacts};
use serde::{Serialize, Serializer};

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

/// What a record says about a request as far as it got: who, what, which decision, which
/// token. A fact the request never reached is `None` (written as `null`).
#[derive(Debug)]
pub struct AuditHead<'a> {
    /// What the record is of, when it is not the request itself: `stream_closed` for an open
    /// request cut later (a second record with the same decision id).
    pub event: Option<&'a str>,
    /// The request's decision id: the policy decision's, or one of its own.
    pub decision_id: &'a str,
    /// Whether a deny was enforced or only recorded.
    pub mode: InboundMode,
    /// Which side of the hop this is.
    pub direction: Direction,
    /// The caller: the mTLS peer (inbound) or this workload (outbound).
    pub principal: Option<&'a str>,
    /// The Cedar action, when a policy was evaluated.
    pub action: Option<&'a str>,
    /// The destination: this workload (inbound) or the route's identity (outbound).
    pub resource: Option<&'a str>,
    /// The determining policies.
    pub policies: &'a [String],
    /// Evaluation errors.
    pub errors: &'a [String],
    /// The request method.
    pub method: &'a str,
    /// The request path (no query).
    pub path: &'a str,
    /// The request's authority.
    pub host: Option<&'a str>,
    /// The caller's socket address.
    pub client_addr: Option<SocketAddr>,
    /// The route's `host` (outbound).
    pub route: Option<&'a str>,
    /// The W3C trace id of the request's span, or of the caller's `traceparent`.
    pub trace_id: Option<&'a str>,
    /// The hop token the record is about: received (inbound) or minted (outbound).
    pub token: Option<AuditToken<'a>>,
    /// The MCP call, for an MCP request whose body was read.
    pub mcp: Option<McpFacts<'a>>,
}

/// The facts of a hop token an audit record carries; never the token itself.
#[derive(Clone, Copy, Debug)]
pub struct AuditToken<'a> {
    /// The transaction.
    pub txn: &'a str,
    /// The token's id.
    pub jti: &'a str,
    /// SHA-256 of the token's compact form (`token_hash`, as a child's `prv` holds it).
    pub hash: &'a [u8; 32],
    /// The parent token's hash.
    pub prv: Option<&'a str>,
    /// On whose behalf.
    pub sub: &'a str,
    /// How many actors the token's `act` holds.
    pub depth: usize,
}

/// How a request ended: the rest of its record.
#[derive(Clone, Copy, Debug)]
pub struct AuditEnd<'a> {
    /// `allow`, `deny`, `audit_deny`, `unauthenticated`, `bad_request`, `no_route` or `error`.
    pub effect: &'static str,
    /// The stable reason code: the deny's, the token check's, the malformation's, or what
    /// failed; `None` for an allow.
    pub reason: Option<&'a str>,
    /// The HTTP status sent.
    pub status: u16,
    /// From the request's arrival to its response head (or failure).
    pub duration: Duration,
}

/// A record whose head is written: the line so far, without its closing brace.
#[derive(Debug)]
pub struct AuditDraft {
    line: Vec<u8>,
}

/// The head's shape, field for field in the documented order; absent facts are `null`.
/// Serialized straight from borrowed fields: no intermediate JSON value is built.
#[derive(Serialize)]
struct Head<'a> {
    timestamp: String,
    level: &'static str,
    target: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    decision_id: &'a str,
    mode: &'static str,
    direction: &'static str,
    principal: Option<&'a str>,
    action: Option<&'a str>,
    resource: Option<&'a str>,
    policies: &'a [String],
    errors: &'a [String],
    method: &'a str,
    path: &'a str,
    host: Option<&'a str>,
    #[serde(serialize_with = "display")]
    client_addr: Option<SocketAddr>,
    route: Option<&'a str>,
    txn: Option<&'a str>,
    trace_id: Option<&'a str>,
    token_jti: Option<&'a str>,
    token_hash: Option<&'a str>,
    token_prv: Option<&'a str>,
    sub: Option<&'a str>,
    depth: Option<usize>,
    mcp_method: Option<&'a str>,
    mcp_name: Option<&'a str>,
}

#[derive(Serialize)]
struct End<'a> {
    effect: &'static str,
    reason: Option<&'a str>,
    status: u16,
    duration_us: u64,
}

/// Serializes a socket address with its `Display` form, without a `String` in between.
fn display<S: Serializer>(addr: &Option<SocketAddr>, serializer: S) -> Result<S::Ok, S::Error> {
    match addr {
        Some(addr) => serializer.collect_str(addr),
        None => serializer.serialize_none(),
    }
}

// === impl AuditHead ===

impl AuditHead<'_> {
    /// Writes the head, stamped now.
    pub fn draft(&self) -> AuditDraft {
        let token = self.token.as_ref();
        // 32 bytes are 43 base64url characters.
        let mut hash = [0u8; 43];
        let hash = token
            .and_then(|t| URL_SAFE_NO_PAD.encode_slice(t.hash, &mut hash).ok())
            .and_then(|len| std::str::from_utf8(hash.get(..len)?).ok());
        let head = Head {
            timestamp: crate::time::rfc3339(SystemTime::now()),
            level: "INFO",
            target: "hopgate::audit",
            event: self.event,
            decision_id: self.decision_id,
            mode: match self.mode {
                InboundMode::Enforce => "enforce",
                InboundMode::Audit => "audit",
            },
            direction: self.direction.as_str(),
            principal: self.principal,
            action: self.action,
            resource: self.resource,
            policies: self.policies,
            errors: self.errors,
            method: self.method,
            path: self.path,
            host: self.host,
            client_addr: self.client_addr,
            route: self.route,
            txn: token.map(|t| t.txn),
            trace_id: self.trace_id,
            token_jti: token.map(|t| t.jti),
            token_hash: hash,
            token_prv: token.and_then(|t| t.prv),
            sub: token.map(|t| t.sub),
            depth: token.map(|t| t.depth),
            mcp_method: self.mcp.map(|m| m.method),
            mcp_name: self.mcp.and_then(|m| m.name),
        };
        // A record with a token runs to some 900 bytes: room for it and its end, never grown.
        let mut line = Vec::with_capacity(1280);
        // Writing plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut line, &head);
        // The object stays open for its end.
        line.pop();
        AuditDraft { line }
    }
}

// === impl AuditDraft ===

impl AuditDraft {
    /// The whole record, as one JSON object (no trailing newline).
    pub fn finish(mut self, end: &AuditEnd<'_>) -> String {
        self.write_end(end);
        // serde_json writes UTF-8 only.
        String::from_utf8(self.line).unwrap_or_default()
    }

    fn write_end(&mut self, end: &AuditEnd<'_>) {
        let end = End {
            effect: end.effect,
            reason: end.reason,
            status: end.status,
            duration_us: u64::try_from(end.duration.as_micros()).unwrap_or(u64::MAX),
        };
        let start = self.line.len();
        let _ = serde_json::to_writer(&mut self.line, &end);
        // `{"effect":...}` continues the head's object: its `{` becomes a `,`.
        if let Some(brace) = self.line.get_mut(start) {
            *brace = b',';
        }
    }

    /// Writes the whole record to `sink` as one line; [`Kept::Dropped`] when the buffer to
    /// stdout is full, for the caller to count.
    ///
    /// On stdout the line joins the buffer the writer thread drains (see [`super::stdout`]): it
    /// never blocks the request, it never interleaves with a log line, and under load one write
    /// carries many records.
    pub fn emit(mut self, end: &AuditEnd<'_>, sink: &AuditSink) -> Kept {
        match sink {
            AuditSink::Stdout => {
                self.write_end(end);
                stdout().record(&self.line)
            }
            AuditSink::Memory(lines) => {
                let line = self.finish(end);
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
                Kept::Buffered
            }
        }
    }
}

/// Writes the audit lines not yet written to stdout, waiting at most two seconds. The sidecar
/// calls it on its way out, so a graceful stop loses no record, and a stdout nobody reads cannot
/// hold the exit.
pub fn flush_stdout() {
    stdout().flush(Duration::from_secs(2));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(token: Option<AuditToken<'a>>, policies: &'a [String]) -> AuditHead<'a> {
        AuditHead {
            event: None,
            decision_id: "6f1c0d2e-0000-4000-8000-000000000000",
            mode: InboundMode::Enforce,
            direction: Direction::Inbound,
            principal: Some("spiffe://example.org/caller"),
            action: Some("call"),
            resource: Some("spiffe://example.org/server"),
            policies,
            errors: &[],
            method: "GET",
            path: "/a\"b",
            host: Some("server.example"),
            client_addr: Some("127.0.0.1:4242".parse().unwrap()),
            route: None,
            trace_id: None,
            token,
            mcp: None,
        }
    }

    fn end() -> AuditEnd<'static> {
        AuditEnd {
            effect: "deny",
            reason: Some("forbidden"),
            status: 403,
            duration: Duration::from_micros(1234),
        }
    }

    #[test]
    fn a_record_is_one_json_object_with_every_field_in_order() {
        let policies = ["no-intruders".to_owned()];
        let hash = [7u8; 32];
        let token = AuditToken {
            txn: "txn-1",
            jti: "jti-1",
            hash: &hash,
            prv: Some("parent"),
            sub: "alice",
            depth: 2,
        };
        let line = head(Some(token), &policies).draft().finish(&end());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "target",
                "decision_id",
                "mode",
                "direction",
                "principal",
                "action",
                "resource",
                "policies",
                "errors",
                "method",
                "path",
                "host",
                "client_addr",
                "route",
                "txn",
                "trace_id",
                "token_jti",
                "token_hash",
                "token_prv",
                "sub",
                "depth",
                "mcp_method",
                "mcp_name",
                "effect",
                "reason",
                "status",
                "duration_us",
            ]
        );
        assert_eq!(value["path"], "/a\"b");
        assert_eq!(value["client_addr"], "127.0.0.1:4242");
        assert_eq!(value["token_hash"], URL_SAFE_NO_PAD.encode(hash));
        assert_eq!(value["status"], 403);
        assert_eq!(value["duration_us"], 1234);
        assert_eq!(value["depth"], 2);
    }

    #[test]
    fn a_record_without_a_token_has_its_token_fields_null() {
        let line = head(None, &[]).draft().finish(&end());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in [
            "txn",
            "token_jti",
            "token_hash",
            "token_prv",
            "sub",
            "depth",
        ] {
            assert!(value[field].is_null(), "{field}: {line}");
        }
    }

    #[test]
    fn a_record_in_memory_is_the_same_line_stdout_would_get() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = head(None, &[])
            .draft()
            .emit(&end(), &AuditSink::Memory(Arc::clone(&lines)));
        assert_eq!(kept, Kept::Buffered);
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].ends_with(
                r#""effect":"deny","reason":"forbidden","status":403,"duration_us":1234}"#
            )
        );
    }
}
