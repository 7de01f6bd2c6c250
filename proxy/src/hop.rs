//! One runner for both sides of a hop.
//!
//! ```text
//!  request ─▶ caller's traceparent, read once ─▶ span ─▶ in-flight cap ─▶ audit buffer
//!          ─▶ hygiene (hop-by-hop, path, authority) ─▶ HttpFacts, read once (authority, intent)
//!          ─▶ Side::admit, head read only (inbound: the hop token; outbound: route + token)
//!          ─▶ Hop { peer, own, dest, target, request, token, trace } ─▶ Authorizer::decide
//!          ─▶ recorded here, once: audit record, span, metrics, log line
//!          ─▶ Side::prepare (inbound: XFCC; outbound: credential out, token in)
//!          ─▶ trailers off, traceparent on ─▶ Side::send ─▶ response hygiene
//!  any error ─▶ the one error → response map; span status and metrics, once, either way
//! ```
//!
//! What differs between the sides is in [`Side`]: how a request is admitted (whose token, which
//! route), what is added to the head after the decision, and where it is sent. Everything else,
//! in this order, is here, so the two sides cannot drift apart.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use hopgate_config::{InboundLimits, SpiffeId};
use hopgate_policy::{DenyReason, Direction as PolicyDirection, Effect, HopRequest, TokenFacts};
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::http::authorize::{Authorizer, HttpFacts, Verdict};
use crate::http::{Body, RequestError, WithoutTrailers, headers, path, stream_body};
use crate::telemetry::audit::{AuditRecord, AuditSink};
use crate::telemetry::metrics::{DecisionLabel, Direction, ProxyMetrics};
use crate::telemetry::stdout::Kept;
use crate::telemetry::trace::{HopSpan, SpanKind, Tracing};
use crate::telemetry::traceparent::{CallerTrace, TraceIdHex};
use crate::token::{MintedToken, VerifiedClaims};

#[cfg(test)]
pub(crate) mod test_support;

/// Where a side's requests are recorded: spans, metrics and audit records.
#[derive(Clone, Debug)]
pub struct HopTelemetry {
    /// Request spans.
    pub tracing: Tracing,
    /// The sidecar's metrics.
    pub metrics: Arc<ProxyMetrics>,
    /// Where audit records go.
    pub audit: AuditSink,
}

/// What both sides' requests need, whichever side they are on.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) authorizer: Authorizer,
    pub(crate) telemetry: HopTelemetry,
    /// Held per request until its response head is back: the work an overload must bound.
    pub(crate) in_flight: Arc<Semaphore>,
}

// === impl Shared ===

impl Shared {
    /// The shared state of a side whose listener takes `limits`. One HTTP/2 connection may
    /// carry many requests, so requests get their own, larger cap (connections × streams);
    /// past it the caller gets a fast 503 rather than an unbounded queue.
    pub(crate) fn new(
        authorizer: Authorizer,
        telemetry: HopTelemetry,
        limits: &InboundLimits,
    ) -> Self {
        let max_in_flight = limits
            .max_connections()
            .saturating_mul(usize::try_from(limits.max_concurrent_streams()).unwrap_or(1))
            .min(Semaphore::MAX_PERMITS);
        Self {
            authorizer,
            telemetry,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

/// A side's own stages; [`serve`] runs them in its fixed order.
pub(crate) trait Side: Sync {
    /// What a connection's requests share (inbound: the verified peer; outbound: how they
    /// find their route).
    type Conn: Sync;
    /// What [`Side::admit`] worked out and [`Side::send`] needs.
    type Admission: Send;
    /// Which side this is.
    const DIRECTION: Direction;

    /// The state both sides share.
    fn shared(&self) -> &Shared;

    /// Before anything is read: what the span should know from the start (inbound: the peer,
    /// which the handshake proved).
    fn on_start(&self, _conn: &Self::Conn, _span: &HopSpan) {}

    /// Refusals of this side that come before hygiene (outbound: `CONNECT`).
    ///
    /// # Errors
    /// The refusal.
    fn screen(&self, _parts: &Parts) -> Result<(), RequestError> {
        Ok(())
    }

    /// The side's admission of a clean head, read and not changed: the hop token verified
    /// against the connection (inbound), or the route found and the app's credential verified
    /// and exchanged for a token (outbound). Header changes wait for [`Side::prepare`], after
    /// the decision.
    ///
    /// # Errors
    /// Why the request is refused.
    fn admit(
        &self,
        conn: &Self::Conn,
        parts: &Parts,
        request: &HttpFacts<'_>,
        trace: Option<&CallerTrace>,
        span: &HopSpan,
    ) -> Result<Self::Admission, RequestError>;

    /// Who calls whom on this hop, and with which token.
    fn parties<'a>(&'a self, conn: &'a Self::Conn, admission: &'a Self::Admission) -> Parties<'a>;

    /// The side's changes to the head once the decision allowed it (inbound: XFCC; outbound:
    /// the app's credential out, the hop token in).
    fn prepare(&self, conn: &Self::Conn, admission: &Self::Admission, parts: &mut Parts);

    /// Sends the request on: to the app (inbound) or to the destination sidecar (outbound).
    fn send(
        &self,
        admission: Self::Admission,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, RequestError>> + Send;

    /// The log line of a request that failed.
    fn log_failure(&self, conn: &Self::Conn, err: &RequestError);
}

/// The parties of one hop, as a side's admission found them.
#[derive(Clone, Copy)]
pub(crate) struct Parties<'a> {
    /// The peer sidecar the handshake proved (inbound); `None` outbound, where the caller is
    /// the local app and the principal is this workload.
    pub(crate) peer: Option<&'a SpiffeId>,
    /// This workload.
    pub(crate) own: &'a SpiffeId,
    /// Whom the request is for: this workload (inbound) or the route's `identity` (outbound).
    pub(crate) dest: &'a SpiffeId,
    /// Where the request goes when the side chose it (outbound: the route's `host` when the
    /// app named no authority); `None`: the request's own authority.
    pub(crate) authority: Option<&'a str>,
    /// The hop token: verified (inbound) or about to be sent (outbound).
    pub(crate) token: Option<HopToken<'a>>,
}

/// One request as policy, token, span and audit record all read it: each fact parsed once,
/// after hygiene, by the runner.
pub(crate) struct Hop<'a> {
    /// See [`Parties::peer`].
    pub(crate) peer: Option<&'a SpiffeId>,
    /// This workload.
    pub(crate) own: &'a SpiffeId,
    /// See [`Parties::dest`].
    pub(crate) dest: &'a SpiffeId,
    /// The authority the request goes to.
    pub(crate) target: &'a str,
    /// Method, path, authority and the intent headers.
    pub(crate) request: &'a HttpFacts<'a>,
    /// The hop token, and its facts when something reads them (a policy or a span).
    pub(crate) token: Option<(HopToken<'a>, Option<&'a TokenFacts>)>,
    /// The caller's trace context.
    pub(crate) trace: Option<&'a CallerTrace>,
}

// === impl Hop ===

impl Hop<'_> {
    /// The Cedar principal: the peer (inbound) or this workload (outbound).
    fn principal(&self) -> &SpiffeId {
        self.peer.unwrap_or(self.own)
    }

    fn facts(&self) -> Option<&TokenFacts> {
        self.token.and_then(|(_, facts)| facts)
    }

    fn request(&self, direction: PolicyDirection) -> HopRequest<'_> {
        self.request
            .hop_request(self.principal(), self.dest, direction, self.facts())
    }
}

/// The hop token of a hop, whichever way it came.
#[derive(Clone, Copy)]
pub(crate) enum HopToken<'a> {
    /// Verified against the connection it arrived on.
    Verified(&'a VerifiedClaims),
    /// Minted for the next hop.
    Minted(&'a MintedToken),
}

// === impl HopToken ===

impl HopToken<'_> {
    fn facts(self) -> TokenFacts {
        match self {
            Self::Verified(token) => token.facts(),
            Self::Minted(token) => token.facts(),
        }
    }

    fn jti(&self) -> &str {
        match self {
            Self::Verified(token) => token.jti(),
            Self::Minted(token) => token.claims().jti(),
        }
    }

    fn prv(&self) -> Option<&str> {
        match self {
            Self::Verified(token) => token.prv(),
            Self::Minted(token) => token.claims().prv(),
        }
    }
}

/// Serves one request on `side`: the whole pipeline, one response, recorded once.
pub(crate) async fn serve<S: Side>(
    side: &S,
    conn: &S::Conn,
    req: Request<Incoming>,
) -> Response<Body> {
    let shared = side.shared();
    let start = Instant::now();
    let kind = match S::DIRECTION {
        Direction::Inbound => SpanKind::Inbound,
        Direction::Outbound => SpanKind::Outbound,
    };
    // The caller's trace context is read once: the span's parent, the audit record's trace id.
    let trace = CallerTrace::from_headers(req.headers());
    let span = shared.telemetry.tracing.request_span(
        kind,
        trace.as_ref(),
        req.headers(),
        req.method().as_str(),
        req.uri().path(),
        req.version(),
    );
    side.on_start(conn, &span);
    let (rsp, decision) = match run(side, conn, req, trace.as_ref(), &span).await {
        Ok(forwarded) => forwarded,
        Err(err) => {
            side.log_failure(conn, &err);
            span.record_refusal(err.decision(), matches!(err, RequestError::Forbidden(_)));
            let decision = err.decision();
            (err.into_response(), decision)
        }
    };
    span.record_status(rsp.status().as_u16());
    shared
        .telemetry
        .metrics
        .record_request(S::DIRECTION, decision, start.elapsed());
    rsp
}

async fn run<S: Side>(
    side: &S,
    conn: &S::Conn,
    req: Request<Incoming>,
    trace: Option<&CallerTrace>,
    span: &HopSpan,
) -> Result<(Response<Body>, DecisionLabel), RequestError> {
    let shared = side.shared();
    let _permit = Arc::clone(&shared.in_flight)
        .try_acquire_owned()
        .map_err(|_| RequestError::Overloaded)?;
    // Before any work: a request whose audit record could not be kept is not served
    // (`telemetry.audit.when_full: refuse` while stdout is not read).
    if shared.telemetry.audit.refusing() {
        return Err(RequestError::AuditUnavailable);
    }
    let (mut parts, body) = req.into_parts();
    side.screen(&parts)?;
    // Connection-scoped fields describe the caller's hop, not the request (RFC 9110 §7.6.1).
    headers::strip_hop_by_hop(&mut parts.headers)
        .map_err(|_| RequestError::BadRequest("connection header nominates a framing field"))?;
    // The policy reads the path's bytes and one authority; a path the app could resolve
    // differently, or a request naming two hosts, is refused (PATH-03, SMG-17 in
    // docs/security.md).
    path::check(parts.uri.path()).map_err(RequestError::BadRequest)?;
    headers::check_authority(&parts).map_err(RequestError::BadRequest)?;
    let (admission, decision) = decide(side, conn, &parts, trace, span)?;
    side.prepare(conn, &admission, &mut parts);
    // Trailers arrive after the head was cleaned: none are passed on, and neither is the
    // header announcing them.
    parts.headers.remove(http::header::TRAILER);
    // The next hop's (or the app's) spans become children of this one.
    shared.telemetry.tracing.inject(span, &mut parts.headers);
    let req = Request::from_parts(parts, stream_body(WithoutTrailers::new(body)));
    let rsp = side.send(admission, req).await?;
    let (mut parts, body) = rsp.into_parts();
    // The other end's hop-by-hop fields stop here too; a framing field it wrongly nominated is
    // kept, since hyper re-frames the body anyway.
    let _ = headers::strip_hop_by_hop(&mut parts.headers);
    Ok((Response::from_parts(parts, stream_body(body)), decision))
}

/// The request's facts, parsed once from the clean head; the side's admission; the decision,
/// recorded once. The head is only read here: the policy sees what the caller sent and the
/// next hop will see, and the snapshot is read per request.
fn decide<S: Side>(
    side: &S,
    conn: &S::Conn,
    parts: &Parts,
    trace: Option<&CallerTrace>,
    span: &HopSpan,
) -> Result<(S::Admission, DecisionLabel), RequestError> {
    let shared = side.shared();
    let request = HttpFacts::from_parts(parts, shared.authorizer.intent_prefix())?;
    let admission = side.admit(conn, parts, &request, trace, span)?;
    let parties = side.parties(conn, &admission);
    // The token's facts are built only for a reader: a policy or a span.
    let facts = parties
        .token
        .filter(|_| shared.authorizer.has_policies() || span.is_enabled())
        .map(HopToken::facts);
    if let (Some(token), Some(facts)) = (&parties.token, &facts) {
        span.record_token(facts, token.jti(), token.prv());
    }
    let hop = Hop {
        peer: parties.peer,
        own: parties.own,
        dest: parties.dest,
        target: parties.authority.or(request.authority).unwrap_or_default(),
        request: &request,
        token: parties.token.map(|token| (token, facts.as_ref())),
        trace,
    };
    span.record_authority(hop.target);
    let direction = match S::DIRECTION {
        Direction::Inbound => PolicyDirection::Inbound,
        Direction::Outbound => PolicyDirection::Outbound,
    };
    let verdict = shared.authorizer.decide(&hop.request(direction));
    let decision = record(shared, &verdict, &hop, direction, span)?;
    Ok((admission, decision))
}

/// Records a verdict once: the policy evaluation time, the audit record, the span's decision
/// and, for a deny, a log line; then a deny in `enforce` mode becomes the 403.
fn record(
    shared: &Shared,
    verdict: &Verdict,
    hop: &Hop<'_>,
    direction: PolicyDirection,
    span: &HopSpan,
) -> Result<DecisionLabel, RequestError> {
    let Some(decision) = &verdict.decision else {
        span.record_decision(DecisionLabel::Allow.as_str(), None, &[]);
        return Ok(verdict.label);
    };
    let telemetry = &shared.telemetry;
    telemetry
        .metrics
        .record_policy_evaluation(verdict.evaluation);
    // The request span's trace id when there is one, else the caller's.
    let trace_id = span
        .trace_id()
        .or_else(|| hop.trace.map(CallerTrace::trace_id));
    let kept = AuditRecord {
        decision,
        mode: shared.authorizer.mode(),
        direction,
        principal: hop.principal(),
        resource: hop.dest,
        trace_id: trace_id.as_ref().map(TraceIdHex::as_str),
        token: hop.facts(),
        token_jti: hop.token.as_ref().map(|(token, _)| token.jti()),
    }
    .emit(&telemetry.audit);
    if kept == Kept::Dropped {
        telemetry.metrics.record_audit_dropped();
    }
    if decision.effect() == Effect::Deny {
        tracing::info!(
            peer.id = %hop.principal(),
            decision.id = decision.id(),
            policy.effect = "deny",
            reason = decision.reason().map_or("", DenyReason::as_str),
            "request denied"
        );
    }
    span.record_action(decision.action());
    span.record_decision(
        verdict.label.as_str(),
        Some(decision.shared_id()),
        decision.policies(),
    );
    match verdict.label {
        DecisionLabel::Deny => Err(RequestError::Forbidden(decision.id().to_owned())),
        other => Ok(other),
    }
}
