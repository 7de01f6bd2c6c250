//! `hopgate policy check | explain | test`: Cedar policies checked, explained and tested offline,
//! through the sidecar's own request building ([`HttpFacts`]), so an offline decision is the
//! live one. With `--config`, `explain` and `test` decide with that sidecar's intent settings
//! and, without DIR, its policy folder.
//!
//! Everything is printed through [`Out`]: a reader that goes away (`| head -1`) ends the
//! output quietly, never with a panic.
//!
//! [`HttpFacts`]: hopgate_proxy::http::authorize::HttpFacts

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hopgate_config::ConfigError;
use hopgate_policy::PolicySnapshot;

use crate::output::Out;

mod cases;
mod explain;

pub(crate) use cases::test;
pub(crate) use explain::explain;

/// The defaults of `intent.header_prefix` and `intent.default_action`, used without `--config`.
const INTENT_PREFIX: &str = "intent-";
const DEFAULT_ACTION: &str = "call";

/// What `explain` and `test` decide with: a policy folder and a sidecar's intent settings.
#[derive(Debug)]
struct Sidecar {
    dir: PathBuf,
    intent_prefix: String,
    default_action: String,
    /// What a POST is an MCP request on: the config's `mcp` section (none: no path); `None`
    /// without `--config`, where a POST naming its `mcp-method` is one.
    mcp: Option<Option<hopgate_config::McpConfig>>,
}

/// `policy check DIR`.
pub(crate) fn check(dir: &Path) -> ExitCode {
    let mut out = Out::default();
    let code = run_check(dir, &mut out);
    out.finish(code)
}

fn run_check(dir: &Path, out: &mut Out) -> ExitCode {
    let Some(snapshot) = load(dir, DEFAULT_ACTION, out) else {
        return ExitCode::FAILURE;
    };
    for warning in snapshot.warnings() {
        errln!(out, "warning: {warning}");
    }
    let impossible = snapshot.impossible_policies();
    for id in &impossible {
        errln!(out, "error: policy `{id}` can never apply");
    }
    outln!(
        out,
        "{}: {} policies, digest {}",
        dir.display(),
        snapshot.policy_ids().len(),
        snapshot.digest()
    );
    if impossible.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The sidecar settings `dir` and `config` name, and its policy folder loaded: what `explain`
/// and `test` decide with. On error prints why and returns `None` (exit 78).
fn decider(
    dir: Option<&Path>,
    config: Option<&Path>,
    out: &mut Out,
) -> Option<(Sidecar, PolicySnapshot)> {
    let sidecar = sidecar(dir, config, out)?;
    let snapshot = load(&sidecar.dir, &sidecar.default_action, out)?;
    Some((sidecar, snapshot))
}

/// Loads a policy folder as the sidecar does. On failure prints every problem, one a line
/// (`error: file:line:column: message`), and their count, and returns `None`.
fn load(dir: &Path, default_action: &str, out: &mut Out) -> Option<PolicySnapshot> {
    match PolicySnapshot::load(dir, default_action) {
        Ok(snapshot) => Some(snapshot),
        Err(err) => {
            match err.problems() {
                [] => errln!(out, "error: {err}"),
                problems => {
                    for problem in problems {
                        errln!(out, "error: {problem}");
                    }
                    errln!(out, "{}: {} problem(s)", dir.display(), problems.len());
                }
            }
            None
        }
    }
}

/// The folder and intent settings to decide with: DIR and the defaults, or a sidecar config's
/// `intent` and (without DIR) its `policy.dir`. Exactly one folder must come out: none, or
/// DIR and a `policy.dir` naming another folder, is an error. On error prints why and
/// returns `None` (exit 78).
fn sidecar(dir: Option<&Path>, config: Option<&Path>, out: &mut Out) -> Option<Sidecar> {
    let Some(path) = config else {
        let Some(dir) = dir else {
            errln!(
                out,
                "error: no policy folder: give DIR, or --config FILE with a `policy.dir`"
            );
            return None;
        };
        return Some(Sidecar {
            dir: dir.to_owned(),
            intent_prefix: INTENT_PREFIX.to_owned(),
            default_action: DEFAULT_ACTION.to_owned(),
            mcp: None,
        });
    };
    let config = match hopgate_config::load(path) {
        Ok(config) => config,
        Err(err) => {
            report_config_error(path, &err, out);
            return None;
        }
    };
    let configured = config.policy().map(hopgate_config::PolicyConfig::dir);
    let dir = match (dir, configured) {
        (None, None) => {
            errln!(
                out,
                "error: `{}` has no `policy.dir`: give the policy folder as DIR",
                path.display()
            );
            return None;
        }
        (Some(dir), None) | (None, Some(dir)) => dir,
        (Some(dir), Some(configured)) if same_folder(dir, configured) => dir,
        (Some(dir), Some(configured)) => {
            errln!(
                out,
                "error: DIR `{}` is not the `policy.dir` of `{}` (`{}`): give one of them",
                dir.display(),
                path.display(),
                configured.display()
            );
            return None;
        }
    };
    Some(Sidecar {
        dir: dir.to_owned(),
        intent_prefix: config.intent().header_prefix().to_owned(),
        default_action: config.intent().default_action().to_owned(),
        mcp: Some(config.mcp().cloned()),
    })
}

/// Whether two paths name one folder (the same after resolving links and `..`).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// As `hopgate check-config` prints it: each problem with its path, then their count.
fn report_config_error(path: &Path, err: &ConfigError, out: &mut Out) {
    match err {
        ConfigError::Invalid(errors) => {
            for error in errors {
                errln!(out, "error: {error}");
            }
            errln!(out, "{}: {} problem(s)", path.display(), errors.len());
        }
        ConfigError::Read { .. } => errln!(out, "error: {err}"),
    }
}
