//! Deciding an open request again: the same revocation list, the same Cedar call and the same
//! chain verifier a new request meets, fed the facts it was admitted on.

use std::time::SystemTime;

use hopgate_config::InboundMode;
use hopgate_policy::{
    Decision, Effect, HopRequest, PolicySnapshot, Revocation, RevocationFacts, Revocations,
    TokenFacts,
};
use rustls_pki_types::UnixTime;

use super::{CutReason, OpenFacts, Piece};
use crate::identity::IdentitySnapshot;

/// What an open request is judged against in one sweep. A part left `None` did not change
/// since the request was admitted (or since the last sweep) and is not looked at again.
pub(super) struct Judge<'a> {
    /// A new snapshot of the policy folder: its revocations, and its policies where `cedar`.
    pub(super) policy: Option<&'a PolicySnapshot>,
    /// Whether this side enforces the folder's policies (not the outbound side without
    /// `policy.outbound`, which only applies its revocations).
    pub(super) cedar: bool,
    /// Whether a policy deny is enforced (`inbound.mode`): in audit mode it is only recorded
    /// for new requests, and an open one is not cut for it.
    pub(super) mode: InboundMode,
    /// A new identity snapshot: the peer's chain is verified against its bundles.
    pub(super) identity: Option<&'a IdentitySnapshot>,
    pub(super) now: SystemTime,
}

/// Why an open request no longer passes, and the decision that said so (a policy cut).
pub(super) struct Verdict {
    pub(super) reason: CutReason,
    pub(super) decision: Option<Decision>,
}

// === impl Judge ===

impl Judge<'_> {
    /// Revocations first (they name the request itself), then the policy, then trust.
    pub(super) fn judge(&self, facts: &OpenFacts) -> Option<Verdict> {
        if let Some(policy) = self.policy {
            let principal = facts.principal().as_str();
            let jti = facts.text.get(Piece::Jti).unwrap_or_default();
            let token = facts.token.as_ref().map(|t| (&t.facts, jti));
            if revoked(policy.revocations(), principal, token, self.now).is_some() {
                return Some(Verdict {
                    reason: CutReason::Revoked,
                    decision: None,
                });
            }
            let decision = self
                .cedar
                .then(|| policy.authorize(&request(facts, &facts.text.intent())));
            if let Some(decision) = decision
                && decision.effect() == Effect::Deny
                && self.mode == InboundMode::Enforce
            {
                return Some(Verdict {
                    reason: CutReason::Policy,
                    decision: Some(decision),
                });
            }
        }
        if let (Some(identity), Some(chain)) = (self.identity, &facts.parties.peer_chain) {
            let (leaf, intermediates) = chain.certs.split_first()?;
            let now = UnixTime::since_unix_epoch(
                self.now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            if identity
                .peer_verifier()
                .verify_svid(leaf, intermediates, now)
                .is_err()
            {
                return Some(Verdict {
                    reason: CutReason::Trust,
                    decision: None,
                });
            }
        }
        None
    }
}

/// The revocation that matches a hop, if any: its token's `txn`, `jti` and `sub`, the calling
/// workload (`peer`), and every workload of its chain (`actor`: the token's `iss` and each
/// `act`). The one check of new and open requests alike.
pub(crate) fn revoked<'r>(
    revocations: &'r Revocations,
    principal: &str,
    token: Option<(&TokenFacts, &str)>,
    now: SystemTime,
) -> Option<&'r Revocation> {
    if revocations.is_empty() {
        return None;
    }
    let facts = RevocationFacts {
        txn: token.and_then(|(facts, _)| facts.txn.as_deref()),
        jti: token.map(|(_, jti)| jti),
        sub: token.map(|(facts, _)| facts.sub.as_str()),
        peer: Some(principal),
        actors: token.map_or(&[][..], |(facts, _)| facts.actors.as_slice()),
    };
    revocations.matching(&facts, now).or_else(|| {
        // A token without `act` names its one actor in `iss` alone.
        let (token, _) = token?;
        let iss = RevocationFacts {
            txn: None,
            jti: None,
            sub: None,
            peer: None,
            actors: std::slice::from_ref(&token.iss),
        };
        revocations.matching(&iss, now)
    })
}

/// The hop request a new request with these facts would be decided on.
fn request<'a>(facts: &'a OpenFacts, intent: &'a [(&'a str, &'a str)]) -> HopRequest<'a> {
    let mcp = facts.mcp();
    HopRequest {
        peer: facts.principal(),
        destination: facts.dest(),
        direction: facts.direction,
        action: mcp.map(|mcp| mcp.method).or(facts.text.get(Piece::Action)),
        method: facts.method.as_str(),
        path: facts.path(),
        host: facts.text.get(Piece::Host).unwrap_or_default(),
        intent,
        token: facts.token.as_ref().map(|token| &token.facts),
        mcp,
    }
}
