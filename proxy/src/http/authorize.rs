//! Authorization: the Cedar decision for one hop, built from the request the proxy is about to
//! forward, so the policy sees exactly the method, path and host the app will see
//! (PATH-01 in docs/security.md).
//!
//! The request facts are built here and nowhere else: `hopgate policy explain` and
//! `hopgate policy test` call [`HttpFacts::from_parts`] too, so an offline decision is the
//! decision the sidecar makes live.

use std::sync::Arc;
use std::time::Instant;

use hopgate_config::{InboundMode, IntentConfig, SpiffeId};
use hopgate_policy::{
    Decision, DenyReason, Direction, Effect, HopRequest, PolicyStore, TokenFacts,
};
use http::header::HOST;
use http::request::Parts;

use super::{RequestError, intent};
use crate::telemetry::audit::{AuditRecord, AuditSink};
use crate::telemetry::metrics::{DecisionLabel, ProxyMetrics};
use crate::telemetry::stdout::Kept;
use crate::telemetry::trace::HopSpan;
use crate::telemetry::traceparent::{self, TraceIdHex};
use crate::token::VerifiedClaims;

/// The facts of an HTTP request that policies may read, borrowed from the request head.
#[derive(Debug)]
pub struct HttpFacts<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path, exactly as forwarded (no query).
    pub path: &'a str,
    /// The authority: `Host`, or the URI's authority on HTTP/2.
    pub host: &'a str,
    /// The `<prefix>action` header, if present.
    pub action: Option<&'a str>,
    /// Every `<prefix>*` header, prefix stripped (`intent-purpose` → `purpose`).
    pub intent: Vec<(&'a str, &'a str)>,
}

/// A hop token as a decision reads it: its Cedar facts, and its `jti` for the audit record.
#[derive(Clone, Copy, Debug)]
pub struct TokenSeen<'a> {
    /// What Cedar sees (`context.token`).
    pub facts: &'a TokenFacts,
    /// The token's `jti`.
    pub jti: &'a str,
}

/// Who called whom, for the audit record.
#[derive(Clone, Copy)]
struct Subject<'a> {
    peer: &'a SpiffeId,
    destination: &'a SpiffeId,
    direction: Direction,
    token: Option<&'a TokenFacts>,
    token_jti: Option<&'a str>,
}

/// Decides requests against the live policy set, or admits every verified peer when hopgate
/// runs identity-only (no `policy` section).
#[derive(Debug)]
pub struct Authorizer {
    policies: Option<Arc<PolicyStore>>,
    mode: InboundMode,
    intent_prefix: String,
    metrics: Arc<ProxyMetrics>,
    audit: AuditSink,
}

// === impl HttpFacts ===

impl<'a> HttpFacts<'a> {
    /// Reads the facts off a request head.
    ///
    /// # Errors
    /// [`RequestError::BadRequest`] when an intent header is not UTF-8 or appears twice: a
    /// value the policy cannot read unambiguously is refused, never guessed at.
    pub fn from_parts(parts: &'a Parts, intent_prefix: &str) -> Result<Self, RequestError> {
        let host = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(http::uri::Authority::as_str))
            .unwrap_or_default();
        let intent = intent::entries(&parts.headers, intent_prefix)?;
        let action = intent.iter().find(|(k, _)| *k == "action").map(|(_, v)| *v);
        Ok(Self {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            host,
            action,
            intent,
        })
    }

    /// The Cedar-free request the policy engine decides.
    pub fn hop_request(
        &'a self,
        peer: &'a SpiffeId,
        destination: &'a SpiffeId,
        direction: Direction,
        token: Option<&'a TokenFacts>,
    ) -> HopRequest<'a> {
        HopRequest {
            peer,
            destination,
            direction,
            action: self.action,
            method: self.method,
            path: self.path,
            host: self.host,
            intent: &self.intent,
            token,
        }
    }
}

// === impl Authorizer ===

impl Authorizer {
    /// An authorizer over `policies` (none: identity-only).
    pub fn new(
        policies: Option<Arc<PolicyStore>>,
        mode: InboundMode,
        intent: &IntentConfig,
        metrics: Arc<ProxyMetrics>,
        audit: AuditSink,
    ) -> Self {
        Self {
            policies,
            mode,
            intent_prefix: intent.header_prefix().to_owned(),
            metrics,
            audit,
        }
    }

    /// Refuses a new request whose audit record could not be kept (`telemetry.audit.when_full:
    /// refuse` with the buffer to stdout full): nothing is served that is not recorded.
    ///
    /// # Errors
    /// [`RequestError::AuditUnavailable`].
    pub fn check_audit(&self) -> Result<(), RequestError> {
        if self.audit.refusing() {
            return Err(RequestError::AuditUnavailable);
        }
        Ok(())
    }

    /// Whether the audit buffer refuses new requests now (for `/ready`).
    pub fn audit_refusing(&self) -> bool {
        self.audit.refusing()
    }

    /// Whether policies are enforced (false: identity-only).
    pub fn has_policies(&self) -> bool {
        self.policies.is_some()
    }

    /// Decides one request and writes its audit record; returns how it is to be counted.
    ///
    /// The snapshot is read per request, never cached per connection, so a new `forbid`
    /// applies to the next request on an open keep-alive or HTTP/2 connection too.
    ///
    /// # Errors
    /// [`RequestError::Forbidden`] with the decision id when policy denies in `enforce` mode;
    /// [`RequestError::BadRequest`] when the intent headers are unreadable.
    pub fn authorize(
        &self,
        parts: &Parts,
        peer: &SpiffeId,
        destination: &SpiffeId,
        direction: Direction,
        token: Option<&VerifiedClaims>,
        span: &HopSpan,
    ) -> Result<DecisionLabel, RequestError> {
        let facts = token.map(VerifiedClaims::facts);
        let seen = token.zip(facts.as_ref()).map(|(t, facts)| TokenSeen {
            facts,
            jti: t.jti(),
        });
        self.authorize_token(parts, peer, destination, direction, seen, span)
    }

    /// [`Self::authorize`] for a token known by its Cedar facts and `jti` (the outbound side
    /// decides on the token it is about to send).
    ///
    /// # Errors
    /// As [`Self::authorize`].
    pub fn authorize_token(
        &self,
        parts: &Parts,
        peer: &SpiffeId,
        destination: &SpiffeId,
        direction: Direction,
        token: Option<TokenSeen<'_>>,
        span: &HopSpan,
    ) -> Result<DecisionLabel, RequestError> {
        let token_jti = token.map(|t| t.jti);
        let token = token.map(|t| t.facts);
        let Some(policies) = &self.policies else {
            span.record_decision(DecisionLabel::Allow.as_str(), None, &[]);
            return Ok(DecisionLabel::Allow);
        };
        let facts = HttpFacts::from_parts(parts, &self.intent_prefix)?;
        let start = Instant::now();
        let snapshot = policies.current();
        let request = facts.hop_request(peer, destination, direction, token);
        let decision = snapshot.authorize(&request);
        self.metrics.record_policy_evaluation(start.elapsed());
        let subject = Subject {
            peer,
            destination,
            direction,
            token,
            token_jti,
        };
        let trace_id = span.trace_id();
        self.audit(
            &decision,
            parts,
            &subject,
            trace_id.as_ref().map(TraceIdHex::as_str),
        );
        let label = match (decision.effect(), self.mode) {
            (Effect::Allow, _) => DecisionLabel::Allow,
            (Effect::Deny, InboundMode::Audit) => DecisionLabel::AuditDeny,
            (Effect::Deny, InboundMode::Enforce) => DecisionLabel::Deny,
        };
        span.record_action(decision.action());
        span.record_decision(
            label.as_str(),
            Some(decision.shared_id()),
            decision.policies(),
        );
        match label {
            DecisionLabel::Deny => Err(RequestError::Forbidden(decision.id().to_owned())),
            other => Ok(other),
        }
    }

    /// `trace_id` is the request span's when there is one, else the caller's `traceparent`'s.
    fn audit(
        &self,
        decision: &Decision,
        parts: &Parts,
        subject: &Subject<'_>,
        span_trace_id: Option<&str>,
    ) {
        let Subject {
            peer,
            destination,
            direction,
            token,
            token_jti,
        } = *subject;
        let trace_id = span_trace_id.or_else(|| {
            parts
                .headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .and_then(traceparent::trace_id)
        });
        let kept = AuditRecord {
            decision,
            mode: self.mode,
            direction,
            principal: peer,
            resource: destination,
            trace_id,
            token,
            token_jti,
        }
        .emit(&self.audit);
        if kept == Kept::Dropped {
            self.metrics.record_audit_dropped();
        }
        if decision.effect() == Effect::Deny {
            tracing::info!(
                peer.id = %peer,
                decision.id = decision.id(),
                policy.effect = "deny",
                reason = decision.reason().map_or("", DenyReason::as_str),
                "request denied"
            );
        }
    }
}
