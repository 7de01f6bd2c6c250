//! `hopgate iptables apply | remove | print`: the nat rules a transparent sidecar needs
//! (`outbound.transparent: true`), in hopgate's own chains `HOPGATE_OUTPUT` and
//! `HOPGATE_PREROUTING`. The Kubernetes init container runs `apply` in the pod's network
//! namespace before the app starts.
//!
//! ```text
//! flags ──Capture::parse──▶ Capture ──rules::apply(family, installed)──▶ restore text
//!                                        ▲                                   │
//!                 iptables-save -t nat ──┘ (Installed)     iptables-restore --noflush
//! ```
//!
//! Every flag is checked before any command runs. Both families are read before either is
//! changed, and each family is changed by one restore, which applies whole or not at all.
//! IPv6 is done with ip6tables when the kernel has IPv6 and the binaries are installed, and
//! skipped (saying so) otherwise; once attempted, its failure fails the command, because
//! IPv6 traffic left uncaptured would bypass the sidecar.

use std::process::ExitCode;

use crate::cli::{IptablesBinaries, IptablesRules};
use crate::output::Out;

mod error;
mod options;
mod rules;
mod runner;

pub(crate) use error::IptablesError;
use options::Capture;
use rules::{Family, Installed, Ruleset};
use runner::{Mode, Tools, Version};

/// What a command will do, read before anything is changed.
#[derive(Debug)]
struct Plan {
    steps: Vec<Step>,
    /// Why a family is left out (`IPv6: skipped: ...`).
    skipped: Vec<String>,
}

/// One family's work.
#[derive(Debug)]
struct Step {
    family: Family,
    tools: Tools,
    version: Version,
    /// `None`: nothing to do (remove on a table without hopgate's rules).
    ruleset: Option<Ruleset>,
}

/// `iptables apply`: 0 when the rules are in place for every family acted on, 1 otherwise.
pub(crate) fn apply(flags: &IptablesRules, binaries: &IptablesBinaries) -> ExitCode {
    let mut out = Out::default();
    let result = Capture::parse(flags).and_then(|capture| {
        note_unused_inbound_port(&capture, &mut out);
        let mode = Mode::parse(&binaries.iptables_mode)?;
        plan(mode, &mut out, |installed, family| {
            Some(rules::apply(&capture, family, installed))
        })
    });
    let code = match result {
        Ok(plan) => execute(&plan, &mut out),
        Err(err) => fail(&err, &mut out),
    };
    out.finish(code)
}

/// `iptables remove`: 0 when nothing of hopgate's is left (also when there was nothing), 1
/// otherwise.
pub(crate) fn remove(binaries: &IptablesBinaries) -> ExitCode {
    let mut out = Out::default();
    let result = Mode::parse(&binaries.iptables_mode)
        .and_then(|mode| plan(mode, &mut out, |installed, _| rules::remove(installed)));
    let code = match result {
        Ok(plan) => execute(&plan, &mut out),
        Err(err) => fail(&err, &mut out),
    };
    out.finish(code)
}

/// `iptables print`: the restore input `apply` uses on a table without hopgate's rules, for
/// both families. Runs no command. 0, or 1 for a bad flag.
pub(crate) fn print(flags: &IptablesRules) -> ExitCode {
    let mut out = Out::default();
    let capture = match Capture::parse(flags) {
        Ok(capture) => capture,
        Err(err) => {
            let code = fail(&err, &mut out);
            return out.finish(code);
        }
    };
    note_unused_inbound_port(&capture, &mut out);
    for (family, when) in [
        (Family::V4, ""),
        (
            Family::V6,
            " (when the kernel has IPv6 and ip6tables is installed)",
        ),
    ] {
        let restore = Mode::Plain.tools(family).restore_name();
        outln!(out, "# {}: {restore} --noflush{when}", family.name());
        let ruleset = rules::apply(&capture, family, &Installed::default());
        for line in ruleset.text.lines() {
            outln!(out, "{line}");
        }
    }
    out.finish(ExitCode::SUCCESS)
}

/// Reads every family's nat table and plans its ruleset with `ruleset`, changing nothing.
fn plan(
    mode: Mode,
    out: &mut Out,
    ruleset: impl Fn(&Installed, Family) -> Option<Ruleset>,
) -> Result<Plan, IptablesError> {
    let v4 = mode.tools(Family::V4);
    let mut families = vec![(Family::V4, v4, v4.version()?)];
    let mut skipped = Vec::new();
    let v6 = mode.tools(Family::V6);
    if !runner::kernel_has_ipv6() {
        skipped.push("IPv6: skipped: the kernel has no IPv6 (no /proc/net/if_inet6)".to_owned());
    } else {
        match v6.version() {
            Ok(version) => families.push((Family::V6, v6, version)),
            Err(IptablesError::Missing { program }) => {
                skipped.push(format!("IPv6: skipped: `{program}` is not on PATH"));
            }
            Err(err) => return Err(err),
        }
    }
    let mut steps = Vec::new();
    for (family, tools, version) in families {
        let (save, warnings) = tools.save_nat()?;
        for warning in warnings.lines() {
            errln!(out, "note: {}: {}", family.name(), note(warning, mode));
        }
        steps.push(Step {
            family,
            tools,
            version,
            ruleset: ruleset(&Installed::parse(&save), family),
        });
    }
    Ok(Plan { steps, skipped })
}

/// Says that `--inbound-port` changes nothing without `--capture-inbound`.
fn note_unused_inbound_port(capture: &Capture, out: &mut Out) {
    if capture.unused_inbound_port() {
        errln!(
            out,
            "note: --inbound-port is used only with --capture-inbound; no inbound rule is installed"
        );
    }
}

/// A warning of iptables-save, as a note. The nf_tables variant warns when legacy tables exist
/// in the namespace too: the kernel applies their rules as well, so say which mode reads them.
fn note(warning: &str, mode: Mode) -> String {
    let warning = warning.trim_start_matches(['#', ' ']);
    let warning = warning.strip_prefix("Warning: ").unwrap_or(warning);
    if warning.contains("legacy tables present") && mode != Mode::Legacy {
        format!(
            "{warning}; the kernel applies those rules too, and --iptables-mode legacy acts on them"
        )
    } else {
        warning.to_owned()
    }
}

/// Restores each planned ruleset in turn and says what each did.
fn execute(plan: &Plan, out: &mut Out) -> ExitCode {
    for step in &plan.steps {
        let Version { line, variant } = &step.version;
        outln!(out, "{} via {line}: variant {variant}", step.family.name());
        let Some(ruleset) = &step.ruleset else {
            outln!(out, "  nothing of hopgate's installed");
            continue;
        };
        if let Err(err) = step.tools.restore(&ruleset.text) {
            return fail(&err, out);
        }
        for change in &ruleset.changes {
            outln!(out, "  {change}");
        }
    }
    for skipped in &plan.skipped {
        outln!(out, "{skipped}");
    }
    ExitCode::SUCCESS
}

fn fail(err: &IptablesError, out: &mut Out) -> ExitCode {
    errln!(out, "error: {err}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_legacy_tables_warning_says_which_mode_reads_them() {
        let warning =
            "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them";
        assert_eq!(
            note(warning, Mode::Plain),
            "iptables-legacy tables present, use iptables-legacy-save to see them; the kernel \
             applies those rules too, and --iptables-mode legacy acts on them"
        );
        assert_eq!(
            note(warning, Mode::Legacy),
            "iptables-legacy tables present, use iptables-legacy-save to see them"
        );
        assert_eq!(note("something else", Mode::Nft), "something else");
    }
}
