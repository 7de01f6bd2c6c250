//! `PolicySnapshot`: one policy folder, read, strictly validated and indexed, off the hot path.
//!
//! ```text
//! read folder ─▶ schema (+ context-shape check) ─▶ policies (re-keyed by @id)
//!   ─▶ strict validation against the schema (any error fails the load)
//!   ─▶ entities.json (conformance-checked) + action entities ─▶ slice index
//! ```
//!
//! A snapshot never changes after `load`; reloading builds a new one (see `reload.rs`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use cedar_policy::{
    Authorizer, Schema, SchemaFragment, ValidationMode, ValidationWarning, Validator,
};

use crate::engine::{DecisionMemo, Engine, Scope};
use crate::entities::{EntityCache, Names, cedar_message, load_static};
use crate::error::Problem;
use crate::policies::{Parsed, first_offset};
use crate::schema::SchemaInfo;
use crate::slice::SliceIndex;
use crate::source::{SourceFile, Sources};
use crate::usage::ContextUsage;
use crate::{Decision, HopRequest, PolicyError};

/// An immutable, validated policy folder, ready to authorize.
pub struct PolicySnapshot {
    pub(crate) engine: Engine,
    digest: String,
    loaded_at: SystemTime,
    policy_ids: Vec<String>,
    warnings: Vec<String>,
    impossible: Vec<String>,
}

// === impl PolicySnapshot ===

impl PolicySnapshot {
    /// Loads `dir`: `schema.cedarschema` (required), `entities.json` (optional) and every
    /// `*.cedar` (sorted by name). `default_action` is the action of a hop without an
    /// `intent-action` header (`intent.default_action`).
    ///
    /// Validation is strict (`ValidationMode::Strict`): any validation error fails the load.
    /// Validator warnings, schema warnings and hopgate's lints (CED-06, CED-08, an empty set,
    /// an undeclared default action) are kept in [`warnings`](Self::warnings).
    ///
    /// # Errors
    /// - [`PolicyError::Io`]: the folder or a file cannot be read (or is not UTF-8);
    /// - [`PolicyError::MissingSchema`]: no `schema.cedarschema`;
    /// - [`PolicyError::DuplicateId`]: two policies share an id;
    /// - [`PolicyError::Invalid`]: schema syntax, context shape (see the crate docs), policy
    ///   syntax, templates, non-canonical SPIFFE IDs in scopes (CED-05), strict validation,
    ///   entities.json syntax or conformance. Every problem names its file.
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
        let (schema, info) = load_schema(&sources.schema, &mut warnings)?;
        let parsed = Parsed::parse(&sources.policies)?;
        let impossible = validate(&schema, &parsed, &sources.policies, &mut warnings)?;
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
        let entities = load_static(
            sources
                .entities
                .as_ref()
                .map(|f| (f.path.as_path(), f.text.as_str())),
            &schema,
        )
        .map_err(PolicyError::invalid)?;
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
    /// only.
    #[doc(hidden)]
    pub fn authorize_unsliced(&self, req: &HopRequest<'_>) -> Decision {
        self.engine.authorize(req, Scope::Unsliced)
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
            .finish_non_exhaustive()
    }
}

fn load_schema(
    file: &SourceFile,
    warnings: &mut Vec<String>,
) -> Result<(Schema, SchemaInfo), PolicyError> {
    let at = |e: &(dyn miette::Diagnostic + 'static)| {
        PolicyError::invalid(vec![Problem::at(
            &file.path,
            &file.text,
            first_offset(e),
            cedar_message(e),
        )])
    };
    let (schema, schema_warnings) = Schema::from_cedarschema_str(&file.text).map_err(|e| at(&e))?;
    warnings.extend(schema_warnings.map(|w| format!("{}: {w}", file.path.display())));
    let (fragment, _) = SchemaFragment::from_cedarschema_str(&file.text).map_err(|e| at(&e))?;
    let json = fragment.to_json_value().map_err(|e| at(&e))?;
    let info = SchemaInfo::new(&schema, &json, &file.path).map_err(PolicyError::invalid)?;
    Ok((schema, info))
}

/// Strict validation; returns the ids of impossible policies, adds the other warnings.
fn validate(
    schema: &Schema,
    parsed: &Parsed,
    files: &[SourceFile],
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, PolicyError> {
    let result = Validator::new(schema.clone()).validate(&parsed.set, ValidationMode::Strict);
    let problem = |id: String, diagnostic: &(dyn miette::Diagnostic + 'static)| match parsed
        .file_of(&id, files)
    {
        Some(file) => Problem::at(
            &file.path,
            &file.text,
            first_offset(diagnostic),
            cedar_message(diagnostic),
        ),
        None => Problem::new(Path::new(""), cedar_message(diagnostic)),
    };
    let errors: Vec<Problem> = result
        .validation_errors()
        .map(|e| problem(e.policy_id().to_string(), e))
        .collect();
    if !errors.is_empty() {
        return Err(PolicyError::invalid(errors));
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
        warnings.push(problem(id, warning).to_string());
    }
    impossible.sort_by_key(|id| parsed.ids.iter().position(|known| known == id));
    Ok(impossible)
}

fn invalid(path: &Path, message: String) -> PolicyError {
    PolicyError::invalid(vec![Problem::new(path, message)])
}
