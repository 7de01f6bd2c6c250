//! Running iptables: which binaries `--iptables-mode` names, and the one way each is run.
//! hopgate uses only `iptables-save -t nat` (to read what is installed) and
//! `iptables-restore --noflush` (to change it, one atomic commit per family), and their `ip6tables`
//! twins; a failure names the command line and carries its stderr.

use std::io::{self, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::IptablesError;
use super::rules::Family;

/// How long iptables-restore waits for the xtables lock another writer holds (legacy iptables
/// takes one; nf_tables accepts the flag and needs none).
const LOCK_WAIT_SECS: &str = "5";

/// Which iptables binaries to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `iptables-save` and `iptables-restore` on `PATH`, whichever variant they are.
    Plain,
    /// `iptables-legacy-save` and `iptables-legacy-restore`.
    Legacy,
    /// `iptables-nft-save` and `iptables-nft-restore`.
    Nft,
}

/// The save and restore binaries of one family in one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tools {
    save: &'static str,
    restore: &'static str,
}

/// The variant the binaries drive, from their `--version`: `nf_tables` or `legacy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    /// The first line of `iptables-restore --version`, as printed.
    pub(crate) line: String,
    /// `nf_tables` or `legacy`.
    pub(crate) variant: &'static str,
}

// === impl Mode ===

impl Mode {
    /// Parses `--iptables-mode`.
    ///
    /// # Errors
    /// [`IptablesError::BadMode`] for anything but `plain`, `legacy` or `nft`.
    pub(crate) fn parse(input: &str) -> Result<Self, IptablesError> {
        match input {
            "plain" => Ok(Self::Plain),
            "legacy" => Ok(Self::Legacy),
            "nft" => Ok(Self::Nft),
            _ => Err(IptablesError::BadMode {
                input: input.to_owned(),
            }),
        }
    }

    /// The binaries for `family`.
    pub(crate) fn tools(self, family: Family) -> Tools {
        let (save, restore) = match (self, family) {
            (Self::Plain, Family::V4) => ("iptables-save", "iptables-restore"),
            (Self::Plain, Family::V6) => ("ip6tables-save", "ip6tables-restore"),
            (Self::Legacy, Family::V4) => ("iptables-legacy-save", "iptables-legacy-restore"),
            (Self::Legacy, Family::V6) => ("ip6tables-legacy-save", "ip6tables-legacy-restore"),
            (Self::Nft, Family::V4) => ("iptables-nft-save", "iptables-nft-restore"),
            (Self::Nft, Family::V6) => ("ip6tables-nft-save", "ip6tables-nft-restore"),
        };
        Tools { save, restore }
    }
}

/// Whether the kernel has IPv6 at all: without it there is no `/proc/net/if_inet6` (booted with
/// `ipv6.disable=1`, or built without it), and ip6tables has nothing to act on.
pub(crate) fn kernel_has_ipv6() -> bool {
    Path::new("/proc/net/if_inet6").exists()
}

// === impl Tools ===

impl Tools {
    /// The restore binary's name.
    pub(crate) fn restore_name(&self) -> &'static str {
        self.restore
    }

    /// `iptables-restore --version`: which variant these binaries drive.
    ///
    /// # Errors
    /// [`IptablesError::Missing`] when the binary is not on `PATH`, or how running it failed.
    pub(crate) fn version(&self) -> Result<Version, IptablesError> {
        let out = run(self.restore, &["--version"], None)?;
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        // Legacy binaries say `(legacy)`, or nothing at all before 1.8; nft ones say so.
        let variant = if line.contains("nf_tables") {
            "nf_tables"
        } else {
            "legacy"
        };
        Ok(Version { line, variant })
    }

    /// `iptables-save -t nat`: the nat table as text, and what the binary warned on stderr (the
    /// nft variant says there when legacy tables exist too).
    ///
    /// # Errors
    /// [`IptablesError::Missing`], or the command's failure with its stderr.
    pub(crate) fn save_nat(&self) -> Result<(String, String), IptablesError> {
        let out = run(self.save, &["-t", "nat"], None)?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }

    /// `iptables-restore --noflush` of `ruleset`: one commit, applied whole or not at all.
    ///
    /// # Errors
    /// [`IptablesError::Missing`], or the command's failure with its stderr and the ruleset
    /// line it names.
    pub(crate) fn restore(&self, ruleset: &str) -> Result<(), IptablesError> {
        let args = ["--noflush", "-w", LOCK_WAIT_SECS];
        run(self.restore, &args, Some(ruleset)).map(drop)
    }
}

/// Runs `program args`, feeding it `stdin`; its output when it exits 0.
fn run(program: &'static str, args: &[&str], stdin: Option<&str>) -> Result<Output, IptablesError> {
    let command = format!("{program} {}", args.join(" "));
    let io_error = |source| IptablesError::Io {
        command: command.clone(),
        source,
    };
    let child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(IptablesError::Missing { program });
        }
        Err(err) => return Err(io_error(err)),
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A binary that exits early closes the pipe; its status and stderr say why.
        if let Err(err) = pipe.write_all(input.as_bytes())
            && err.kind() != io::ErrorKind::BrokenPipe
        {
            return Err(io_error(err));
        }
    }
    let out = child.wait_with_output().map_err(io_error)?;
    if out.status.success() {
        return Ok(out);
    }
    let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if let Some(line) = stdin.and_then(|input| failed_line(&stderr, input)) {
        stderr.push_str(&format!(" (the line: `{line}`)"));
    }
    if stderr.is_empty() {
        stderr.push_str("nothing on stderr");
    }
    Err(IptablesError::Failed {
        command,
        status: out.status.to_string(),
        stderr,
    })
}

/// The ruleset line an iptables-restore error names: `line 3 failed` (legacy) or `Error occurred
/// at line: 3` (both). The nf_tables variant checks a table when it commits, so it may name the
/// `COMMIT` line; that one says nothing and is left out.
fn failed_line<'a>(stderr: &str, input: &'a str) -> Option<&'a str> {
    stderr.match_indices("line").find_map(|(at, _)| {
        let rest = stderr.get(at + "line".len()..)?;
        let rest = rest.trim_start_matches([':', ' ']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let n: usize = digits.parse().ok()?;
        let line = input.lines().nth(n.checked_sub(1)?)?;
        (line != "COMMIT").then_some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_names_its_own_binaries_for_each_family() {
        assert_eq!(
            Mode::parse("plain").unwrap().tools(Family::V6).save,
            "ip6tables-save"
        );
        assert_eq!(
            Mode::parse("legacy").unwrap().tools(Family::V4).restore,
            "iptables-legacy-restore"
        );
        assert_eq!(
            Mode::parse("nft").unwrap().tools(Family::V6).restore,
            "ip6tables-nft-restore"
        );
        let err = Mode::parse("nftables").unwrap_err().to_string();
        assert_eq!(
            err,
            "--iptables-mode `nftables` is not one of `plain`, `legacy`, `nft`"
        );
    }

    #[test]
    fn a_failed_restore_names_the_line_it_failed_on() {
        let input = "*nat\n:HOPGATE_OUTPUT - [0:0]\n-A HOPGATE_OUTPUT -j NOPE\nCOMMIT\n";
        assert_eq!(
            failed_line("iptables-restore: line 3 failed", input),
            Some("-A HOPGATE_OUTPUT -j NOPE")
        );
        let legacy = "iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE'\n\n\
                      Error occurred at line: 3\nTry `iptables-restore -h'";
        assert_eq!(
            failed_line(legacy, input),
            Some("-A HOPGATE_OUTPUT -j NOPE")
        );
        let nft = "iptables-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist\n\
                   Error occurred at line: 4";
        assert_eq!(
            failed_line(nft, input),
            None,
            "the COMMIT line says nothing"
        );
        assert_eq!(failed_line("iptables-restore: line 9 failed", input), None);
        assert_eq!(
            failed_line("Permission denied (you must be root)", input),
            None
        );
    }

    #[test]
    fn a_binary_not_on_path_is_reported_as_missing() {
        let err = run("hopgate-test-no-such-iptables", &[], None).unwrap_err();
        assert!(
            matches!(
                err,
                IptablesError::Missing {
                    program: "hopgate-test-no-such-iptables"
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("is not on PATH"), "{err}");
    }
}
