//! `Decision`: the outcome of one authorization. Only the engine makes one, so holding a
//! `Decision` proves the policies were consulted.

use std::fmt;
use std::sync::Arc;

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Effect {
    /// A permit applied and no forbid did, without any evaluation error.
    Allow,
    /// Anything else: hopgate's default.
    Deny,
}

/// Why a hop was denied; the audit record's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// `no_permit`: no permit applied (includes an empty policy set, CED-02).
    NoPermit,
    /// `forbidden`: a forbid applied (forbid wins over any permit, CED-03).
    Forbidden,
    /// `unknown_action`: the schema declares no such action; nothing was evaluated.
    UnknownAction,
    /// `evaluation_error`: a policy erred (Cedar skips it; hopgate denies, CED-01), or the
    /// request could not be built.
    EvaluationError,
}

/// The outcome of one authorization: effect, reason, determining policies, errors, and a
/// UUID v4 that ties the response body, the audit record and the span together.
#[derive(Clone, Debug)]
pub struct Decision {
    effect: Effect,
    reason: Option<DenyReason>,
    policies: Vec<String>,
    errors: Vec<String>,
    id: Arc<str>,
    action: String,
}

// === impl Effect ===

impl Effect {
    /// `"allow"` or `"deny"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl DenyReason ===

impl DenyReason {
    /// The stable code: `no_permit`, `forbidden`, `unknown_action` or `evaluation_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoPermit => "no_permit",
            Self::Forbidden => "forbidden",
            Self::UnknownAction => "unknown_action",
            Self::EvaluationError => "evaluation_error",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Decision ===

impl Decision {
    /// Only the engine builds decisions. `reason` is `None` exactly when `effect` is allow.
    pub(super) fn new(
        reason: Option<DenyReason>,
        policies: Vec<String>,
        errors: Vec<String>,
        action: &str,
    ) -> Self {
        Self {
            effect: match reason {
                None => Effect::Allow,
                Some(_) => Effect::Deny,
            },
            reason,
            policies,
            errors,
            id: Arc::from(
                &*uuid::Uuid::new_v4()
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            ),
            action: action.to_owned(),
        }
    }

    /// Allow or deny.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Whether the hop may proceed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// Why the hop was denied; `None` when it was allowed.
    pub fn reason(&self) -> Option<DenyReason> {
        self.reason
    }

    /// The determining policy ids, sorted: the permits that applied (allow), the forbids that
    /// applied (`forbidden`), or the policies that erred (`evaluation_error`).
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// Evaluation errors, Cedar's text, sorted; non-empty means deny.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// The decision id, a UUID v4.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The decision id, shared: a span records it without copying it.
    pub fn shared_id(&self) -> &Arc<str> {
        &self.id
    }

    /// The action that was evaluated (the header's, or the default).
    pub fn action(&self) -> &str {
        &self.action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_are_the_documented_strings() {
        let codes = [
            DenyReason::NoPermit,
            DenyReason::Forbidden,
            DenyReason::UnknownAction,
            DenyReason::EvaluationError,
        ]
        .map(DenyReason::as_str);
        assert_eq!(
            codes,
            [
                "no_permit",
                "forbidden",
                "unknown_action",
                "evaluation_error"
            ]
        );
        assert_eq!(Effect::Allow.to_string(), "allow");
    }

    #[test]
    fn every_decision_has_a_fresh_uuid_v4() {
        let a = Decision::new(None, vec![], vec![], "call");
        let b = Decision::new(Some(DenyReason::NoPermit), vec![], vec![], "call");
        let parsed = uuid::Uuid::parse_str(a.id()).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(a.id(), b.id());
        assert_eq!(b.effect(), Effect::Deny);
    }
}
