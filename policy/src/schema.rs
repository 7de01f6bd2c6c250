//! What hopgate reads from the schema once per load: the declared actions, each action's intent
//! attributes, and a check that the context shape the schema declares is one hopgate fills.
//!
//! Because the request is built without a per-request schema pass, this check is what keeps
//! strict validation honest: a policy that validates against the schema sees, at run time,
//! attributes of exactly the declared types. The rules, per action of namespace `Hop`:
//!
//! - `direction`: `String`; `http` and `token`: records whose attributes hopgate fills have the
//!   types and the optionality of `context.rs`'s tables ([`context::HTTP`], [`context::TOKEN`]);
//! - `intent`, and `token.tctx`: records whose attributes are all optional `String`s (a header
//!   may be absent, an origin may not have set an entry);
//! - `mcp`, for an action that is an MCP method (`tools/call`, ...): a record of `method` and
//!   `protocol_version` (`String`s, always set) and an optional `String` `name`; hopgate sets it
//!   on every request decided as such an action, so it may be required;
//! - anything else hopgate never sets, so it must be optional.
//!
//! A violation is a load error naming the action and the attribute.

use std::collections::HashMap;
use std::path::Path;

use cedar_policy::{EntityUid, Schema};
use serde_json::{Map, Value};

use crate::context::{self, Kind};
use crate::error::Problem;

/// The namespace of every hopgate entity type and action.
pub(crate) const NAMESPACE: &str = "Hop";

/// Actions declared by the schema, by name.
#[derive(Debug)]
pub(crate) struct SchemaInfo {
    actions: HashMap<String, ActionInfo>,
}

/// One declared action: its UID and the intent and `tctx` attributes its context declares
/// (sorted).
#[derive(Debug)]
pub(crate) struct ActionInfo {
    pub(crate) uid: EntityUid,
    pub(crate) intent: Vec<String>,
    pub(crate) tctx: Vec<String>,
}

/// The attribute names an action's context declares in its open records.
#[derive(Default)]
struct Declared {
    intent: Vec<String>,
    tctx: Vec<String>,
}

/// A schema type, resolved through common types.
enum Ty<'a> {
    String,
    Long,
    Bool,
    Set(Box<Self>),
    Record(&'a Map<String, Value>),
    Other,
}

/// Where in which action's context a problem sits, for messages.
struct Place<'a> {
    action: &'a str,
    path: String,
}

/// A type hopgate fills: its name for messages and a test.
type Expected = (&'static str, fn(&Ty<'_>) -> bool);

/// Common types can only nest as deep as the schema text; this bounds a malformed fragment.
const MAX_TYPE_DEPTH: usize = 32;

// === impl SchemaInfo ===

impl SchemaInfo {
    /// Reads the actions of `schema` and checks their context shapes. `fragment` is the same
    /// schema in Cedar's JSON form (the only public view of context types).
    pub(crate) fn new(
        schema: &Schema,
        fragment: &Value,
        path: &Path,
    ) -> Result<Self, Vec<Problem>> {
        let namespace = fragment.get(NAMESPACE).and_then(Value::as_object);
        let empty = Map::new();
        let common = namespace
            .and_then(|ns| ns.get("commonTypes"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let declared = namespace
            .and_then(|ns| ns.get("actions"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut problems = Vec::new();
        let mut actions = HashMap::new();
        for uid in schema.actions() {
            if uid.type_name().to_string() != format!("{NAMESPACE}::Action") {
                continue;
            }
            let name = uid.id().unescaped().to_owned();
            let context = declared
                .get(&name)
                .and_then(|a| a.get("appliesTo"))
                .and_then(|a| a.get("context"));
            let declared = match context {
                Some(context) => check_context(&name, context, common, &mut problems),
                None => Declared::default(),
            };
            let info = ActionInfo {
                uid: uid.clone(),
                intent: declared.intent,
                tctx: declared.tctx,
            };
            actions.insert(name, info);
        }
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(|message| Problem::new(path, message))
                .collect());
        }
        Ok(Self { actions })
    }

    /// The declared action called `name`, if any.
    pub(crate) fn action(&self, name: &str) -> Option<&ActionInfo> {
        self.actions.get(name)
    }
}

/// Checks one action's context type; returns its intent and `tctx` attribute names, sorted.
fn check_context(
    action: &str,
    context: &Value,
    common: &Map<String, Value>,
    problems: &mut Vec<String>,
) -> Declared {
    let Ty::Record(attrs) = resolve(context, common, 0) else {
        problems.push(format!("action `{action}`: the context is not a record"));
        return Declared::default();
    };
    let mut declared = Declared::default();
    for (name, attr) in attrs {
        let at = Place {
            action,
            path: format!("context.{name}"),
        };
        match name.as_str() {
            "direction" => at.expect(attr, common, expected(Kind::String), problems),
            "http" => at.check_record(attr, common, problems, context::http_attr),
            "token" => {
                at.check_record(attr, common, problems, context::token_attr);
                if let Ty::Record(fields) = resolve(attr, common, 0)
                    && let Some(tctx) = fields.get("tctx")
                {
                    declared.tctx = at.field("tctx").check_intent(tctx, common, problems);
                }
            }
            "intent" => declared.intent = at.check_intent(attr, common, problems),
            // Set on every request an MCP method is the action of, and on no other.
            "mcp" if context::is_mcp_method(action) => {
                at.check_record(attr, common, problems, context::mcp_attr);
            }
            _ => at.must_be_optional(attr, problems),
        }
    }
    declared.intent.sort();
    declared.tctx.sort();
    declared
}

/// What a value of `kind` looks like in the schema, and its name for messages.
fn expected(kind: Kind) -> Expected {
    match kind {
        Kind::String => ("String", |t| matches!(t, Ty::String)),
        Kind::Bool => ("Bool", |t| matches!(t, Ty::Bool)),
        Kind::Long => ("Long", |t| matches!(t, Ty::Long)),
        Kind::StringSet => (
            "Set<String>",
            |t| matches!(t, Ty::Set(e) if matches!(**e, Ty::String)),
        ),
    }
}

// === impl Place ===

impl Place<'_> {
    fn field(&self, field: &str) -> Self {
        Place {
            action: self.action,
            path: format!("{}.{field}", self.path),
        }
    }

    fn problem(&self, message: &str) -> String {
        format!("action `{}`: `{}` {message}", self.action, self.path)
    }

    /// A record hopgate fills: known fields must have their types and, unless hopgate always
    /// sets them, be optional; unknown fields are never set, so must be optional.
    fn check_record(
        &self,
        attr: &Value,
        common: &Map<String, Value>,
        problems: &mut Vec<String>,
        known: fn(&str) -> Option<(Kind, bool)>,
    ) {
        let Ty::Record(fields) = resolve(attr, common, 0) else {
            problems.push(self.problem("must be a record"));
            return;
        };
        for (field, ty) in fields {
            let at = self.field(field);
            match known(field) {
                Some((kind, always_set)) => {
                    at.expect(ty, common, expected(kind), problems);
                    if !always_set {
                        at.must_be_optional(ty, problems);
                    }
                }
                None => at.must_be_optional(ty, problems),
            }
        }
    }

    fn check_intent(
        &self,
        attr: &Value,
        common: &Map<String, Value>,
        problems: &mut Vec<String>,
    ) -> Vec<String> {
        let Ty::Record(fields) = resolve(attr, common, 0) else {
            problems.push(self.problem("must be a record of optional Strings"));
            return Vec::new();
        };
        let mut names = Vec::new();
        for (field, ty) in fields {
            let at = self.field(field);
            at.expect(ty, common, expected(Kind::String), problems);
            at.must_be_optional(ty, problems);
            names.push(field.clone());
        }
        names
    }

    fn expect(
        &self,
        attr: &Value,
        common: &Map<String, Value>,
        (name, is): Expected,
        problems: &mut Vec<String>,
    ) {
        if !is(&resolve(attr, common, 0)) {
            problems.push(self.problem(&format!("must be a {name}: hopgate sets it as one")));
        }
    }

    fn must_be_optional(&self, attr: &Value, problems: &mut Vec<String>) {
        let required = attr
            .get("required")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        if required {
            problems.push(self.problem("must be optional (`?:`): hopgate does not always set it"));
        }
    }
}

/// Resolves a JSON-schema type through the namespace's common types.
fn resolve<'a>(ty: &'a Value, common: &'a Map<String, Value>, depth: usize) -> Ty<'a> {
    if depth > MAX_TYPE_DEPTH {
        return Ty::Other;
    }
    let kind = ty.get("type").and_then(Value::as_str).unwrap_or_default();
    let name = match kind {
        "Record" => {
            return ty
                .get("attributes")
                .and_then(Value::as_object)
                .map_or(Ty::Other, Ty::Record);
        }
        "Set" => {
            return match ty.get("element") {
                Some(element) => Ty::Set(Box::new(resolve(element, common, depth + 1))),
                None => Ty::Other,
            };
        }
        "EntityOrCommon" => ty.get("name").and_then(Value::as_str).unwrap_or_default(),
        "Entity" | "Extension" => return Ty::Other,
        other => other,
    };
    let local = name
        .strip_prefix(NAMESPACE)
        .and_then(|n| n.strip_prefix("::"))
        .unwrap_or(name);
    if let Some(target) = common.get(local) {
        return resolve(target, common, depth + 1);
    }
    match name.strip_prefix("__cedar::").unwrap_or(name) {
        "String" => Ty::String,
        "Long" => Ty::Long,
        "Bool" | "Boolean" => Ty::Bool,
        _ => Ty::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::SchemaFragment;

    use super::*;

    fn info(text: &str) -> Result<SchemaInfo, Vec<Problem>> {
        let schema = Schema::from_str(text).unwrap();
        let (fragment, _) = SchemaFragment::from_cedarschema_str(text).unwrap();
        SchemaInfo::new(&schema, &fragment.to_json_value().unwrap(), Path::new("s"))
    }

    fn schema_with_context(context: &str) -> String {
        format!(
            "namespace Hop {{ entity Workload; action call appliesTo {{ principal: Workload, \
             resource: Workload, context: {context} }}; }}"
        )
    }

    #[test]
    fn the_shipped_schema_declares_purpose_as_the_intent_attribute() {
        let text = include_str!("../../examples/policies/schema.cedarschema");
        let info = info(text).unwrap();
        assert_eq!(info.action("generate").unwrap().intent, ["purpose"]);
        assert!(info.action("nope").is_none());
    }

    #[test]
    fn the_shipped_schema_declares_every_attribute_hopgate_fills() {
        // A row added to context.rs's tables must reach the example operators start from.
        let text = include_str!("../../examples/policies/schema.cedarschema");
        let (fragment, _) = SchemaFragment::from_cedarschema_str(text).unwrap();
        let json = fragment.to_json_value().unwrap();
        let context = &json[NAMESPACE]["commonTypes"]["HopContext"]["attributes"];
        let declared = |record: &str| -> Vec<String> {
            let attrs = context[record]["attributes"].as_object().unwrap();
            attrs.keys().cloned().collect()
        };
        let (http, token) = (declared("http"), declared("token"));
        for attr in &context::HTTP {
            assert!(http.iter().any(|a| a == attr.name), "http.{}", attr.name);
        }
        for attr in &context::TOKEN {
            assert!(token.iter().any(|a| a == attr.name), "token.{}", attr.name);
        }
        assert!(token.iter().any(|a| a == "present"));
        assert!(context["direction"].is_object());
    }

    #[test]
    fn an_intent_attribute_of_another_type_is_a_load_error() {
        let problems = info(&schema_with_context("{ intent: { level?: Long } }")).unwrap_err();
        assert!(
            problems[0]
                .message()
                .contains("`context.intent.level` must be a String")
        );
    }

    #[test]
    fn a_required_intent_attribute_is_a_load_error() {
        let problems = info(&schema_with_context("{ intent: { purpose: String } }")).unwrap_err();
        assert!(
            problems[0].message().contains("must be optional"),
            "{problems:?}"
        );
    }

    #[test]
    fn context_attributes_hopgate_never_sets_must_be_optional() {
        let problems = info(&schema_with_context("{ tenant: String }")).unwrap_err();
        assert!(
            problems[0]
                .message()
                .contains("`context.tenant` must be optional")
        );
        assert!(info(&schema_with_context("{ tenant?: String }")).is_ok());
    }

    #[test]
    fn token_attributes_must_have_the_types_hopgate_fills() {
        let problems = info(&schema_with_context(
            "{ token: { present: Bool, depth?: String } }",
        ))
        .unwrap_err();
        assert!(
            problems[0]
                .message()
                .contains("`context.token.depth` must be a Long")
        );
    }

    #[test]
    fn an_inline_context_record_is_read_like_a_common_type() {
        let info = info(&schema_with_context(
            "{ direction: String, intent: { purpose?: String, team?: String } }",
        ))
        .unwrap();
        assert_eq!(info.action("call").unwrap().intent, ["purpose", "team"]);
    }
}
