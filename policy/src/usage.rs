//! Which context attributes the policies can observe, so a request carries only those.
//!
//! Cedar turns every context value into an evaluated value whether a policy reads it or not, and
//! that costs about as much as evaluating a policy: a token's sets of actors and scopes alone
//! cost several microseconds per hop. So at load the policies are read once (their JSON form)
//! and every place they touch `context` is recorded:
//!
//! ```text
//! context.token.depth            reads   token.depth          (its whole value)
//! context.token has actors       checks  token.actors         (its presence only)
//! context has token.depth        checks  token, token.depth
//! context.token == x, {a: context}, anything else
//!                                reads   the whole record reached so far
//! ```
//!
//! A request then omits exactly the attributes no policy reads or checks. Every way a policy
//! can observe the context goes through one of these places, and each observes the same thing
//! with or without the omitted attributes, so decisions (and errors) are unchanged; the
//! equivalence tests compare against requests that carry everything.

use std::collections::BTreeMap;

use cedar_policy::PolicySet;
use serde_json::Value;

/// The observed part of a record: all of it, or some fields (each with its own observed part).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ContextUsage {
    whole: bool,
    fields: BTreeMap<String, Self>,
}

// === impl ContextUsage ===

impl ContextUsage {
    /// Everything observed: the reference behaviour.
    pub(crate) fn everything() -> Self {
        Self {
            whole: true,
            fields: BTreeMap::new(),
        }
    }

    /// What `policies` observe of `context`. A policy whose JSON form cannot be produced counts
    /// as observing everything.
    pub(crate) fn of(policies: &PolicySet) -> Self {
        let mut usage = Self::default();
        for policy in policies.policies() {
            match policy.to_json() {
                Ok(json) => usage.walk(&json),
                Err(_) => return Self::everything(),
            }
            if usage.whole {
                break;
            }
        }
        usage
    }

    /// The observed part of field `name`, or `None` when no policy reads or checks it.
    pub(crate) fn field(&self, name: &str) -> Option<&Self> {
        if self.whole {
            return Some(self);
        }
        self.fields.get(name)
    }

    /// Whether field `name` must be present.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.field(name).is_some()
    }

    fn walk(&mut self, json: &Value) {
        if let Some((path, whole)) = context_access(json) {
            self.mark(&path, whole);
            return;
        }
        match json {
            Value::Object(map) => map.values().for_each(|v| self.walk(v)),
            Value::Array(items) => items.iter().for_each(|v| self.walk(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }

    fn mark(&mut self, path: &[String], whole: bool) {
        let mut node = self;
        for name in path {
            if node.whole {
                return;
            }
            node = node.fields.entry(name.clone()).or_default();
        }
        if whole {
            node.whole = true;
            node.fields.clear();
        }
    }
}

/// When `json` is `context` followed by `.attr`s and at most one final `has`, the attribute path
/// and whether the value at its end is read whole (`.`) or only checked for presence (`has`).
fn context_access(json: &Value) -> Option<(Vec<String>, bool)> {
    let object = json.as_object()?;
    if object.len() != 1 {
        return None;
    }
    if object.get("Var").and_then(Value::as_str) == Some("context") {
        return Some((Vec::new(), true));
    }
    if let Some(node) = object.get(".") {
        let (mut path, _) = dotted(node.get("left")?)?;
        path.push(node.get("attr")?.as_str()?.to_owned());
        return Some((path, true));
    }
    let node = object.get("has")?;
    let (mut path, _) = dotted(node.get("left")?)?;
    match node.get("attr")? {
        Value::String(attr) => path.push(attr.clone()),
        Value::Array(attrs) => {
            for attr in attrs {
                path.push(attr.as_str()?.to_owned());
            }
        }
        _ => return None,
    }
    Some((path, false))
}

/// `context` followed only by `.attr`s.
fn dotted(json: &Value) -> Option<(Vec<String>, bool)> {
    let object = json.as_object()?;
    if object.len() == 1 && object.contains_key("has") {
        return None;
    }
    context_access(json)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn usage(conditions: &str) -> ContextUsage {
        let text = format!("permit (principal, action, resource) when {{ {conditions} }};");
        ContextUsage::of(&PolicySet::from_str(&text).unwrap())
    }

    #[test]
    fn a_read_attribute_is_kept_whole_and_a_checked_one_for_presence() {
        let u = usage(
            r#"context.token has depth && context.token.depth > 2 && context.http.method == "GET""#,
        );
        let token = u.field("token").unwrap();
        assert!(token.has("depth") && !token.has("actors") && !token.has("sub"));
        assert!(u.field("http").unwrap().has("method"));
        assert!(!u.field("http").unwrap().has("path"));
        assert!(!u.has("intent") && !u.has("direction"));
    }

    #[test]
    fn a_presence_check_keeps_only_the_path_it_checks() {
        let u = usage("context has token.actors");
        let token = u.field("token").unwrap();
        assert!(token.has("actors"));
        assert!(!token.has("depth"));
    }

    #[test]
    fn a_record_used_as_a_value_is_kept_whole() {
        let u = usage("context.token == context.token");
        assert!(u.field("token").unwrap().has("actors"));
        assert!(!u.has("http"));
    }

    #[test]
    fn context_used_any_other_way_keeps_everything() {
        for conditions in [
            r#"{ a: context }.a.http.method == "GET""#,
            "context == context",
        ] {
            let u = usage(conditions);
            assert!(u.field("token").unwrap().has("actors"), "{conditions}");
            assert!(u.has("direction"), "{conditions}");
        }
    }

    #[test]
    fn index_syntax_counts_like_dots() {
        let u = usage(r#"context["token"]["sub"] == "x""#);
        assert!(u.field("token").unwrap().has("sub"));
        assert!(!u.field("token").unwrap().has("iss"));
    }
}
