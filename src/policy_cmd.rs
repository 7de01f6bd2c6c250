//! `hopgate policy check | explain | test`: Cedar policies checked, explained and tested offline,
//! through the sidecar's own request building ([`HttpFacts`]), so an offline decision is the
//! live one.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hopgate_config::SpiffeId;
use hopgate_policy::{Decision, Direction, Effect, PolicySnapshot, TokenFacts};
use hopgate_proxy::http::authorize::HttpFacts;
use serde::Deserialize;

use crate::cli::PolicyExplain;

/// The defaults of `intent.header_prefix` and `intent.default_action`.
const INTENT_PREFIX: &str = "intent-";
const DEFAULT_ACTION: &str = "call";

/// One request to decide, from the command line or a cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[serde(default)]
    name: String,
    peer: String,
    dest: String,
    action: Option<String>,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    token_claims: Option<serde_json::Value>,
    #[serde(default)]
    direction: CaseDirection,
    #[serde(default)]
    expect: Option<Expect>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CaseDirection {
    #[default]
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

/// `policy check DIR`.
pub(crate) fn check(dir: &Path) -> ExitCode {
    let snapshot = match PolicySnapshot::load(dir, DEFAULT_ACTION) {
        Ok(snapshot) => snapshot,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    for warning in snapshot.warnings() {
        eprintln!("warning: {warning}");
    }
    let impossible = snapshot.impossible_policies();
    for id in &impossible {
        eprintln!("error: policy `{id}` can never apply");
    }
    println!(
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

/// `policy explain DIR ...`: 0 allow, 1 deny, 78 bad input.
pub(crate) fn explain(args: &PolicyExplain) -> ExitCode {
    let result = explain_case(args).and_then(|case| {
        let snapshot = PolicySnapshot::load(&args.dir, DEFAULT_ACTION)?;
        let decision = decide(&snapshot, &case)?;
        Ok(decision)
    });
    match result {
        Ok(decision) => {
            print_decision(&decision);
            match decision.effect() {
                Effect::Allow => ExitCode::SUCCESS,
                Effect::Deny => ExitCode::FAILURE,
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(crate::EXIT_CONFIG)
        }
    }
}

/// `policy test DIR CASES.yaml`: 0 when every case passes.
pub(crate) fn test(dir: &Path, cases_file: &Path) -> ExitCode {
    let loaded = load_cases(cases_file)
        .and_then(|cases| Ok((cases, PolicySnapshot::load(dir, DEFAULT_ACTION)?)));
    let (cases, snapshot) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(crate::EXIT_CONFIG);
        }
    };
    let mut failed = 0;
    for (i, case) in cases.iter().enumerate() {
        let name = if case.name.is_empty() {
            format!("case {i}")
        } else {
            case.name.clone()
        };
        let Some(expect) = case.expect else {
            failed += 1;
            println!("FAIL  {name}: no `expect` (allow or deny)");
            continue;
        };
        match decide(&snapshot, case) {
            Ok(decision) => {
                let got = match decision.effect() {
                    Effect::Allow => Expect::Allow,
                    Effect::Deny => Expect::Deny,
                };
                let detail = format!(
                    "{} by [{}]{}",
                    effect_str(decision.effect()),
                    decision.policies().join(", "),
                    reason_suffix(&decision)
                );
                if got == expect {
                    println!("pass  {name}: {detail}");
                } else {
                    failed += 1;
                    println!(
                        "FAIL  {name}: expected {}, got {detail}",
                        expect_str(expect)
                    );
                }
            }
            Err(err) => {
                failed += 1;
                println!("FAIL  {name}: {err:#}");
            }
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn explain_case(args: &PolicyExplain) -> anyhow::Result<Case> {
    let mut headers = std::collections::BTreeMap::new();
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
    })
}

fn load_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("`{}`", path.display()))
}

/// Builds the request head the sidecar would see and decides it with the sidecar's own code.
fn decide(snapshot: &PolicySnapshot, case: &Case) -> anyhow::Result<Decision> {
    let peer = SpiffeId::parse(&case.peer).with_context(|| format!("peer `{}`", case.peer))?;
    let dest = SpiffeId::parse(&case.dest).with_context(|| format!("dest `{}`", case.dest))?;
    let mut request = http::Request::builder()
        .method(case.method.as_str())
        .uri(case.path.as_str());
    for (name, value) in &case.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    if let Some(action) = &case.action {
        request = request.header(format!("{INTENT_PREFIX}action"), action.as_str());
    }
    let (parts, ()) = request
        .body(())
        .context("method, path or a header is not valid HTTP")?
        .into_parts();
    let facts =
        HttpFacts::from_parts(&parts, INTENT_PREFIX).map_err(|err| anyhow::anyhow!("{err}"))?;
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
    Ok(snapshot.authorize(&facts.hop_request(&peer, &dest, direction, token.as_ref())))
}

fn print_decision(decision: &Decision) {
    println!("decision:    {}", effect_str(decision.effect()));
    println!("decision id: {}", decision.id());
    println!("action:      {}", decision.action());
    if decision.policies().is_empty() {
        println!("policies:    (none)");
    } else {
        println!("policies:    {}", decision.policies().join(", "));
    }
    if let Some(reason) = decision.reason() {
        println!("reason:      {reason}");
    }
    for error in decision.errors() {
        println!("error:       {error}");
    }
}

fn effect_str(effect: Effect) -> &'static str {
    match effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}

fn expect_str(expect: Expect) -> &'static str {
    match expect {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
    }
}

fn reason_suffix(decision: &Decision) -> String {
    decision
        .reason()
        .map_or_else(String::new, |reason| format!(" ({reason})"))
}
