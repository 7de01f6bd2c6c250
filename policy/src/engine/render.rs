//! `CedarRequest`: the Cedar request of one hop, rendered for people
//! (`hopgate policy explain --verbose`). Built anew on demand; never on the request path.

use cedar_policy::EntityUid;
use serde_json::Value;

use super::{Engine, Scope};
use crate::HopRequest;

/// The Cedar request [`PolicySnapshot::authorize`](crate::PolicySnapshot::authorize) evaluates
/// for one hop: principal, action and resource as Cedar writes them, the context and the
/// entities involved as Cedar JSON.
#[derive(Clone, Debug)]
pub struct CedarRequest {
    principal: String,
    action: String,
    resource: String,
    context: Value,
    entities: Value,
}

// === impl CedarRequest ===

impl CedarRequest {
    /// `Hop::Workload::"<peer>"`.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// `Hop::Action::"<action>"`.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// `Hop::Workload::"<destination>"`.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The context, as evaluated: the attributes no policy of the snapshot reads are left
    /// out, as on the request path (reading none of them, no policy can tell).
    pub fn context(&self) -> &Value {
        &self.context
    }

    /// The entities involved, in Cedar's entity JSON format: the principal, the resource, the
    /// action, then their ancestors (trust domains, groups, action groups) by uid. An ancestor
    /// that is only named (a trust domain without an entry in entities.json) has no entity.
    pub fn entities(&self) -> &Value {
        &self.entities
    }
}

// === impl Engine ===

impl Engine {
    /// The request [`authorize`](Self::authorize) builds for `req`; `None` when nothing would
    /// be evaluated (an undeclared action) or the request cannot be built (the decision's
    /// errors say why).
    pub(crate) fn cedar_request(&self, req: &HopRequest<'_>) -> Option<CedarRequest> {
        let action = self
            .info
            .action(req.action.unwrap_or(&self.default_action))?;
        let principal = self.names.workload(req.peer);
        let (entities, request) = self
            .request(req, principal.clone(), action, Scope::Sliced)
            .ok()?;
        let context = request.context()?.to_json_value().ok()?;
        let resource = self.names.workload(req.destination);
        let mut uids = vec![principal.clone(), resource.clone(), action.uid.clone()];
        let mut ancestors: Vec<&EntityUid> = uids
            .iter()
            .filter_map(|uid| entities.ancestors(uid))
            .flatten()
            .collect();
        ancestors.sort_by_cached_key(|uid| uid.to_string());
        for uid in ancestors {
            if !uids.contains(uid) {
                uids.push(uid.clone());
            }
        }
        let listed = uids
            .iter()
            .filter_map(|uid| entities.get(uid))
            .map(cedar_policy::Entity::to_json_value)
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        Some(CedarRequest {
            principal: principal.to_string(),
            action: action.uid.to_string(),
            resource: resource.to_string(),
            context,
            entities: Value::Array(listed),
        })
    }
}
