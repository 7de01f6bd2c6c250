//! One runner for both sides of a hop.
//!
//! ```text
//!  request ─▶ caller's traceparent, read once ─▶ span ─▶ in-flight cap ─▶ audit buffer
//!          ─▶ hygiene (hop-by-hop, path, authority) ─▶ HttpFacts, read once (authority, intent)
//!          ─▶ Side::admit, head read only (inbound: the hop token; outbound: route + token)
//!          ─▶ on `mcp.paths`: the JSON-RPC body read and parsed, its call in the facts (hop::mcp)
//!          ─▶ Hop { peer, own, dest, target, request, token, trace } ─▶ Authorizer::decide
//!          ─▶ decided here, once: span, policy metrics, the audit record's head
//!          ─▶ Side::prepare (inbound: XFCC; outbound: credential out, token in)
//!          ─▶ trailers off, traceparent on ─▶ Side::send ─▶ response hygiene
//!          ─▶ inbound `tools/list`: the result read and filtered tool by tool (hop::mcp)
//!  any error ─▶ the one error → response map, with the request's decision id
//!  either way ─▶ one audit record, the span's status, the request metrics (hop::record)
//! ```
//!
//! What differs between the sides is in [`Side`]: how a request is admitted (whose token, which
//! route), what is added to the head after the decision, and where it is sent. Everything else,
//! in this order, is here, so the two sides cannot drift apart.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopgate_config::{InboundLimits, InboundTimeouts, SpiffeId};
use hopgate_policy::{Direction as PolicyDirection, HopRequest, TokenFacts, is_mcp_method};
use http::request::Parts;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::authorize::{Authorizer, HttpFacts};
use crate::http::mcp::{McpCall, ToolFilter};
use crate::http::{Body, BodyFailure, Malformed, RequestError, forwarded, full_body, headers};
use crate::streams::{OpenParties, Streams};
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::{DecisionLabel, Direction, ProxyMetrics};
use crate::telemetry::trace::{HopSpan, SpanKind, Tracing};
use crate::telemetry::traceparent::CallerTrace;

mod hygiene;
mod mcp;
mod open;
mod record;
#[cfg(test)]
pub(crate) mod test_support;
mod token;

pub(crate) use record::Known;
use record::Record;
pub(crate) use token::HopToken;

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
    /// How long an MCP request's body may take to arrive (`inbound.timeouts.header_read`).
    pub(crate) body_read: Duration,
    /// How long a `tools/list` result to filter may take (`inbound.timeouts.app_response`).
    pub(crate) result_read: Duration,
    /// How long a request body may stall before it is cut (`inbound.timeouts.idle`, DOS-02).
    pub(crate) body_idle: Duration,
    /// The requests open on this side, re-decided when what admitted them changes.
    pub(crate) streams: Arc<Streams>,
}

// === impl Shared ===

impl Shared {
    /// The shared state of a side whose listener takes `limits`. One HTTP/2 connection may
    /// carry many requests, so requests get their own, larger cap (connections × streams);
    /// past it the caller gets a fast 503 rather than an unbounded queue.
    pub(crate) fn new(
        authorizer: Authorizer,
        telemetry: HopTelemetry,
        timeouts: &InboundTimeouts,
        limits: &InboundLimits,
        streams: Streams,
    ) -> Self {
        let max_in_flight = limits
            .max_connections()
            .saturating_mul(usize::try_from(limits.max_concurrent_streams()).unwrap_or(1))
            .min(Semaphore::MAX_PERMITS);
        Self {
            authorizer,
            telemetry,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            body_read: timeouts.header_read(),
            result_read: timeouts.app_response(),
            body_idle: timeouts.idle(),
            streams: Arc::new(streams),
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

    /// The parties as far as the connection knows them, for the record of a request refused
    /// before its admission.
    fn known(&self, conn: &Self::Conn) -> Known;

    /// The side's changes to the head once the decision allowed it (inbound: XFCC; outbound:
    /// the app's credential out, the hop token in).
    fn prepare(&self, conn: &Self::Conn, admission: &Self::Admission, parts: &mut Parts);

    /// Sends the request on: to the app (inbound) or to the destination sidecar (outbound).
    /// The admission stays with the runner, whose audit record reads it once the response is
    /// back.
    fn send(
        &self,
        admission: &Self::Admission,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, RequestError>> + Send;

    /// The mTLS peer of the connection, for the failure log line (inbound); `None` outbound,
    /// where the caller is the local app.
    fn peer<'a>(&'a self, _conn: &'a Self::Conn) -> Option<&'a SpiffeId> {
        None
    }

    /// The parties an open request of `conn` is kept with, shared by the requests of its
    /// connection (inbound) or route (outbound), and the identity generation its peer's chain
    /// was last verified under (0 outbound, which keeps no chain).
    fn open_parties(
        &self,
        conn: &Self::Conn,
        admission: &Self::Admission,
    ) -> (Arc<OpenParties>, u64);
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
    /// The route's `host` (outbound).
    pub(crate) route: Option<&'a str>,
    /// The caller's socket address.
    pub(crate) client_addr: Option<SocketAddr>,
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
    /// See [`Parties::route`].
    pub(crate) route: Option<&'a str>,
    /// See [`Parties::client_addr`].
    pub(crate) client_addr: Option<SocketAddr>,
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
    let version = req.version();
    let (result, record) = run(side, conn, req, trace.as_ref(), &span, start).await;
    // After a refused HTTP/1.x head, whatever follows on the connection is not trusted to be
    // framed as the caller meant: it is closed, not read as a next request (SMG-19).
    let close =
        version < http::Version::HTTP_2 && matches!(result, Err(RequestError::BadRequest(..)));
    let mut rsp = record.finish(side, conn, result, &span, start);
    if close {
        rsp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    rsp
}

/// What a request admitted by [`admit`] carries on to its sending.
struct Admitted<A> {
    admission: A,
    label: DecisionLabel,
    /// The body to send on: the caller's, streamed, or an MCP request's, as read.
    body: Body,
    /// A `tools/list` whose result is filtered on the way back (inbound, MCP-06).
    filter: Option<ToolFilter>,
    /// Whether the caller's body failed: a send that fails for it is the caller's fault.
    body_failure: BodyFailure,
    /// What it was admitted on, to register it as open.
    open: Option<open::Admitted>,
    /// Held until the response head is back.
    _permit: OwnedSemaphorePermit,
}

/// The request through the pipeline, and its record as far as it got (the head is written
/// wherever the request was decided or refused).
async fn run<S: Side>(
    side: &S,
    conn: &S::Conn,
    req: Request<Incoming>,
    trace: Option<&CallerTrace>,
    span: &HopSpan,
    start: Instant,
) -> (
    Result<(Response<Body>, DecisionLabel), RequestError>,
    Record,
) {
    let shared = side.shared();
    let (mut parts, body) = req.into_parts();
    let (admitted, record) = admit(side, conn, &mut parts, body, trace, span, start).await;
    let Admitted {
        admission,
        label,
        body,
        filter,
        body_failure,
        open,
        _permit,
    } = match admitted {
        Ok(admitted) => admitted,
        Err(err) => return (Err(err), record),
    };
    side.prepare(conn, &admission, &mut parts);
    if filter.is_some() {
        // A list to filter must come back as the JSON or SSE it says it is, not compressed.
        parts.headers.remove(http::header::ACCEPT_ENCODING);
    }
    // Trailers arrive after the head was cleaned: none are passed on, and neither is the
    // header announcing them.
    parts.headers.remove(http::header::TRAILER);
    // The next hop's (or the app's) spans become children of this one.
    shared.telemetry.tracing.inject(span, &mut parts.headers);
    let req = Request::from_parts(parts, body);
    let registration = open.map(|open| open.register(shared));
    let sent = match &registration {
        // A request cut while its response head is awaited is answered as a new one refused
        // for the same reason would be. The send is polled first: the cut is only waited on
        // while the head is not back.
        Some(registration) => tokio::select! {
            biased;
            rsp = side.send(&admission, req) => rsp,
            reason = registration.open().cut_signal() => Err(open::cut_error(reason)),
        },
        None => side.send(&admission, req).await,
    };
    let rsp = match sent {
        Ok(rsp) => rsp,
        // A malformed chunk or a caller gone mid-body is answered 400, not blamed upstream.
        Err(_) if body_failure.failed() => {
            let err = RequestError::BadRequest(Malformed::Body, "the request body broke off");
            return (Err(err), record);
        }
        Err(err) => return (Err(err), record),
    };
    let (mut parts, body) = rsp.into_parts();
    // The other end's hop-by-hop fields stop here too; a framing field it wrongly nominated is
    // kept, since hyper re-frames the body anyway.
    let _ = headers::strip_hop_by_hop(&mut parts.headers);
    let status = parts.status.as_u16();
    let body = match filter {
        // Every success is read: a list could come back under any 2xx.
        Some(filter) if parts.status.is_success() => {
            match mcp::filter_result(shared, &filter, &mut parts.headers, body).await {
                Ok(body) => open::guarded(registration, status, body),
                Err(err) => return (Err(err), record),
            }
        }
        _ => open::guarded(registration, status, body),
    };
    (Ok((Response::from_parts(parts, body), label)), record)
}

/// Everything before the request is sent: capacity, hygiene, the facts parsed once, the side's
/// admission and the decision. The head is only read after hygiene: the policy sees what the
/// caller sent and the next hop will see, and the snapshot is read per request. Whatever
/// happens, the record's head is written here, from what was known at that point.
async fn admit<S: Side>(
    side: &S,
    conn: &S::Conn,
    parts: &mut Parts,
    body: Incoming,
    trace: Option<&CallerTrace>,
    span: &HopSpan,
    start: Instant,
) -> (Result<Admitted<S::Admission>, RequestError>, Record) {
    let shared = side.shared();
    let refused = |err: RequestError, parts: &Parts, request: Option<&HttpFacts<'_>>| {
        let record = Record::refused(side, conn, parts, request, trace, span);
        (Err(err), record)
    };
    let Ok(permit) = Arc::clone(&shared.in_flight).try_acquire_owned() else {
        return refused(RequestError::Overloaded, parts, None);
    };
    // Before any work: a request whose audit record could not be kept is not served
    // (`telemetry.audit.when_full: refuse` while stdout is not read).
    if shared.telemetry.audit.refusing() {
        return refused(RequestError::AuditUnavailable, parts, None);
    }
    if let Err(err) = hygiene::check(side, parts) {
        return refused(err, parts, None);
    }
    let parts = &*parts;
    // Declared before the facts, which borrow it.
    let call: Option<McpCall>;
    let mut body_failure = BodyFailure::default();
    let mut request = match HttpFacts::from_parts(parts, shared.authorizer.intent_prefix()) {
        Ok(request) => request,
        Err(err) => return refused(err, parts, None),
    };
    let admission = match side.admit(conn, parts, &request, trace, span) {
        Ok(admission) => admission,
        Err(err) => return refused(err, parts, Some(&request)),
    };
    let mcp = shared
        .authorizer
        .mcp()
        .filter(|mcp| parts.method == http::Method::POST && mcp.is_mcp_path(parts.uri.path()));
    let body = match mcp {
        Some(mcp) => {
            // The call is read before the decision: its method and tool decide (MCP-01..04).
            let (parsed, bytes) = match mcp::read_call(shared, mcp, &parts.headers, body).await {
                Ok(parsed) => parsed,
                Err(refusal) => {
                    let (err, record) = refused(RequestError::Mcp(refusal), parts, Some(&request));
                    return (err, record.mcp(serde_json::Value::Null));
                }
            };
            span.record_mcp(
                parsed.method(),
                parsed.name(),
                parsed.facts().protocol_version,
            );
            call = Some(parsed);
            request.mcp = call.as_ref().map(McpCall::facts);
            full_body(bytes)
        }
        None => {
            call = None;
            // Where MCP is read, an MCP method is the action of MCP requests alone, which always
            // carry `context.mcp`: a header cannot borrow the rules written for them (MCP-07).
            // Without an `mcp` section nothing is MCP, and any action name is the operator's.
            if shared.authorizer.mcp().is_some() && request.action.is_some_and(is_mcp_method) {
                let err = RequestError::BadRequest(
                    Malformed::Intent,
                    "an MCP method is the action of MCP requests only",
                );
                return refused(err, parts, Some(&request));
            }
            let (body, failure) = forwarded(body, shared.body_idle);
            body_failure = failure;
            body
        }
    };
    let parties = side.parties(conn, &admission);
    // One snapshot of the policy folder per request: its revocations, then its policies.
    let folder = shared.authorizer.policy_snapshot();
    let revocations = folder
        .as_ref()
        .is_some_and(|folder| !folder.revocations().is_empty());
    // The token's facts are built only for a reader: a policy, a revocation list or a span.
    let facts = parties
        .token
        .filter(|_| shared.authorizer.has_policies() || revocations || span.is_enabled())
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
        route: parties.route,
        client_addr: parties.client_addr,
    };
    span.record_authority(hop.target);
    let direction = policy_direction(S::DIRECTION);
    // A revoked transaction, token, user or workload is refused before any policy is asked.
    if revocations
        && let Some(record) = open::revoked(shared, folder.as_deref(), &hop, direction, span)
    {
        return (Err(RequestError::Unauthenticated("revoked")), record);
    }
    let verdict = shared
        .authorizer
        .decide_on(folder.as_ref(), &hop.request(direction));
    let decided_on = folder;
    let (label, mut record) = Record::decided(shared, verdict, &hop, direction, span);
    let mut filter = None;
    if let Some(call) = &call {
        record = record.mcp(call.id().clone());
        filter = mcp::tool_filter::<S>(shared, call, &hop.request(direction), &request);
    }
    let open = (label != DecisionLabel::Deny && shared.streams.enabled()).then(|| {
        let (kept, generation) = side.open_parties(conn, &admission);
        let facts = open::facts::<S>(kept, parts, &parties, &request, facts, &record);
        open::Admitted {
            // Its age counts from its arrival.
            open: shared.streams.open(facts, generation, start),
            decided_on,
        }
    });
    let admitted = match label {
        DecisionLabel::Deny => Err(RequestError::Forbidden),
        label => Ok(Admitted {
            admission,
            label,
            body,
            filter,
            body_failure,
            open,
            _permit: permit,
        }),
    };
    (admitted, record)
}

/// The side as the policy engine names it.
fn policy_direction(direction: Direction) -> PolicyDirection {
    match direction {
        Direction::Inbound => PolicyDirection::Inbound,
        Direction::Outbound => PolicyDirection::Outbound,
    }
}
