//! Parsing `*.cedar` files into one policy set, each policy keyed by its `@id`.
//!
//! Cedar ignores `@id` when it parses a set (it numbers policies `policy0`, `policy1`, ...), so
//! every policy is re-keyed: by its `@id("...")`, else by the stable fallback
//! `<file stem>:<index>` (0-based, in source order). A duplicate id is a load problem naming both
//! places; the duplicate is still checked (scopes, strict validation), so one load reports all
//! its problems. Policy templates are refused: hopgate links none, so they could never apply.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{
    Effect, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use hopgate_config::{SpiffeId, TrustDomain};
use miette::Diagnostic;

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
    /// The policies whose id was already taken, with the index of their file: kept out of
    /// `set`, but still checked, so one load reports their problems too.
    pub(crate) duplicates: Vec<(usize, Policy)>,
    /// Policy id → byte offset of its `@id` annotation in its file, when found.
    offsets: HashMap<String, usize>,
}

// === impl Parsed ===

impl Parsed {
    /// Parses and re-keys every file. Returns what parsed, and every problem found: syntax
    /// errors of every file, templates, duplicate ids and non-canonical scopes (CED-05).
    pub(crate) fn parse(files: &[SourceFile]) -> (Self, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut parsed = Self {
            set: PolicySet::new(),
            ids: Vec::new(),
            origin: HashMap::new(),
            duplicates: Vec::new(),
            offsets: HashMap::new(),
        };
        for (index, file) in files.iter().enumerate() {
            match PolicySet::from_str(&file.text) {
                Ok(set) => parsed.add_file(index, file, files, &set, &mut problems),
                Err(errors) => problems.extend(errors.iter().map(|e| {
                    Problem::at(&file.path, &file.text, first_offset(e), cedar_message(e))
                })),
            }
        }
        problems.extend(parsed.scope_problems(files));
        (parsed, problems)
    }

    fn add_file(
        &mut self,
        index: usize,
        file: &SourceFile,
        files: &[SourceFile],
        set: &PolicySet,
        problems: &mut Vec<Problem>,
    ) {
        if set.templates().next().is_some() {
            problems.push(Problem::new(
                &file.path,
                "policy templates (`?principal`, `?resource`) are not supported: hopgate links none",
            ));
        }
        let mut policies: Vec<&Policy> = set.policies().collect();
        // Cedar numbers the policies of a set `policy0`, `policy1`, ... in source order.
        policies.sort_by_key(|p| source_index(p.id()));
        // The k-th policy with an `@id` has the k-th `@id` annotation of the file.
        let mut annotations = id_annotations(&file.text).into_iter();
        for (i, policy) in policies.into_iter().enumerate() {
            let (id, offset) = match policy.annotation("id") {
                Some(id) => {
                    let offset = annotations
                        .next()
                        .filter(|(_, value)| value.as_deref() == Some(id))
                        .map(|(offset, _)| offset);
                    (id.to_owned(), offset)
                }
                None => (format!("{}:{i}", file.stem()), None),
            };
            let keyed = policy.new_id(PolicyId::new(&id));
            if let Some(first) = self.origin.get(&id).and_then(|f| files.get(*f)) {
                let first =
                    Problem::place(&first.path, &first.text, self.offsets.get(&id).copied());
                problems.push(Problem::at(
                    &file.path,
                    &file.text,
                    offset,
                    format!("policy id `{id}` is already used in {first}"),
                ));
                self.duplicates.push((index, keyed));
                continue;
            }
            if let Err(e) = self.set.add(keyed) {
                problems.push(Problem::new(&file.path, e.to_string()));
                continue;
            }
            self.origin.insert(id.clone(), index);
            if let Some(offset) = offset {
                self.offsets.insert(id.clone(), offset);
            }
            self.ids.push(id);
        }
    }

    /// CED-05: the workloads and trust domains a policy's scope names must be canonical, or the
    /// policy could never match a peer (a forbid naming `spiffe://EXAMPLE.ORG/x` would silently
    /// never fire).
    fn scope_problems(&self, files: &[SourceFile]) -> Vec<Problem> {
        let mut problems = Vec::new();
        let duplicates = self
            .duplicates
            .iter()
            .map(|(index, policy)| (files.get(*index), policy));
        let policies = self
            .set
            .policies()
            .map(|policy| (self.file_of(policy.id().as_ref(), files), policy))
            .chain(duplicates);
        for (file, policy) in policies {
            let path = file.map_or(Path::new(""), |f| f.path.as_path());
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

/// The byte offsets and values of the `@id("...")` annotations in `text`, in source order.
/// Comments and string literals are skipped. The value is `None` when the string holds an
/// escape this does not know: its policy then gets no position, never a wrong one.
fn id_annotations(text: &str) -> Vec<(usize, Option<String>)> {
    let mut found = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '/' if chars.next_if(|&(_, c)| c == '/').is_some() => {
                chars.by_ref().find(|&(_, c)| c == '\n');
            }
            '"' => {
                let _ = string_literal(&mut chars);
            }
            '@' => {
                let mut key = String::new();
                while let Some((_, c)) = chars.next_if(|&(_, c)| c.is_alphanumeric() || c == '_') {
                    key.push(c);
                }
                skip_whitespace(&mut chars);
                if key != "id" || chars.next_if(|&(_, c)| c == '(').is_none() {
                    continue;
                }
                skip_whitespace(&mut chars);
                if chars.next_if(|&(_, c)| c == '"').is_none() {
                    continue;
                }
                found.push((at, string_literal(&mut chars)));
            }
            _ => {}
        }
    }
    found
}

type Chars<'a> = std::iter::Peekable<std::str::CharIndices<'a>>;

fn skip_whitespace(chars: &mut Chars<'_>) {
    while chars.next_if(|&(_, c)| c.is_whitespace()).is_some() {}
}

/// Reads a Cedar string literal after its opening quote, up to and with the closing one;
/// its value, or `None` when it is unterminated or holds an escape this does not know.
fn string_literal(chars: &mut Chars<'_>) -> Option<String> {
    let mut value = String::new();
    let mut known = true;
    while let Some((_, c)) = chars.next() {
        match c {
            '"' => return known.then_some(value),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => value.push('\n'),
                Some('r') => value.push('\r'),
                Some('t') => value.push('\t'),
                Some('0') => value.push('\0'),
                Some(c @ ('\\' | '"' | '\'')) => value.push(c),
                Some('u') if chars.next_if(|&(_, c)| c == '{').is_some() => {
                    let mut hex = String::new();
                    while let Some((_, c)) = chars.next_if(|&(_, c)| c != '}' && c != '"') {
                        hex.push(c);
                    }
                    let close = chars.next_if(|&(_, c)| c == '}');
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(c) if close.is_some() => value.push(c),
                        _ => known = false,
                    }
                }
                _ => known = false,
            },
            c => value.push(c),
        }
    }
    None
}

/// Where Cedar points, as a byte offset into the text it parsed.
pub(crate) fn first_offset(diagnostic: &dyn Diagnostic) -> Option<usize> {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
}
