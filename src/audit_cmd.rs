//! `hopgate audit verify`: check the seals of signed audit logs, offline, with the verifier of
//! `hopgate_proxy::telemetry::seal::verify`. Exit 0 only when every file is intact and its
//! signer verified against a bundle: without `--bundle` who signed is not known, and the exit
//! says so (1), as for `token inspect`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use hopgate_config::TrustDomain;
use hopgate_proxy::telemetry::seal::verify::{self, Break, ChainCheck, Report};
use hopgate_proxy::tls::{SpiffeClientVerifier, TrustBundles};

use crate::cli::AuditVerify;

/// The `--bundle` arguments: bundles named by trust domain, and at most one for the signer's.
#[derive(Debug, Default)]
struct Bundles {
    named: BTreeMap<TrustDomain, PathBuf>,
    signers: Option<PathBuf>,
}

/// `audit verify`: 0 when every file is intact and signed by a verified SVID, 1 otherwise.
pub(crate) fn verify(args: &AuditVerify) -> ExitCode {
    let bundles = match parse_bundles(&args.bundles) {
        Ok(bundles) => bundles,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut all_good = true;
    for file in &args.files {
        all_good &= verify_file(file, &bundles, !args.bundles.is_empty());
    }
    if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Verifies one file and prints its line; whether it is intact and its signer verified.
fn verify_file(file: &Path, bundles: &Bundles, trust: bool) -> bool {
    let name = file.display();
    let contents = match std::fs::read(file) {
        Ok(contents) => contents,
        Err(err) => {
            eprintln!("error: cannot read `{name}`: {err}");
            return false;
        }
    };
    let checker = if trust {
        match checker(&contents, bundles) {
            Ok(checker) => checker,
            Err(err) => {
                eprintln!("error: {name}: {err:#}");
                return false;
            }
        }
    } else {
        None
    };
    let chains = checker.as_ref().map(|c| c as &dyn ChainCheck);
    match verify::verify(&contents, chains) {
        Ok(report) if report.trusted => {
            println!("{name}: intact: {}", summary(&report, "signed by"));
            true
        }
        Ok(report) => {
            println!(
                "{name}: hash chain and signatures hold: {}; who signed is not verified (give --bundle PEM to verify)",
                summary(&report, "signed by the key in the x5c of")
            );
            false
        }
        Err(Break {
            line: Some(line),
            what,
        }) => {
            println!("{name}:{line}: {what}");
            false
        }
        Err(Break { line: None, what }) => {
            println!("{name}: {what}");
            false
        }
    }
}

/// `57 records in 3 seals, signed by spiffe://... (2 SVIDs)`.
fn summary(report: &Report, signed: &str) -> String {
    let plural = |n: u64, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let runs = if report.runs > 1 {
        format!(" over {} runs", report.runs)
    } else {
        String::new()
    };
    let signers: Vec<String> = report.signers.iter().map(ToString::to_string).collect();
    let svids = u64::try_from(report.svids).unwrap_or(u64::MAX);
    format!(
        "{} in {}{runs}, {signed} {} ({})",
        plural(report.records, "record", "records"),
        plural(report.seals, "seal", "seals"),
        signers.join(", "),
        plural(svids, "SVID", "SVIDs"),
    )
}

/// `--bundle PATH` belongs to the signer's trust domain; `--bundle TD=PATH` names its own.
fn parse_bundles(args: &[String]) -> anyhow::Result<Bundles> {
    let mut bundles = Bundles::default();
    for arg in args {
        match arg.split_once('=') {
            Some((td, path)) => {
                let td = TrustDomain::parse(td).with_context(|| format!("--bundle `{arg}`"))?;
                if bundles
                    .named
                    .insert(td.clone(), PathBuf::from(path))
                    .is_some()
                {
                    bail!("two bundles for `{td}`: give one --bundle per trust domain");
                }
            }
            None => {
                if bundles.signers.replace(PathBuf::from(arg)).is_some() {
                    bail!("two bundles without a trust domain: name each as --bundle TD=PATH");
                }
            }
        }
    }
    Ok(bundles)
}

/// The verifier of the file's signers: the named bundles, and the unnamed one for the trust
/// domain the first seal's leaf claims (checked like every other, so a false claim fails).
fn checker(contents: &[u8], bundles: &Bundles) -> anyhow::Result<Option<SpiffeClientVerifier>> {
    let mut files = bundles.named.clone();
    if let Some(path) = &bundles.signers
        && let Some(signer) = verify::first_signer(contents)
    {
        let td = signer.trust_domain();
        if files.insert(td.clone(), path.clone()).is_some() {
            bail!("two bundles for `{td}`: the signer's, and one named `{td}`");
        }
    }
    if files.is_empty() {
        // No signed seal to take a trust domain from: the walk reports what is wrong.
        return Ok(None);
    }
    let domains: Vec<TrustDomain> = files.keys().cloned().collect();
    let loaded = TrustBundles::load(&files)?;
    Ok(Some(SpiffeClientVerifier::new(&loaded, &domains)?))
}
