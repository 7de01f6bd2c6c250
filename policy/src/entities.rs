//! Entities: the static set (entities.json + the schema's actions), and the workload entities
//! built per request for peers entities.json does not list.
//!
//! Every UID is built through Cedar's API from a type name and an id (CED-04): an id is data,
//! whatever quotes, backslashes or `::` it holds, and never becomes policy text.
//!
//! A workload's entity is `Hop::Workload::"<SPIFFE ID>"` with `trust_domain` and `path`, and
//! `Hop::TrustDomain::"<td>"` among its parents. entities.json may list workloads with more
//! parents (groups) and attributes; hopgate fills in `trust_domain`, `path` and the trust-domain
//! parent there too, so a listed workload and an unlisted one look alike to policies.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use cedar_policy::{
    Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema,
};
use hopgate_config::SpiffeId;
use serde_json::{Map, Value, json};

use crate::error::Problem;
use crate::schema::NAMESPACE;

/// The entity type names hopgate builds UIDs of, parsed once per snapshot.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) workload: EntityTypeName,
    pub(crate) trust_domain: EntityTypeName,
}

/// The entity stores of recent (peer, destination) pairs that entities.json does not list.
///
/// Building a store costs more than evaluating a few policies (entity attributes, transitive
/// closure), and a sidecar sees the same few pairs over and over: inbound, the destination is
/// always this workload. Cached per snapshot, so a reload starts afresh. Bounded: once full,
/// further pairs are built per request and not kept, so a peer cycling identities costs itself
/// time and the cache nothing.
#[derive(Debug)]
pub(crate) struct EntityCache {
    stores: RwLock<HashMap<(EntityUid, EntityUid), Arc<Entities>>>,
    capacity: usize,
}

/// The cache holds at most this many entity references in all (each store copies the static
/// set's references plus two).
const CACHE_BUDGET: usize = 1 << 18;

// === impl Names ===

impl Names {
    pub(crate) fn new() -> Result<Self, String> {
        let parse = |name: &str| {
            EntityTypeName::from_str(&format!("{NAMESPACE}::{name}")).map_err(|e| e.to_string())
        };
        Ok(Self {
            workload: parse("Workload")?,
            trust_domain: parse("TrustDomain")?,
        })
    }

    /// `Hop::Workload::"<id>"`.
    pub(crate) fn workload(&self, id: &SpiffeId) -> EntityUid {
        EntityUid::from_type_name_and_id(self.workload.clone(), EntityId::new(id.as_str()))
    }

    /// `Hop::TrustDomain::"<td>"`.
    pub(crate) fn trust_domain(&self, td: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.trust_domain.clone(), EntityId::new(td))
    }

    /// The entity of a workload entities.json does not list: its two attributes and its trust
    /// domain as parent (the store's transitive closure adds the trust domain's own parents).
    pub(crate) fn workload_entity(&self, uid: EntityUid, id: &SpiffeId) -> Result<Entity, String> {
        let attrs = HashMap::from([
            (
                "trust_domain".to_owned(),
                RestrictedExpression::new_string(id.trust_domain_name().to_owned()),
            ),
            (
                "path".to_owned(),
                RestrictedExpression::new_string(id.path().to_owned()),
            ),
        ]);
        let parents = HashSet::from([self.trust_domain(id.trust_domain_name())]);
        Entity::new(uid, attrs, parents).map_err(|e| e.to_string())
    }
}

// === impl EntityCache ===

impl EntityCache {
    /// A cache sized so that copies of `static_len` entities stay within [`CACHE_BUDGET`].
    pub(crate) fn new(static_len: usize) -> Self {
        Self {
            stores: RwLock::new(HashMap::new()),
            capacity: (CACHE_BUDGET / (static_len + 2)).clamp(16, 1024),
        }
    }

    /// The cached store of `key`, or `build`'s, kept when there is room.
    pub(crate) fn get_or_build(
        &self,
        key: (&EntityUid, &EntityUid),
        build: impl FnOnce() -> Result<Entities, String>,
    ) -> Result<Arc<Entities>, String> {
        {
            let stores = self.stores.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(store) = stores.get(&(key.0.clone(), key.1.clone())) {
                return Ok(Arc::clone(store));
            }
        }
        let store = Arc::new(build()?);
        let mut stores = self.stores.write().unwrap_or_else(PoisonError::into_inner);
        if stores.len() < self.capacity {
            stores.insert((key.0.clone(), key.1.clone()), Arc::clone(&store));
        }
        Ok(store)
    }
}

/// The static entities: entities.json (when given) with workloads completed, plus the schema's
/// action entities, conformance-checked against the schema.
pub(crate) fn load_static(
    file: Option<(&Path, &str)>,
    schema: &Schema,
) -> Result<Entities, Vec<Problem>> {
    let Some((path, text)) = file else {
        return Entities::from_entities([], Some(schema))
            .map_err(|e| vec![Problem::new(Path::new("schema.cedarschema"), e.to_string())]);
    };
    let problem = |message: String| vec![Problem::new(path, message)];
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| problem(format!("not JSON: {e}")))?;
    let Some(list) = value.as_array_mut() else {
        return Err(problem("must be a JSON array of entities".to_owned()));
    };
    let mut problems = Vec::new();
    for (i, entity) in list.iter_mut().enumerate() {
        if let Err(message) = complete_workload(entity) {
            problems.push(Problem::new(path, format!("entity {i}: {message}")));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Entities::from_json_value(value, Some(schema)).map_err(|e| problem(cedar_message(&e)))
}

/// Fills in `trust_domain`, `path` and the trust-domain parent of a listed workload. Other
/// entity types pass unchanged (Cedar checks them against the schema).
fn complete_workload(entity: &mut Value) -> Result<(), String> {
    let Some(object) = entity.as_object_mut() else {
        return Err("is not a JSON object".to_owned());
    };
    let uid = object
        .get("uid")
        .map(|uid| uid.get("__entity").unwrap_or(uid));
    let ty = uid.and_then(|u| u.get("type")).and_then(Value::as_str);
    if ty != Some(&format!("{NAMESPACE}::Workload")) {
        return Ok(());
    }
    let raw_id = uid
        .and_then(|u| u.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    // CED-05: one canonical form; a non-canonical workload id could never match a peer.
    let id = SpiffeId::parse(raw_id)
        .map_err(|e| format!("workload `{raw_id}` is not a canonical SPIFFE ID: {e}"))?;
    let attrs = object
        .entry("attrs")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| format!("workload `{id}`: `attrs` is not an object"))?;
    for (name, value) in [
        ("trust_domain", id.trust_domain_name()),
        ("path", id.path()),
    ] {
        match attrs.get(name) {
            None => {
                attrs.insert(name.to_owned(), Value::String(value.to_owned()));
            }
            Some(Value::String(given)) if given == value => {}
            Some(_) => {
                return Err(format!(
                    "workload `{id}`: `{name}` must be `{value}` (hopgate derives it from the id)"
                ));
            }
        }
    }
    let parent =
        json!({ "type": format!("{NAMESPACE}::TrustDomain"), "id": id.trust_domain_name() });
    let parents = object
        .entry("parents")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| format!("workload `{id}`: `parents` is not an array"))?;
    if !parents.contains(&parent) {
        parents.push(parent);
    }
    Ok(())
}

/// A Cedar error with its causes and its help line, when it has them.
pub(crate) fn cedar_message(error: &(dyn miette::Diagnostic + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    if let Some(help) = error.help() {
        message.push_str("; ");
        message.push_str(&help.to_string());
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_workload_gets_its_attributes_and_trust_domain_parent() {
        let mut entity = json!({
            "uid": { "type": "Hop::Workload", "id": "spiffe://example.org/ns/ml/sa/a" },
            "parents": [{ "type": "Hop::Group", "id": "ml-clients" }],
        });
        complete_workload(&mut entity).unwrap();
        assert_eq!(entity["attrs"]["trust_domain"], "example.org");
        assert_eq!(entity["attrs"]["path"], "/ns/ml/sa/a");
        assert_eq!(entity["parents"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_non_canonical_workload_id_is_refused() {
        let mut entity =
            json!({ "uid": { "type": "Hop::Workload", "id": "spiffe://EXAMPLE.org/a" } });
        let err = complete_workload(&mut entity).unwrap_err();
        assert!(err.contains("not a canonical SPIFFE ID"), "{err}");
    }

    #[test]
    fn a_contradicting_trust_domain_attribute_is_refused() {
        let mut entity = json!({
            "uid": { "type": "Hop::Workload", "id": "spiffe://example.org/a" },
            "attrs": { "trust_domain": "other.org" },
        });
        assert!(
            complete_workload(&mut entity)
                .unwrap_err()
                .contains("must be `example.org`")
        );
    }
}
