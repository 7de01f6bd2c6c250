//! `policy explain [DIR] --peer ID --dest ID [...]`: one request decided and explained; with
//! `--verbose`, the Cedar request too.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hopgate_policy::{CedarRequest, Decision, DenyReason, Effect};

use super::cases::{Case, CaseDirection, with_request};
use crate::cli::PolicyExplain;
use crate::output::Out;

/// `policy explain`: 0 allow, 1 deny, 78 bad input.
pub(crate) fn explain(args: &PolicyExplain) -> ExitCode {
    let mut out = Out::default();
    let code = run(args, &mut out);
    out.finish(code)
}

fn run(args: &PolicyExplain, out: &mut Out) -> ExitCode {
    let case = match explain_case(args) {
        Ok(case) => case,
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
    let decided = with_request(&case, &sidecar, |req| {
        let decision = snapshot.authorize(req);
        let request = args.verbose.then(|| snapshot.cedar_request(req));
        (decision, request)
    });
    let (decision, request) = match decided {
        Ok(decided) => decided,
        Err(err) => {
            errln!(out, "error: {err:#}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    };
    print_decision(&decision, out);
    if let Some(request) = request {
        print_request(request.as_ref(), &decision, out);
    }
    match decision.effect() {
        Effect::Allow => ExitCode::SUCCESS,
        Effect::Deny => ExitCode::FAILURE,
    }
}

fn explain_case(args: &PolicyExplain) -> anyhow::Result<Case> {
    let mut headers = BTreeMap::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--header `{header}` is not `name: value`");
        };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let token_claims = args
        .token_claims
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--token-claims is not JSON")?;
    Ok(Case {
        name: String::new(),
        peer: args.peer.clone(),
        dest: args.dest.clone(),
        action: args.action.clone(),
        method: args.method.clone(),
        path: args.path.clone(),
        headers,
        token_claims,
        direction: if args.direction == "outbound" {
            CaseDirection::Outbound
        } else {
            CaseDirection::Inbound
        },
        expect: None,
        expect_policies: None,
        expect_reason: None,
    })
}

fn print_decision(decision: &Decision, out: &mut Out) {
    outln!(out, "decision:    {}", decision.effect());
    outln!(out, "decision id: {}", decision.id());
    outln!(out, "action:      {}", decision.action());
    if decision.policies().is_empty() {
        outln!(out, "policies:    (none)");
    } else {
        outln!(out, "policies:    {}", decision.policies().join(", "));
    }
    if let Some(reason) = decision.reason() {
        outln!(out, "reason:      {reason}");
    }
    for error in decision.errors() {
        outln!(out, "error:       {error}");
    }
}

/// `--verbose`: the Cedar request, its context and entities as pretty JSON, indented.
fn print_request(request: Option<&CedarRequest>, decision: &Decision, out: &mut Out) {
    let Some(request) = request else {
        let why = match decision.reason() {
            Some(DenyReason::UnknownAction) => "the schema does not declare the action",
            _ => "it could not be built (see the errors above)",
        };
        outln!(out, "cedar request: none: {why}");
        return;
    };
    outln!(out, "cedar request:");
    outln!(out, "  principal: {}", request.principal());
    outln!(out, "  action:    {}", request.action());
    outln!(out, "  resource:  {}", request.resource());
    for (label, value) in [
        ("context", request.context()),
        ("entities", request.entities()),
    ] {
        outln!(out, "  {label}:");
        let json = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        for line in json.lines() {
            outln!(out, "    {line}");
        }
    }
}
