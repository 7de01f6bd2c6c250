//! `hopgate token inspect`: decode a hop token, verify it against trust bundles when given, and
//! print its delegation chain as a tree (or, with `--json`, as one JSON object), for SREs
//! following a call. Exit 0 only for a token that verified: without `--bundle` nothing was
//! verified, and the exit says so (1).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use hopgate_config::{SpiffeId, TrustDomain};
use hopgate_proxy::tls::{SpiffeClientVerifier, TrustBundles};
use hopgate_proxy::token::{Claims, Limits, TokenVerifier, inspect};
use serde_json::{Value, json};

use crate::cli::TokenInspect;

/// `token inspect`: 0 when the token verifies, 1 when it is invalid or was not verified (no
/// `--bundle`).
pub(crate) fn run(args: &TokenInspect) -> ExitCode {
    let compact = match read_token(args.token.as_deref()) {
        Ok(compact) => compact,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let token = match inspect(&compact) {
        Ok(token) => token,
        Err(reason) => {
            if args.json {
                let out = json!({ "verified": false, "error": reason.as_str(), "claims": null });
                println!("{out}");
            } else {
                println!("invalid: {}", reason.as_str());
            }
            return ExitCode::FAILURE;
        }
    };
    let outcome = if args.bundles.is_empty() {
        Outcome::Unverified
    } else {
        match verify(&compact, token.claims(), &args.bundles) {
            Ok(()) => Outcome::Verified,
            Err(err) => Outcome::Invalid(format!("{err:#}")),
        }
    };
    if args.json {
        println!("{}", render_json(token.claims(), &outcome));
    } else {
        print_tree(token.claims());
        match &outcome {
            Outcome::Verified => {
                println!("verified: x5c chain, signature, audience, lifetime and actors hold");
            }
            Outcome::Unverified => {
                println!("signature and chain: not verified (give --bundle PEM to verify)");
            }
            Outcome::Invalid(why) => println!("invalid: {why}"),
        }
    }
    match outcome {
        Outcome::Verified => ExitCode::SUCCESS,
        Outcome::Unverified | Outcome::Invalid(_) => ExitCode::FAILURE,
    }
}

/// What verification said about a token that decoded.
enum Outcome {
    Verified,
    /// No `--bundle`: decoded only.
    Unverified,
    /// Why it is refused.
    Invalid(String),
}

/// The token as one JSON object: `verified`, `error` (a reason, `not_verified` without
/// bundles, or null), `claims` as the token carries them, and `chain` (origin first, ending
/// with the audience), the tree's content.
fn render_json(claims: &Claims, outcome: &Outcome) -> Value {
    let mut chain = origin_first(claims);
    chain.push(claims.aud().to_owned());
    let error = match outcome {
        Outcome::Verified => Value::Null,
        Outcome::Unverified => json!("not_verified"),
        Outcome::Invalid(why) => json!(why),
    };
    json!({
        "verified": matches!(outcome, Outcome::Verified),
        "error": error,
        "claims": serde_json::to_value(claims).unwrap_or(Value::Null),
        "chain": chain,
    })
}

fn read_token(arg: Option<&str>) -> anyhow::Result<String> {
    let raw = match arg {
        Some(token) if token != "-" => token.to_owned(),
        _ => {
            let mut input = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut input)
                .context("cannot read the token from standard input")?;
            input
        }
    };
    Ok(raw.trim().to_owned())
}

/// Verifies the token for its own audience: chain against the bundles, signature, time, actors.
/// `--bundle PATH` belongs to the issuer's trust domain; `--bundle TD=PATH` names its own.
fn verify(compact: &str, claims: &Claims, bundles: &[String]) -> anyhow::Result<()> {
    let iss = SpiffeId::parse(claims.iss()).with_context(|| format!("iss `{}`", claims.iss()))?;
    let mut files: BTreeMap<TrustDomain, PathBuf> = BTreeMap::new();
    for bundle in bundles {
        let (td, path) = match bundle.split_once('=') {
            Some((td, path)) => (
                TrustDomain::parse(td).with_context(|| format!("--bundle `{bundle}`"))?,
                path,
            ),
            None => (iss.trust_domain(), bundle.as_str()),
        };
        if files.insert(td.clone(), PathBuf::from(path)).is_some() {
            bail!("two bundles for `{td}`: name each as --bundle TD=PATH");
        }
    }
    let domains: Vec<TrustDomain> = files.keys().cloned().collect();
    let bundles = TrustBundles::load(&files)?;
    let chains = Arc::new(SpiffeClientVerifier::new(&bundles, &domains)?);
    let aud = SpiffeId::parse(claims.aud()).with_context(|| format!("aud `{}`", claims.aud()))?;
    // Offline there is no peer and no "own" identity: the token is checked for its own
    // audience, with hopgate's largest accepted lifetime.
    let limits = Limits {
        ttl: Duration::from_secs(24 * 3600),
        leeway: Duration::from_secs(5),
        max_depth: hopgate_policy::MAX_ACTORS,
    };
    TokenVerifier::new(aud, chains, limits)
        .verify_relay(compact, SystemTime::now())
        .map(drop)
        .map_err(|reason| anyhow::anyhow!("{}", reason.as_str()))
}

fn print_tree(claims: &Claims) {
    print!("{}", render_tree(claims));
}

/// The token as a tree: its `jti`, `sub`, `txn`, `scope`, expiry and parent, then the chain of
/// workloads that carried it, origin first, ending with its audience.
pub(crate) fn render_tree(claims: &Claims) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let scopes: Vec<&str> = claims.scopes().collect();
    let scope = if scopes.is_empty() {
        "(none)".to_owned()
    } else {
        scopes.join(" ")
    };
    let _ = writeln!(out, "hop token {}", claims.jti());
    let _ = writeln!(out, "├─ sub:     {}", claims.sub());
    let _ = writeln!(out, "├─ txn:     {}", claims.txn());
    let _ = writeln!(out, "├─ scope:   {scope}");
    if let Some(tctx) = claims.tctx() {
        let _ = writeln!(out, "├─ tctx:    {}", Value::Object(tctx.clone()));
    }
    let _ = writeln!(out, "├─ issued:  {}", rfc3339(claims.iat()));
    let _ = writeln!(out, "├─ expires: {}", expiry(claims.exp()));
    if let Some(prv) = claims.prv() {
        let _ = writeln!(out, "├─ parent:  sha256 {prv}");
    }
    let _ = writeln!(out, "└─ chain (origin first):");
    let chain = origin_first(claims);
    for (depth, actor) in chain.iter().enumerate() {
        let indent = "   ".repeat(depth);
        let role = if actor == claims.iss() {
            "  (minted this token)"
        } else {
            ""
        };
        let _ = writeln!(out, "   {indent}└─ {actor}{role}");
    }
    let indent = "   ".repeat(chain.len());
    let _ = writeln!(out, "   {indent}└─ {}  (aud: the next hop)", claims.aud());
    out
}

/// The workloads that carried the token, origin first: the origin workload (a SPIFFE `sub`),
/// then the `act` chain from its innermost actor out.
fn origin_first(claims: &Claims) -> Vec<String> {
    let mut chain = actors(claims);
    chain.reverse();
    if SpiffeId::parse(claims.sub()).is_ok()
        && chain.first().map(String::as_str) != Some(claims.sub())
    {
        chain.insert(0, claims.sub().to_owned());
    }
    chain
}

/// The `act` chain, outermost (most recent) first.
fn actors(claims: &Claims) -> Vec<String> {
    let mut out = Vec::new();
    let mut act = claims.act();
    while let Some(node) = act {
        if let Some(sub) = node.get("sub").and_then(|s| s.as_str()) {
            out.push(sub.to_owned());
        }
        act = node.get("act");
        if out.len() > hopgate_policy::MAX_ACTORS {
            break;
        }
    }
    if out.is_empty() {
        out.push(claims.iss().to_owned());
    }
    out
}

/// `secs` since the epoch in RFC 3339, or the number when it is out of range.
fn rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| secs.to_string())
}

fn expiry(exp: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let at = rfc3339(exp);
    if exp > now {
        format!("{at} (in {}s)", exp - now)
    } else {
        format!("{at} (expired {}s ago)", now - exp)
    }
}
