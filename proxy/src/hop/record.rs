//! The record of one request: its audit record, its span's decision and status, its metrics and
//! its log line, once each, whatever happened.
//!
//! Every request gets a decision id: the policy decision's, or, where none was made (identity
//! only, or refused before the policy), one of its own. The id is in the audit record, in the
//! span's `hop.decision.id`, in the failure log line and in the body of a 401 or 403, so any
//! one of them finds the others.

use std::sync::Arc;
use std::time::Instant;

use hopgate_config::SpiffeId;
use hopgate_policy::{DenyReason, Direction as PolicyDirection, Effect};
use http::Response;
use http::request::Parts;

use super::{Hop, Shared, Side};
use crate::http::authorize::{HttpFacts, Verdict};
use crate::http::mcp::McpRefusal;
use crate::http::{Body, RequestError, headers};
use crate::telemetry::audit::{AuditDraft, AuditEnd, AuditHead};
use crate::telemetry::metrics::{DecisionLabel, PartyLabels};
use crate::telemetry::stdout::Kept;
use crate::telemetry::trace::HopSpan;
use crate::telemetry::traceparent::{CallerTrace, TraceIdHex};

/// A request's record, its head written, waiting for the end.
pub(super) struct Record {
    draft: AuditDraft,
    decision_id: Arc<str>,
    trace_id: Option<TraceIdHex>,
    /// The policy's reason, for a deny or an `audit_deny`.
    reason: Option<&'static str>,
    /// The `peer` and `dest` the request is counted under.
    parties: PartyLabels,
    /// The JSON-RPC `id` of an MCP request (`Null` when its body could not be read): a failure
    /// is answered with a JSON-RPC error carrying it.
    mcp_id: Option<serde_json::Value>,
}

/// What the connection knows of a request's parties before the request is admitted.
pub(crate) struct Known {
    /// The caller: the verified peer (inbound) or this workload (outbound).
    pub(crate) principal: Option<SpiffeId>,
    /// The destination, when the side knows it without the request (inbound: this workload).
    pub(crate) resource: Option<SpiffeId>,
    /// The caller's socket address.
    pub(crate) client_addr: Option<std::net::SocketAddr>,
}

/// A decision id of the request's own, where no policy decision was made: a UUID v4, as the
/// policy engine's are.
fn new_decision_id() -> Arc<str> {
    Arc::from(
        &*uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    )
}

/// The request span's trace id when there is one, else the caller's.
fn trace_id(span: &HopSpan, trace: Option<&CallerTrace>) -> Option<TraceIdHex> {
    span.trace_id().or_else(|| trace.map(CallerTrace::trace_id))
}

// === impl Record ===

impl Record {
    /// The record of a request refused before its decision, from what was known: the head as
    /// it came, the parsed facts when they were read, and the connection's parties.
    pub(super) fn refused<S: Side>(
        side: &S,
        conn: &S::Conn,
        parts: &Parts,
        request: Option<&HttpFacts<'_>>,
        trace: Option<&CallerTrace>,
        span: &HopSpan,
    ) -> Self {
        let shared = side.shared();
        let decision_id = new_decision_id();
        let trace_id = trace_id(span, trace);
        let known = side.known(conn);
        let draft = AuditHead {
            event: None,
            decision_id: &decision_id,
            mode: shared.authorizer.mode(),
            direction: super::policy_direction(S::DIRECTION),
            principal: known.principal.as_ref().map(|id| id.as_str()),
            action: None,
            resource: known.resource.as_ref().map(|id| id.as_str()),
            policies: &[],
            errors: &[],
            method: parts.method.as_str(),
            path: parts.uri.path(),
            host: match request {
                Some(request) => request.authority,
                None => headers::authority(&parts.uri, &parts.headers),
            },
            client_addr: known.client_addr,
            route: None,
            trace_id: trace_id.as_ref().map(TraceIdHex::as_str),
            token: None,
            mcp: request.and_then(|r| r.mcp),
        }
        .draft();
        let parties = shared.telemetry.metrics.parties(
            known.principal.as_ref().map(|id| id.as_str()),
            known.resource.as_ref().map(|id| id.as_str()),
        );
        Self {
            draft,
            decision_id,
            trace_id,
            reason: None,
            parties,
            mcp_id: None,
        }
    }

    /// The record of a decided request: the policy evaluation time, the span's decision, a
    /// log line for a deny, and the head with every fact of the hop.
    pub(super) fn decided(
        shared: &Shared,
        verdict: Verdict,
        hop: &Hop<'_>,
        direction: PolicyDirection,
        span: &HopSpan,
    ) -> (DecisionLabel, Self) {
        let trace_id = trace_id(span, hop.trace);
        let decision = verdict.decision.as_ref();
        let decision_id = match decision {
            Some(decision) => Arc::clone(decision.shared_id()),
            None => new_decision_id(),
        };
        if let Some(decision) = decision {
            shared
                .telemetry
                .metrics
                .record_policy_evaluation(verdict.evaluation);
            span.record_action(decision.action());
            if decision.effect() == Effect::Deny {
                tracing::info!(
                    peer.id = %hop.principal(),
                    decision.id = decision.id(),
                    trace.id = trace_id.as_ref().map_or("", TraceIdHex::as_str),
                    policy.effect = "deny",
                    reason = decision.reason().map_or("", DenyReason::as_str),
                    "request denied"
                );
            }
        }
        span.record_decision(
            verdict.label.as_str(),
            Some(&decision_id),
            decision.map_or(&[], |d| d.policies()),
        );
        let draft = AuditHead {
            event: None,
            decision_id: &decision_id,
            mode: shared.authorizer.mode(),
            direction,
            principal: Some(hop.principal().as_str()),
            action: decision.map(|d| d.action()),
            resource: Some(hop.dest.as_str()),
            policies: decision.map_or(&[], |d| d.policies()),
            errors: decision.map_or(&[], |d| d.errors()),
            method: hop.request.method,
            path: hop.request.path,
            host: hop.request.authority,
            client_addr: hop.client_addr,
            route: hop.route,
            trace_id: trace_id.as_ref().map(TraceIdHex::as_str),
            token: hop.token.as_ref().map(|(token, _)| token.audit()),
            mcp: hop.request.mcp,
        }
        .draft();
        let parties = shared
            .telemetry
            .metrics
            .parties(Some(hop.principal().as_str()), Some(hop.dest.as_str()));
        let record = Self {
            draft,
            decision_id,
            trace_id,
            reason: decision.and_then(|d| d.reason()).map(DenyReason::as_str),
            parties,
            mcp_id: None,
        };
        (verdict.label, record)
    }

    /// The request's decision id and trace id, for the record of a later cut.
    pub(super) fn ids(&self) -> (Arc<str>, Option<TraceIdHex>) {
        (Arc::clone(&self.decision_id), self.trace_id)
    }

    /// Marks the record as an MCP request's, whose failure is answered in JSON-RPC with `id`.
    pub(super) fn mcp(mut self, id: serde_json::Value) -> Self {
        self.mcp_id = Some(id);
        self
    }

    /// Ends the request: the response (a failure's, with the decision id), the span's status,
    /// the audit record, the request metrics.
    pub(super) fn finish<S: Side>(
        self,
        side: &S,
        conn: &S::Conn,
        result: Result<(Response<Body>, DecisionLabel), RequestError>,
        span: &HopSpan,
        start: Instant,
    ) -> Response<Body> {
        let telemetry = &side.shared().telemetry;
        let trace_id = self.trace_id.as_ref().map(TraceIdHex::as_str);
        // A request refused because its record could not be kept has none: the refusal keeps
        // the room left in the buffer for the records of requests already admitted.
        let mut recorded = true;
        // Whether hopgate answered itself (the reason is then the span's `error.type`).
        let mut answered = false;
        let (rsp, label, effect, reason) = match result {
            Ok((rsp, label)) => {
                let (effect, reason) = match label {
                    DecisionLabel::AuditDeny => ("audit_deny", self.reason),
                    _ => ("allow", None),
                };
                (rsp, label, effect, reason)
            }
            Err(err) => {
                tracing::info!(
                    direction = S::DIRECTION.as_str(),
                    peer.id = side.peer(conn).map_or("", SpiffeId::as_str),
                    status = err.status().as_u16(),
                    reason = err.reason().unwrap_or_default(),
                    decision.id = &*self.decision_id,
                    trace.id = trace_id.unwrap_or_default(),
                    error = %err,
                    "request failed"
                );
                let reason = err.reason().or(self.reason);
                let effect = match err {
                    RequestError::Forbidden => "deny",
                    RequestError::Unauthenticated(_) => "unauthenticated",
                    RequestError::Mcp(McpRefusal::BadResult) => "error",
                    RequestError::BadRequest(..) | RequestError::Mcp(_) => "bad_request",
                    RequestError::NoRoute => "no_route",
                    RequestError::UpstreamConnect(_)
                    | RequestError::UpstreamTimeout
                    | RequestError::Overloaded
                    | RequestError::AuditUnavailable
                    | RequestError::NoIdentity
                    | RequestError::Internal(_) => "error",
                };
                recorded = !matches!(err, RequestError::AuditUnavailable);
                answered = true;
                let label = err.decision();
                let refused = err.status().is_client_error();
                span.record_refusal(
                    label,
                    matches!(err, RequestError::Forbidden),
                    &self.decision_id,
                    reason.filter(|_| refused),
                );
                let rsp = match &self.mcp_id {
                    Some(id) => err.into_mcp_response(&self.decision_id, id),
                    None => err.into_response(&self.decision_id),
                };
                (rsp, label, effect, reason)
            }
        };
        let status = rsp.status();
        span.record_status(status.as_u16(), reason.filter(|_| answered));
        let elapsed = start.elapsed();
        let end = AuditEnd {
            effect,
            reason,
            status: status.as_u16(),
            duration: elapsed,
        };
        if recorded && self.draft.emit(&end, &telemetry.audit) == Kept::Dropped {
            telemetry.metrics.record_audit_dropped();
        }
        telemetry.metrics.record_request(
            S::DIRECTION,
            label,
            status.as_u16(),
            self.parties,
            elapsed,
        );
        rsp
    }
}
