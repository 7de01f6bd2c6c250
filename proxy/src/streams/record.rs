//! The record of a cut: a second audit record for the request (`"event":"stream_closed"`), its
//! reason counted in `hopgate_streams_closed_total{reason}`, and an INFO line.

use hopgate_config::InboundMode;
use hopgate_policy::Decision;

use super::{CutReason, Open, Piece};
use crate::telemetry::audit::{AuditEnd, AuditHead, AuditSink, AuditToken};
use crate::telemetry::metrics::ProxyMetrics;
use crate::telemetry::stdout::Kept;
use crate::telemetry::traceparent::TraceIdHex;

/// Records that `open` was cut for `reason`, with the decision that cut it (a policy cut).
pub(super) fn cut(
    open: &Open,
    reason: CutReason,
    decision: Option<&Decision>,
    mode: InboundMode,
    metrics: &ProxyMetrics,
    audit: &AuditSink,
) {
    let facts = &open.facts;
    let principal = facts.principal();
    tracing::info!(
        direction = facts.direction.as_str(),
        peer.id = %principal,
        reason = reason.as_str(),
        decision.id = &*facts.decision_id,
        trace.id = facts.trace_id.as_ref().map_or("", TraceIdHex::as_str),
        age_ms = u64::try_from(open.age().as_millis()).unwrap_or(u64::MAX),
        "open stream cut"
    );
    metrics.record_stream_closed(reason.as_str());
    let token = facts.token.as_ref().map(|token| AuditToken {
        txn: token.facts.txn.as_deref().unwrap_or_default(),
        jti: facts.text.get(Piece::Jti).unwrap_or_default(),
        hash: &token.hash,
        prv: facts.text.get(Piece::Prv),
        sub: &token.facts.sub,
        depth: token.depth,
    });
    let head = AuditHead {
        event: Some("stream_closed"),
        decision_id: &facts.decision_id,
        mode,
        direction: facts.direction,
        principal: Some(principal.as_str()),
        action: decision.map(Decision::action),
        resource: Some(facts.dest().as_str()),
        policies: decision.map_or(&[], Decision::policies),
        errors: decision.map_or(&[], Decision::errors),
        method: facts.method.as_str(),
        path: facts.path(),
        host: facts.text.get(Piece::Host),
        client_addr: facts.client_addr,
        route: facts.text.get(Piece::Route),
        trace_id: facts.trace_id.as_ref().map(TraceIdHex::as_str),
        token,
        mcp: facts.mcp(),
    };
    let end = AuditEnd {
        effect: effect(reason),
        reason: Some(reason.as_str()),
        status: open.status(),
        duration: open.age(),
    };
    if head.draft().emit(&end, audit) == Kept::Dropped {
        metrics.record_audit_dropped();
    }
}

/// The effect a new request refused for the same reason would have had.
fn effect(reason: CutReason) -> &'static str {
    match reason {
        CutReason::Policy => "deny",
        CutReason::Revoked | CutReason::Trust | CutReason::TokenExpired => "unauthenticated",
        CutReason::MaxAge => "error",
    }
}
