//! What the runner does for the registry of open requests (crate::streams): the revocation
//! check of a new request, the owned facts an admitted one is registered with, and its response
//! body, which a cut ends.

use std::sync::Arc;
use std::time::Duration;

use hopgate_policy::{Direction as PolicyDirection, PolicySnapshot, TokenFacts};
use http::request::Parts;

use super::record::Record;
use super::{Hop, HopToken, Parties, Shared, Side, policy_direction};
use crate::http::authorize::{Authorizer, HttpFacts, Verdict};
use crate::http::{Body, RequestError, stream_body};
use crate::streams::{
    CutReason, Guarded, Open, OpenFacts, OpenParties, OpenText, OpenToken, Registration,
};
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::{DecisionLabel, ProxyMetrics};
use crate::telemetry::trace::HopSpan;

/// Every side's open requests are looked after by a sweeper of its own (streams.rs).
impl<S: Side + Send> crate::streams::Owner for S {
    fn authorizer(&self) -> &Authorizer {
        &self.shared().authorizer
    }

    fn records(&self) -> (&ProxyMetrics, &AuditSink) {
        let telemetry = &self.shared().telemetry;
        (&telemetry.metrics, &telemetry.audit)
    }
}

/// The record of a request refused because `folder`'s revocations match it, if they do.
pub(super) fn revoked(
    shared: &Shared,
    folder: Option<&PolicySnapshot>,
    hop: &Hop<'_>,
    direction: PolicyDirection,
    span: &HopSpan,
) -> Option<Record> {
    let revocable = hop
        .token
        .and_then(|(token, facts)| Some((facts?, token.jti())));
    let revocation = crate::streams::revoked(
        folder?.revocations(),
        hop.principal().as_str(),
        revocable,
        std::time::SystemTime::now(),
    )?;
    tracing::info!(peer.id = %hop.principal(), revocation = revocation.reason(), "request revoked");
    let verdict = Verdict {
        label: DecisionLabel::Unauthenticated,
        decision: None,
        evaluation: Duration::ZERO,
    };
    let (_, record) = Record::decided(shared, verdict, hop, direction, span);
    Some(record)
}

/// The response body, cut with its request when it is open in the registry.
pub(super) fn guarded<B>(registration: Option<Registration>, status: u16, body: B) -> Body
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<crate::http::BoxError>,
{
    match registration {
        Some(registration) => {
            registration.set_status(status);
            stream_body(Guarded::new(body, registration))
        }
        None => stream_body(body),
    }
}

/// What an admitted request is registered as open with.
pub(super) struct Admitted {
    pub(super) open: Arc<Open>,
    /// The policy snapshot that decided it.
    pub(super) decided_on: Option<Arc<PolicySnapshot>>,
}

impl Admitted {
    /// Registers it. One decided on a snapshot that was replaced before it got here is decided
    /// again by the sweeper: no reload slips between its decision and its registration.
    pub(super) fn register(self, shared: &Shared) -> Registration {
        let registration = shared.streams.register(self.open);
        if let Some(decided_on) = self.decided_on
            && shared
                .authorizer
                .policy_snapshot()
                .is_none_or(|current| !Arc::ptr_eq(&current, &decided_on))
        {
            registration.decided_on_stale_policy();
        }
        registration
    }
}

/// The refusal of a request cut before its response head: what a new request refused for the
/// same reason gets.
pub(super) fn cut_error(reason: CutReason) -> RequestError {
    match reason {
        CutReason::Revoked => RequestError::Unauthenticated("revoked"),
        CutReason::Trust => RequestError::Unauthenticated("trust"),
        CutReason::TokenExpired => RequestError::Unauthenticated("expired"),
        CutReason::Policy => RequestError::Forbidden,
        CutReason::MaxAge => RequestError::UpstreamTimeout,
    }
}

/// Owned copies of what a request was admitted on, for the registry of open requests: its
/// text in one allocation, its connection's or route's `parties` shared.
pub(super) fn facts<S: Side>(
    parties: Arc<OpenParties>,
    parts: &Parts,
    hop: &Parties<'_>,
    request: &HttpFacts<'_>,
    facts: Option<TokenFacts>,
    record: &Record,
) -> OpenFacts {
    let audit = hop.token.as_ref().map(HopToken::audit);
    let mcp = request.mcp;
    let text = OpenText::new(
        [
            Some(request.path),
            request.authority,
            request.action,
            mcp.map(|mcp| mcp.method),
            mcp.and_then(|mcp| mcp.name),
            mcp.map(|mcp| mcp.protocol_version),
            hop.route,
            audit.as_ref().map(|audit| audit.jti),
            audit.as_ref().and_then(|audit| audit.prv),
        ],
        &request.intent,
    );
    let token = hop
        .token
        .as_ref()
        .zip(audit)
        .map(|(token, audit)| OpenToken {
            hash: *audit.hash,
            depth: audit.depth,
            expires_at: token.expires_at(),
            facts: facts.unwrap_or_else(|| token.facts()),
        });
    let (decision_id, trace_id) = record.ids();
    OpenFacts {
        direction: policy_direction(S::DIRECTION),
        parties,
        method: parts.method.clone(),
        text,
        token,
        client_addr: hop.client_addr,
        trace_id,
        decision_id,
    }
}
