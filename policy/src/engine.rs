//! The engine: `HopRequest` → `Decision`. Synchronous, no I/O, no panics.
//!
//! ```text
//! action declared? ──no──▶ deny unknown_action (nothing evaluated)
//!   │ yes
//! principal/resource UIDs (API-built, CED-04)
//! entities: the static set, or static + the unlisted workloads (cached per pair)
//! context from typed values, only what policies observe ─▶ Request (no per-request schema
//!   pass; the shapes were checked at load)
//! the peer's slice ─▶ Cedar per set ─▶ combine: forbid wins (CED-03), any error denies
//!   (CED-01), no permit denies (CED-02)
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy::{
    AuthorizationError, Authorizer, Decision as CedarDecision, Entities, EntityUid, PolicySet,
    Request,
};

use crate::HopRequest;
use crate::entities::{EntityCache, Names};
use crate::schema::{ActionInfo, SchemaInfo};
use crate::slice::SliceIndex;
use crate::usage::ContextUsage;

mod decision;
mod memo;
mod render;

pub use decision::{Decision, DenyReason, Effect};
pub(crate) use memo::DecisionMemo;
use memo::Memoized;
pub use render::CedarRequest;

/// What one snapshot evaluates with. Immutable once built.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) info: SchemaInfo,
    pub(crate) names: Names,
    pub(crate) entities: Arc<Entities>,
    pub(crate) entity_cache: EntityCache,
    pub(crate) slices: SliceIndex,
    pub(crate) full: Arc<PolicySet>,
    pub(crate) usage: ContextUsage,
    pub(crate) default_action: String,
    pub(crate) authorizer: Authorizer,
    pub(crate) memo: DecisionMemo,
}

/// Which policies to hand Cedar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Only the peer's slice, and only the context attributes policies observe (the
    /// production path).
    Sliced,
    /// Every policy and the whole context: the reference the tests compare against.
    #[cfg_attr(
        not(any(test, feature = "test-util")),
        expect(dead_code, reason = "only the tests and benches ask for the reference")
    )]
    Unsliced,
}

/// What the per-bucket Cedar responses add up to.
#[derive(Default)]
struct Outcome {
    permits: BTreeSet<String>,
    forbids: BTreeSet<String>,
    erring: BTreeSet<String>,
    errors: Vec<String>,
}

// === impl Engine ===

impl Engine {
    pub(crate) fn authorize(&self, req: &HopRequest<'_>, scope: Scope) -> Decision {
        let action_name = req.action.unwrap_or(&self.default_action);
        let Some(action) = self.info.action(action_name) else {
            return Decision::new(Some(DenyReason::UnknownAction), vec![], vec![], action_name);
        };
        // The production path reuses what this snapshot decided for the very same facts.
        let memo_key =
            (scope == Scope::Sliced).then(|| crate::context::key(req, action_name, &self.usage));
        if let Some(m) = memo_key.as_deref().and_then(|key| self.memo.get(key)) {
            return Decision::new(m.reason, m.policies, m.errors, action_name);
        }
        let principal = self.names.workload(req.peer);
        let sets = match scope {
            Scope::Sliced => self.slices.slice(&principal, req.peer.trust_domain_name()),
            Scope::Unsliced => std::slice::from_ref(&self.full),
        };
        let (entities, request) = match self.request(req, principal, action, scope) {
            Ok(built) => built,
            Err(error) => {
                let error = format!("building the request: {error}");
                return Decision::new(
                    Some(DenyReason::EvaluationError),
                    vec![],
                    vec![error],
                    action_name,
                );
            }
        };
        let mut outcome = Outcome::default();
        for set in sets {
            outcome.add(&self.authorizer.is_authorized(&request, set, &entities));
        }
        let decision = outcome.into_decision(action_name);
        if let Some(key) = memo_key {
            let memoized = Memoized {
                reason: decision.reason(),
                policies: decision.policies().to_vec(),
                errors: decision.errors().to_vec(),
            };
            self.memo.insert(key, memoized);
        }
        decision
    }

    /// The entities and the Cedar request for one hop.
    fn request(
        &self,
        req: &HopRequest<'_>,
        principal: EntityUid,
        action: &ActionInfo,
        scope: Scope,
    ) -> Result<(Arc<Entities>, Request), String> {
        let resource = self.names.workload(req.destination);
        let entities = self.entities_for(req, &principal, &resource)?;
        let context = match scope {
            Scope::Sliced => req.context(&action.intent, &action.tctx, &self.usage)?,
            Scope::Unsliced => {
                req.context(&action.intent, &action.tctx, &ContextUsage::everything())?
            }
        };
        let request = Request::new(principal, action.uid.clone(), resource, context, None)
            .map_err(|e| e.to_string())?;
        Ok((entities, request))
    }

    /// The static store when it lists both workloads, else a copy with the unlisted ones added
    /// (cached per pair).
    fn entities_for(
        &self,
        req: &HopRequest<'_>,
        principal: &EntityUid,
        resource: &EntityUid,
    ) -> Result<Arc<Entities>, String> {
        let listed = |uid| self.entities.get(uid).is_some();
        if listed(principal) && listed(resource) {
            return Ok(Arc::clone(&self.entities));
        }
        self.entity_cache.get_or_build((principal, resource), || {
            let mut missing = Vec::with_capacity(2);
            if !listed(principal) {
                missing.push(self.names.workload_entity(principal.clone(), req.peer)?);
            }
            if resource != principal && !listed(resource) {
                missing.push(
                    self.names
                        .workload_entity(resource.clone(), req.destination)?,
                );
            }
            Entities::clone(&self.entities)
                .add_entities(missing, None)
                .map_err(|e| e.to_string())
        })
    }
}

// === impl Outcome ===

impl Outcome {
    /// Adds one bucket's response. Cedar answers deny with the satisfied forbids as reasons, or
    /// allow with the satisfied permits, or deny with none; erring policies are skipped by Cedar
    /// and reported as errors.
    fn add(&mut self, response: &cedar_policy::Response) {
        let reasons = response.diagnostics().reason().map(ToString::to_string);
        match response.decision() {
            CedarDecision::Allow => self.permits.extend(reasons),
            CedarDecision::Deny => self.forbids.extend(reasons),
        }
        for error in response.diagnostics().errors() {
            match error {
                AuthorizationError::PolicyEvaluationError(e) => {
                    self.erring.insert(e.policy_id().to_string());
                }
            }
            self.errors.push(error.to_string());
        }
    }

    /// Forbid wins (CED-03); then any error denies (CED-01, Cedar itself would have allowed);
    /// then a permit allows; else nothing applied (CED-02).
    fn into_decision(mut self, action: &str) -> Decision {
        self.errors.sort();
        let (reason, policies) = if !self.forbids.is_empty() {
            (Some(DenyReason::Forbidden), self.forbids)
        } else if !self.errors.is_empty() {
            (Some(DenyReason::EvaluationError), self.erring)
        } else if !self.permits.is_empty() {
            (None, self.permits)
        } else {
            (Some(DenyReason::NoPermit), BTreeSet::new())
        };
        Decision::new(reason, policies.into_iter().collect(), self.errors, action)
    }
}
