//! Parsing `*.cedar` files into one policy set, each policy keyed by its `@id`.
//!
//! Cedar ignores `@id` when it parses a set (it numbers policies `policy0`, `policy1`, ...), so
//! every policy is re-keyed: by its `@id("...")`, else by the stable fallback
//! `<file stem>:<index>` (0-based, in source order). A duplicate id is a load error naming both
//! files. Policy templates are refused: hopgate links none, so they could never apply.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Effect, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use hopgate_config::{SpiffeId, TrustDomain};
use miette::Diagnostic;

use crate::PolicyError;
use crate::entities::cedar_message;
use crate::error::Problem;
use crate::schema::NAMESPACE;
use crate::source::SourceFile;

/// The policies of a folder, re-keyed.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) set: PolicySet,
    /// Policy ids in load order: files by name, then source order.
    pub(crate) ids: Vec<String>,
    /// Policy id → index of its file in the sources.
    pub(crate) origin: HashMap<String, usize>,
}

// === impl Parsed ===

impl Parsed {
    /// Parses and re-keys every file; collects every syntax problem before failing.
    pub(crate) fn parse(files: &[SourceFile]) -> Result<Self, PolicyError> {
        let mut problems = Vec::new();
        let mut parsed = Self {
            set: PolicySet::new(),
            ids: Vec::new(),
            origin: HashMap::new(),
        };
        for (index, file) in files.iter().enumerate() {
            match PolicySet::from_str(&file.text) {
                Ok(set) => parsed.add_file(index, files, set, &mut problems)?,
                Err(errors) => problems.extend(errors.iter().map(|e| {
                    Problem::at(&file.path, &file.text, first_offset(e), cedar_message(e))
                })),
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError::invalid(problems));
        }
        problems.extend(parsed.scope_problems(files));
        if !problems.is_empty() {
            return Err(PolicyError::invalid(problems));
        }
        Ok(parsed)
    }

    fn add_file(
        &mut self,
        index: usize,
        files: &[SourceFile],
        set: PolicySet,
        problems: &mut Vec<Problem>,
    ) -> Result<(), PolicyError> {
        let Some(file) = files.get(index) else {
            return Ok(());
        };
        if set.templates().next().is_some() {
            problems.push(Problem::new(
                &file.path,
                "policy templates (`?principal`, `?resource`) are not supported: hopgate links none",
            ));
        }
        let mut policies: Vec<&Policy> = set.policies().collect();
        // Cedar numbers the policies of a set `policy0`, `policy1`, ... in source order.
        policies.sort_by_key(|p| source_index(p.id()));
        for (i, policy) in policies.into_iter().enumerate() {
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{}:{i}", file.stem()),
            };
            if let Some(first) = self.origin.get(&id).and_then(|f| files.get(*f)) {
                return Err(PolicyError::DuplicateId {
                    id,
                    first: first.path.clone(),
                    second: file.path.clone(),
                });
            }
            let keyed = policy.new_id(PolicyId::new(&id));
            if let Err(e) = self.set.add(keyed) {
                problems.push(Problem::new(&file.path, e.to_string()));
                continue;
            }
            self.origin.insert(id.clone(), index);
            self.ids.push(id);
        }
        Ok(())
    }

    /// CED-05: the workloads and trust domains a policy's scope names must be canonical, or the
    /// policy could never match a peer (a forbid naming `spiffe://EXAMPLE.ORG/x` would silently
    /// never fire).
    fn scope_problems(&self, files: &[SourceFile]) -> Vec<Problem> {
        let mut problems = Vec::new();
        for policy in self.set.policies() {
            let path = self.path_of(policy, files);
            let uids = [principal_uid(policy), resource_uid(policy)];
            for uid in uids.into_iter().flatten() {
                if let Some(message) = non_canonical(&uid) {
                    problems.push(Problem::new(
                        path,
                        format!("policy `{}`: {message}", policy.id()),
                    ));
                }
            }
        }
        problems
    }

    /// Lints that warn without failing the load:
    /// - CED-06: a permit that admits any principal without naming a trust domain;
    /// - CED-08: a permit that reads `context.token.actors`: prior actors are informational
    ///   (RFC 8693 §4.1), only the peer (the principal) should be granted anything.
    pub(crate) fn lint_warnings(&self, files: &[SourceFile]) -> Vec<String> {
        let mut warnings = Vec::new();
        for policy in self.set.policies().filter(|p| p.effect() == Effect::Permit) {
            let path = self.path_of(policy, files).display();
            let text = policy.to_string();
            let any_principal = matches!(
                policy.principal_constraint(),
                PrincipalConstraint::Any | PrincipalConstraint::Is(_)
            );
            if any_principal && !text.contains("TrustDomain::") && !text.contains("trust_domain") {
                warnings.push(format!(
                    "{path}: policy `{}` permits any principal without constraining its trust \
                     domain (CED-06); add `principal in {NAMESPACE}::TrustDomain::\"...\"`",
                    policy.id()
                ));
            }
            if text.contains(".actors") {
                warnings.push(format!(
                    "{path}: policy `{}` is a permit that reads the token's actors; prior actors \
                     are informational and should only restrict, in forbids (CED-08)",
                    policy.id()
                ));
            }
        }
        warnings
    }

    /// The file a policy came from.
    pub(crate) fn path_of<'a>(&self, policy: &Policy, files: &'a [SourceFile]) -> &'a Path {
        self.file_of(policy.id().as_ref(), files)
            .map_or(Path::new(""), |f| f.path.as_path())
    }

    /// The file a policy id came from.
    pub(crate) fn file_of<'a>(&self, id: &str, files: &'a [SourceFile]) -> Option<&'a SourceFile> {
        self.origin.get(id).and_then(|i| files.get(*i))
    }
}

fn source_index(id: &PolicyId) -> (usize, String) {
    let id = id.to_string();
    let n = id
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (n, id)
}

fn principal_uid(policy: &Policy) -> Option<EntityUid> {
    match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid)
        | PrincipalConstraint::In(uid)
        | PrincipalConstraint::IsIn(_, uid) => Some(uid),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
    }
}

fn resource_uid(policy: &Policy) -> Option<EntityUid> {
    match policy.resource_constraint() {
        ResourceConstraint::Eq(uid)
        | ResourceConstraint::In(uid)
        | ResourceConstraint::IsIn(_, uid) => Some(uid),
        ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
    }
}

fn non_canonical(uid: &EntityUid) -> Option<String> {
    let ty = uid.type_name().to_string();
    let id = uid.id().unescaped();
    let error = if ty == format!("{NAMESPACE}::Workload") {
        SpiffeId::parse(id).err()
    } else if ty == format!("{NAMESPACE}::TrustDomain") {
        TrustDomain::parse(id).err()
    } else {
        None
    }?;
    Some(format!(
        "`{}` is not canonical ({error}), so it never matches a peer (CED-05)",
        id.escape_debug()
    ))
}

/// Where Cedar points, as a byte offset into the text it parsed.
pub(crate) fn first_offset(diagnostic: &dyn Diagnostic) -> Option<usize> {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
}
