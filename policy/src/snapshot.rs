//! `PolicySnapshot`: one policy folder, read, strictly validated and indexed, off the hot path.
//!
//! ```text
//! read folder ─▶ schema (+ context-shape check) ─▶ policies (re-keyed by @id)
//!   ─▶ strict validation against the schema (any error fails the load)
//!   ─▶ entities.json (conformance-checked) + action entities ─▶ slice index
//! revocations.yaml (optional) ─▶ indexed revocations
//! ```
//!
//! A snapshot never changes after `load`; reloading builds a new one (see `reload.rs`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, PolicySet, Schema, SchemaFragment, ValidationMode, ValidationWarning, Validator,
};
use hopgate_config::Revocations;

use crate::engine::{DecisionMemo, Engine, Scope};
use crate::entities::{EntityCache, Names, cedar_message, load_static};
use crate::error::Problem;
use crate::policies::{Parsed, first_offset};
use crate::schema::SchemaInfo;
use crate::slice::SliceIndex;
use crate::source::{SourceFile, Sources};
use crate::usage::ContextUsage;
use crate::{CedarRequest, Decision, HopRequest, PolicyError};

/// An immutable, validated policy folder, ready to authorize.
pub struct PolicySnapshot {
    pub(crate) engine: Engine,
    digest: String,
    loaded_at: SystemTime,
    policy_ids: Vec<String>,
    warnings: Vec<String>,
    impossible: Vec<String>,
    revocations: Revocations,
}

// === impl PolicySnapshot ===

impl PolicySnapshot {
    /// Loads `dir`: `schema.cedarschema` (required), `entities.json` (optional), every
    /// `*.cedar` (sorted by name) and `revocations.yaml` (optional; absent, nothing is
    /// revoked). `default_action` is the action of a hop without an
    /// `intent-action` header (`intent.default_action`).
    ///
    /// Validation is strict (`ValidationMode::Strict`): any validation error fails the load.
    /// Validator warnings, schema warnings and hopgate's lints (CED-06, CED-08, an empty set,
    /// an undeclared default action) are kept in [`warnings`](Self::warnings).
    ///
    /// # Errors
    /// - [`PolicyError::Io`]: the folder or a file cannot be read (or is not UTF-8);
    /// - [`PolicyError::MissingSchema`]: no `schema.cedarschema`;
    /// - [`PolicyError::Invalid`]: schema syntax, context shape (see the crate docs), policy
    ///   syntax, templates, a duplicate policy id, non-canonical SPIFFE IDs in scopes (CED-05),
    ///   strict validation, entities.json syntax or conformance, any problem of
    ///   revocations.yaml (an empty file too: RVK-05). Every problem of every file,
    ///   each naming its file (and `line:column` where there is one): the policies are
    ///   validated even when another file has a syntax error or an id is used twice.
    pub fn load(dir: &Path, default_action: &str) -> Result<Self, PolicyError> {
        Self::from_sources(&Sources::read(dir)?, dir, default_action)
    }

    /// [`load`](Self::load) from files already read.
    pub(crate) fn from_sources(
        sources: &Sources,
        dir: &Path,
        default_action: &str,
    ) -> Result<Self, PolicyError> {
        let mut warnings = Vec::new();
        // Every stage that can run does, so one load reports the problems of every file, in
        // file order: the schema, the policy files by name (each in line order), entities.json,
        // revocations.yaml.
        let mut problems = Vec::new();
        let (schema, info) = load_schema(&sources.schema, &mut warnings, &mut problems);
        let (parsed, mut policy_problems) = Parsed::parse(&sources.policies);
        let mut impossible = Vec::new();
        let mut entities = None;
        let mut entity_problems = Vec::new();
        if let Some(schema) = &schema {
            match validate(schema, &parsed, &sources.policies, &mut warnings) {
                Ok(found) => impossible = found,
                Err(found) => policy_problems.extend(found),
            }
            let file = sources.entities.as_ref();
            match load_static(file.map(|f| (f.path.as_path(), f.text.as_str())), schema) {
                Ok(loaded) => entities = Some(loaded),
                Err(found) => entity_problems = found,
            }
        }
        policy_problems.sort_by(|a, b| (a.path(), a.position()).cmp(&(b.path(), b.position())));
        problems.extend(policy_problems);
        problems.extend(entity_problems);
        let revocations = load_revocations(sources.revocations.as_ref(), &mut problems);
        let (Some(info), Some(entities), true) = (info, entities, problems.is_empty()) else {
            return Err(PolicyError::invalid(problems));
        };
        warnings.extend(parsed.lint_warnings(&sources.policies));
        if parsed.ids.is_empty() {
            warnings.push(format!(
                "{}: no policies: every request is denied (CED-02)",
                dir.display()
            ));
        }
        if info.action(default_action).is_none() {
            warnings.push(format!(
                "{}: the default action `{default_action}` is not declared: a call without an \
                 intent-action header is denied (`unknown_action`)",
                sources.schema.path.display()
            ));
        }
        let names = Names::new().map_err(|e| invalid(&sources.schema.path, e))?;
        let slices =
            SliceIndex::build(&parsed.set, &entities, &names).map_err(|e| invalid(dir, e))?;
        Ok(Self {
            engine: Engine {
                info,
                names,
                entity_cache: EntityCache::new(entities.len()),
                entities: Arc::new(entities),
                slices,
                usage: ContextUsage::of(&parsed.set),
                full: Arc::new(parsed.set),
                default_action: default_action.to_owned(),
                authorizer: Authorizer::new(),
                memo: DecisionMemo::default(),
            },
            digest: sources.digest.clone(),
            loaded_at: SystemTime::now(),
            policy_ids: parsed.ids,
            warnings,
            impossible,
            revocations,
        })
    }

    /// Decides one hop: default deny; forbid wins; any evaluation error denies; an action the
    /// schema does not declare denies with `unknown_action` without evaluating anything.
    /// Synchronous, no I/O, never panics.
    pub fn authorize(&self, req: &HopRequest<'_>) -> Decision {
        self.engine.authorize(req, Scope::Sliced)
    }

    /// [`authorize`](Self::authorize) over every policy instead of the peer's slice, with every
    /// context attribute: identical decisions, slower. For the equivalence tests and the bench
    /// only (the `test-util` feature).
    #[cfg(any(test, feature = "test-util"))]
    pub fn authorize_unsliced(&self, req: &HopRequest<'_>) -> Decision {
        self.engine.authorize(req, Scope::Unsliced)
    }

    /// The Cedar request [`authorize`](Self::authorize) evaluates for `req`, rendered for people
    /// (`hopgate policy explain --verbose`). `None` when nothing is evaluated (an action the
    /// schema does not declare) or the request cannot be built (the decision's errors say why).
    /// It builds everything anew: never call it on the request path.
    pub fn cedar_request(&self, req: &HopRequest<'_>) -> Option<CedarRequest> {
        self.engine.cedar_request(req)
    }

    /// SHA-256 (hex) of every file the snapshot was built from.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// When the snapshot finished loading.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The policy ids, files in name order, policies in source order.
    pub fn policy_ids(&self) -> Vec<&str> {
        self.policy_ids.iter().map(String::as_str).collect()
    }

    /// Warnings that did not fail the load, each naming its file.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Ids of the policies the validator proves can never apply (an always-false condition, or
    /// an action that does not apply to the scoped principal and resource types).
    pub fn impossible_policies(&self) -> Vec<String> {
        self.impossible.clone()
    }

    /// The entries of `revocations.yaml`, read and validated with the policies; empty without
    /// the file.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The action a hop without an `intent-action` header is evaluated as.
    pub fn default_action(&self) -> &str {
        &self.engine.default_action
    }
}

impl fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySnapshot")
            .field("digest", &self.digest)
            .field("policies", &self.policy_ids.len())
            .field("warnings", &self.warnings.len())
            .field("revocations", &self.revocations.len())
            .finish_non_exhaustive()
    }
}

/// The schema, and what hopgate reads of it once its context shapes check out (see
/// `schema.rs`). Cedar's schema alone is enough to validate policies against, so a shape
/// problem still lets the policies be checked.
fn load_schema(
    file: &SourceFile,
    warnings: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) -> (Option<Schema>, Option<SchemaInfo>) {
    let at = |e: &(dyn miette::Diagnostic + 'static)| {
        Problem::at(&file.path, &file.text, first_offset(e), cedar_message(e))
    };
    let (schema, schema_warnings) = match Schema::from_cedarschema_str(&file.text) {
        Ok(loaded) => loaded,
        Err(e) => {
            problems.push(at(&e));
            return (None, None);
        }
    };
    warnings.extend(schema_warnings.map(|w| format!("{}: {w}", file.path.display())));
    let json = SchemaFragment::from_cedarschema_str(&file.text)
        .map_err(|e| at(&e))
        .and_then(|(fragment, _)| fragment.to_json_value().map_err(|e| at(&e)));
    let info = match json {
        Ok(json) => SchemaInfo::new(&schema, &json, &file.path),
        Err(problem) => Err(vec![problem]),
    };
    match info {
        Ok(info) => (Some(schema), Some(info)),
        Err(found) => {
            problems.extend(found);
            (Some(schema), None)
        }
    }
}

/// The revocations file, or none without one; its problems join `problems`, each naming the
/// file and the entry (`revocations.yaml: [3].until: ...`).
fn load_revocations(file: Option<&SourceFile>, problems: &mut Vec<Problem>) -> Revocations {
    let Some(file) = file else {
        return Revocations::empty();
    };
    match Revocations::parse(&file.text, &file.path) {
        Ok(revocations) => revocations,
        Err(e) => {
            let found = e.errors().iter();
            problems.extend(found.map(|error| Problem::new(&file.path, error.to_string())));
            Revocations::empty()
        }
    }
}

/// Strict validation, of the set and of each policy left out of it for a duplicate id;
/// returns the ids of impossible policies and adds the other warnings, or every error.
fn validate(
    schema: &Schema,
    parsed: &Parsed,
    files: &[SourceFile],
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, Vec<Problem>> {
    let validator = Validator::new(schema.clone());
    let result = validator.validate(&parsed.set, ValidationMode::Strict);
    let problem =
        |file: Option<&SourceFile>, diagnostic: &(dyn miette::Diagnostic + 'static)| match file {
            Some(file) => Problem::at(
                &file.path,
                &file.text,
                first_offset(diagnostic),
                cedar_message(diagnostic),
            ),
            None => Problem::new(Path::new(""), cedar_message(diagnostic)),
        };
    let mut errors: Vec<Problem> = result
        .validation_errors()
        .map(|e| problem(parsed.file_of(e.policy_id().as_ref(), files), e))
        .collect();
    for (index, policy) in &parsed.duplicates {
        let mut alone = PolicySet::new();
        if alone.add(policy.clone()).is_err() {
            continue;
        }
        let file = files.get(*index);
        let result = validator.validate(&alone, ValidationMode::Strict);
        errors.extend(result.validation_errors().map(|e| problem(file, e)));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut impossible = Vec::new();
    for warning in result.validation_warnings() {
        let id = warning.policy_id().to_string();
        if matches!(
            warning,
            ValidationWarning::ImpossiblePolicy(_) | ValidationWarning::InvalidActionApplication(_)
        ) && !impossible.contains(&id)
        {
            impossible.push(id.clone());
        }
        warnings.push(problem(parsed.file_of(&id, files), warning).to_string());
    }
    impossible.sort_by_key(|id| parsed.ids.iter().position(|known| known == id));
    Ok(impossible)
}

fn invalid(path: &Path, message: String) -> PolicyError {
    PolicyError::invalid(vec![Problem::new(path, message)])
}
