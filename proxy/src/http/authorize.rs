//! Authorization: the Cedar decision for one hop, built from the request the proxy is about to
//! forward, so the policy sees exactly the method, path and host the app will see
//! (PATH-01 in docs/security.md).
//!
//! The request facts are built here and nowhere else: `hopgate policy explain` and
//! `hopgate policy test` call [`HttpFacts::from_parts`] too, so an offline decision is the
//! decision the sidecar makes live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hopgate_config::{InboundMode, IntentConfig, McpConfig, SpiffeId};
use hopgate_policy::{
    Decision, Direction, Effect, HopRequest, McpFacts, PolicySnapshot, PolicyStore, TokenFacts,
};
use http::request::Parts;

use super::{RequestError, headers, intent};
use crate::telemetry::metrics::DecisionLabel;

/// The facts of an HTTP request that policies may read, borrowed from the request head.
#[derive(Debug)]
pub struct HttpFacts<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request path, exactly as forwarded (no query).
    pub path: &'a str,
    /// The authority: `Host`, or the URI's authority on HTTP/2; `None` when the request names
    /// none (the policy's `context.http.host` is then empty).
    pub authority: Option<&'a str>,
    /// The `<prefix>action` header, if present.
    pub action: Option<&'a str>,
    /// Every `<prefix>*` header, prefix stripped (`intent-purpose` → `purpose`).
    pub intent: Vec<(&'a str, &'a str)>,
    /// The MCP call, on an MCP path; its method is then the action.
    pub mcp: Option<McpFacts<'a>>,
}

/// What the policy said about one request, before anything is recorded: the hop runner
/// records it once (audit record, span, metrics, log line) and turns a deny into the 403.
#[derive(Debug)]
pub struct Verdict {
    /// How the request is counted.
    pub label: DecisionLabel,
    /// The decision; `None` identity-only, when nothing was evaluated.
    pub decision: Option<Decision>,
    /// How long the evaluation took.
    pub evaluation: Duration,
}

/// Decides requests against the live policy set, or admits every verified peer when hopgate
/// runs identity-only (no `policy` section).
#[derive(Debug)]
pub struct Authorizer {
    policies: Option<Arc<PolicyStore>>,
    /// The policy folder, for its revocations: the same store as `policies` where they are
    /// enforced.
    folder: Option<Arc<PolicyStore>>,
    mode: InboundMode,
    intent_prefix: String,
    mcp: Option<McpConfig>,
}

// === impl HttpFacts ===

impl<'a> HttpFacts<'a> {
    /// Reads the facts off a request head: once per request, for the policy, the token's
    /// `tctx`, the span and the audit record alike.
    ///
    /// # Errors
    /// [`RequestError::BadRequest`] when an intent header is not UTF-8 or appears twice: a
    /// value the policy cannot read unambiguously is refused, never guessed at.
    pub fn from_parts(parts: &'a Parts, intent_prefix: &str) -> Result<Self, RequestError> {
        let authority = headers::authority(&parts.uri, &parts.headers);
        let intent = intent::entries(&parts.headers, intent_prefix)?;
        let action = intent.iter().find(|(k, _)| *k == "action").map(|(_, v)| *v);
        Ok(Self {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            authority,
            action,
            intent,
            mcp: None,
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
            action: self.mcp.map(|mcp| mcp.method).or(self.action),
            method: self.method,
            path: self.path,
            host: self.authority.unwrap_or_default(),
            intent: &self.intent,
            token,
            mcp: self.mcp,
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
    ) -> Self {
        Self {
            folder: policies.clone(),
            policies,
            mode,
            intent_prefix: intent.header_prefix().to_owned(),
            mcp: None,
        }
    }

    /// The same, reading MCP requests on `mcp.paths` (`None`: none is read as MCP).
    #[must_use]
    pub fn with_mcp(mut self, mcp: Option<&McpConfig>) -> Self {
        self.mcp = mcp.cloned();
        self
    }

    /// MCP awareness, when it is on.
    pub fn mcp(&self) -> Option<&McpConfig> {
        self.mcp.as_ref()
    }

    /// Whether policies are enforced (false: identity-only).
    pub fn has_policies(&self) -> bool {
        self.policies.is_some()
    }

    /// Whether a deny is enforced or only recorded (`inbound.mode`).
    pub fn mode(&self) -> InboundMode {
        self.mode
    }

    /// The intent headers' prefix (`intent.header_prefix`), for [`HttpFacts::from_parts`].
    pub fn intent_prefix(&self) -> &str {
        &self.intent_prefix
    }

    /// Decides one request; records nothing.
    ///
    /// The snapshot is read per request, never cached per connection, so a new `forbid`
    /// applies to the next request on an open keep-alive or HTTP/2 connection too.
    pub fn decide(&self, request: &HopRequest<'_>) -> Verdict {
        let Some(policies) = &self.policies else {
            return Verdict {
                label: DecisionLabel::Allow,
                decision: None,
                evaluation: Duration::ZERO,
            };
        };
        self.verdict(policies.current(), request)
    }

    fn verdict(&self, snapshot: Arc<PolicySnapshot>, request: &HopRequest<'_>) -> Verdict {
        let start = Instant::now();
        let decision = snapshot.authorize(request);
        let evaluation = start.elapsed();
        let label = match (decision.effect(), self.mode) {
            (Effect::Allow, _) => DecisionLabel::Allow,
            (Effect::Deny, InboundMode::Audit) => DecisionLabel::AuditDeny,
            (Effect::Deny, InboundMode::Enforce) => DecisionLabel::Deny,
        };
        Verdict {
            label,
            decision: Some(decision),
            evaluation,
        }
    }

    /// The snapshot of the policy folder in use, for its revocations and, where policies are
    /// enforced, its policies: load it once per request. `None` without a `policy` section.
    pub(crate) fn policy_snapshot(&self) -> Option<Arc<PolicySnapshot>> {
        self.folder.as_ref().map(|folder| folder.current())
    }

    /// [`decide`](Self::decide) on `snapshot`, the one [`policy_snapshot`](Self::policy_snapshot)
    /// gave for this request (its revocations were checked on it too).
    pub(crate) fn decide_on(
        &self,
        snapshot: Option<&Arc<PolicySnapshot>>,
        request: &HopRequest<'_>,
    ) -> Verdict {
        match (&self.policies, snapshot) {
            (Some(_), Some(snapshot)) => self.verdict(Arc::clone(snapshot), request),
            _ => self.decide(request),
        }
    }

    /// Also refuses what `revocations.yaml` in `folder` revokes, where `folder`'s policies are
    /// not enforced on this side (the outbound side without `policy.outbound`).
    #[must_use]
    pub fn with_revocations(mut self, folder: Option<Arc<PolicyStore>>) -> Self {
        self.folder = folder;
        self
    }
}
