//! `policy test [DIR] CASES.yaml`: each case decided with the sidecar's own code and checked
//! against what it expects; and [`with_request`], which `explain` shares.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hopgate_config::SpiffeId;
use hopgate_policy::{
    Decision, DenyReason, Direction, Effect, HopRequest, McpFacts, PolicySnapshot, TokenFacts,
};
use hopgate_proxy::http::authorize::HttpFacts;
use serde::Deserialize;

use super::Sidecar;
use crate::cli::PolicyTest;
use crate::output::Out;

/// One request to decide, from the command line or a cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Case {
    #[serde(default)]
    pub(super) name: String,
    pub(super) peer: String,
    pub(super) dest: String,
    pub(super) action: Option<String>,
    #[serde(default = "default_method")]
    pub(super) method: String,
    #[serde(default = "default_path")]
    pub(super) path: String,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    pub(super) token_claims: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) direction: CaseDirection,
    #[serde(default)]
    pub(super) expect: Option<Expect>,
    /// Exactly the determining policies of the decision, in any order.
    #[serde(default)]
    pub(super) expect_policies: Option<Vec<String>>,
    /// The deny reason, as the audit record's `reason` spells it.
    #[serde(default)]
    pub(super) expect_reason: Option<Reason>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum CaseDirection {
    #[default]
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Expect {
    Allow,
    Deny,
}

/// A [`DenyReason`], spelled as the audit record spells it: `no_permit`, `forbidden`,
/// `unknown_action`, `evaluation_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Reason {
    NoPermit,
    Forbidden,
    UnknownAction,
    EvaluationError,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

// === impl Expect ===

impl Expect {
    fn effect(self) -> Effect {
        match self {
            Self::Allow => Effect::Allow,
            Self::Deny => Effect::Deny,
        }
    }
}

// === impl Reason ===

impl Reason {
    fn deny_reason(self) -> DenyReason {
        match self {
            Self::NoPermit => DenyReason::NoPermit,
            Self::Forbidden => DenyReason::Forbidden,
            Self::UnknownAction => DenyReason::UnknownAction,
            Self::EvaluationError => DenyReason::EvaluationError,
        }
    }
}

/// `policy test [DIR] CASES.yaml [--config FILE]`: 0 when every case passes, 1 when one
/// fails, 78 bad input.
pub(crate) fn test(args: &PolicyTest) -> ExitCode {
    let mut out = Out::default();
    let code = run(args, &mut out);
    out.finish(code)
}

fn run(args: &PolicyTest, out: &mut Out) -> ExitCode {
    let cases = match load_cases(&args.cases) {
        Ok(cases) => cases,
        Err(err) => {
            errln!(out, "error: {err:#}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    };
    let Some((sidecar, snapshot)) =
        super::decider(args.dir.as_deref(), args.config.as_deref(), out)
    else {
        return ExitCode::from(crate::EXIT_CONFIG);
    };
    let mut failed = 0;
    for (i, case) in cases.iter().enumerate() {
        let name = if case.name.is_empty() {
            format!("case {i}")
        } else {
            case.name.clone()
        };
        match check_case(case, &snapshot, &sidecar) {
            Ok(detail) => outln!(out, "pass  {name}: {detail}"),
            Err(why) => {
                failed += 1;
                outln!(out, "FAIL  {name}: {why}");
            }
        }
    }
    outln!(out, "{} passed, {failed} failed", cases.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Decides one case: `Ok` with the decision when the case holds, `Err` with what was expected
/// and what came when it does not.
fn check_case(case: &Case, snapshot: &PolicySnapshot, sidecar: &Sidecar) -> Result<String, String> {
    let Some(expect) = case.expect else {
        return Err("no `expect` (allow or deny)".to_owned());
    };
    let decision = with_request(case, sidecar, |req| snapshot.authorize(req))
        .map_err(|err| format!("{err:#}"))?;
    let mut expected = Vec::new();
    if decision.effect() != expect.effect() {
        expected.push(expect.effect().as_str().to_owned());
    }
    if let Some(policies) = &case.expect_policies {
        let mut want: Vec<&str> = policies.iter().map(String::as_str).collect();
        want.sort_unstable();
        want.dedup();
        let got = decision.policies().iter().map(String::as_str);
        if !want.into_iter().eq(got) {
            expected.push(format!("policies [{}]", policies.join(", ")));
        }
    }
    if let Some(reason) = case.expect_reason
        && decision.reason() != Some(reason.deny_reason())
    {
        expected.push(format!("reason {}", reason.deny_reason()));
    }
    let got = describe(&decision);
    if expected.is_empty() {
        Ok(got)
    } else {
        Err(format!("expected {}, got {got}", expected.join(", ")))
    }
}

/// `deny by [deny-agent-direct-to-crm] (forbidden)`.
fn describe(decision: &Decision) -> String {
    let reason = decision
        .reason()
        .map_or_else(String::new, |reason| format!(" ({reason})"));
    format!(
        "{} by [{}]{reason}",
        decision.effect(),
        decision.policies().join(", ")
    )
}

/// The cases of a file: a YAML list, not empty (a file that tests nothing is a mistake, not a
/// pass).
fn load_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let cases: Option<Vec<Case>> =
        serde_saphyr::from_str(&text).with_context(|| format!("`{}`", path.display()))?;
    match cases {
        Some(cases) if !cases.is_empty() => Ok(cases),
        _ => bail!(
            "`{}` has no cases: it must hold a list of cases, each with an `expect`",
            path.display()
        ),
    }
}

/// Builds the request head the sidecar would see, reads its facts with the sidecar's own code
/// and hands `decide` the hop request the sidecar would decide. An MCP request's call is read
/// from its `mcp-method`, `mcp-name` and `mcp-protocol-version` headers, which say what its body
/// would (the sidecar refuses a body that disagrees with them).
pub(super) fn with_request<R>(
    case: &Case,
    sidecar: &Sidecar,
    decide: impl FnOnce(&HopRequest<'_>) -> R,
) -> anyhow::Result<R> {
    let intent_prefix = sidecar.intent_prefix.as_str();
    let peer = SpiffeId::parse(&case.peer).with_context(|| format!("peer `{}`", case.peer))?;
    let dest = SpiffeId::parse(&case.dest).with_context(|| format!("dest `{}`", case.dest))?;
    let mut request = http::Request::builder()
        .method(case.method.as_str())
        .uri(case.path.as_str());
    for (name, value) in &case.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(action) = &case.action {
        request = request.header(format!("{intent_prefix}action"), action.as_str());
    }
    let (parts, ()) = request
        .body(())
        .context("method, path or a header is not valid HTTP")?
        .into_parts();
    let mut facts =
        HttpFacts::from_parts(&parts, intent_prefix).map_err(|err| anyhow::anyhow!("{err}"))?;
    facts.mcp = mcp_call(&parts, sidecar.mcp.as_ref().map(Option::as_ref))?;
    let token = case
        .token_claims
        .as_ref()
        .map(TokenFacts::from_claims)
        .transpose()
        .context("token_claims")?;
    let direction = match case.direction {
        CaseDirection::Inbound => Direction::Inbound,
        CaseDirection::Outbound => Direction::Outbound,
    };
    Ok(decide(&facts.hop_request(
        &peer,
        &dest,
        direction,
        token.as_ref(),
    )))
}

/// The MCP call a case names: on a POST to one of the sidecar's `mcp.paths` (any path without
/// `--config`, if it names a method), from the 2026-07-28 headers.
fn mcp_call<'a>(
    parts: &'a http::request::Parts,
    mcp: Option<Option<&hopgate_config::McpConfig>>,
) -> anyhow::Result<Option<McpFacts<'a>>> {
    let header = |name: &str| -> anyhow::Result<Option<&'a str>> {
        parts
            .headers
            .get(name)
            .map(|value| value.to_str().with_context(|| format!("header `{name}`")))
            .transpose()
    };
    let method = header("mcp-method")?;
    let on_path = match mcp {
        Some(mcp) => mcp.is_some_and(|mcp| mcp.is_mcp_path(parts.uri.path())),
        None => method.is_some(),
    };
    if parts.method != http::Method::POST || !on_path {
        return Ok(None);
    }
    let Some(method) = method else {
        bail!(
            "`POST {}` is an MCP request (`mcp.paths`), decided by its method: give it with \
             --header 'mcp-method: tools/call' (and 'mcp-name: TOOL')",
            parts.uri.path()
        );
    };
    Ok(Some(McpFacts {
        method,
        name: header("mcp-name")?,
        protocol_version: header("mcp-protocol-version")?.unwrap_or_default(),
    }))
}
