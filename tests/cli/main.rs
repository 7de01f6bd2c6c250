//! Tests of the `hopgate` binary's command line, run as a real process.
//!
//! Certificate properties are checked with the `openssl` command when it is installed; without
//! it those checks are skipped (with a note on stderr), the rest still run.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed step fails the test"
)]

use std::path::Path;
use std::process::{Command, Output};

mod audit;
mod audit_trace;
mod config;
mod demo;
mod dev_ca;
mod iptables;
mod policy;
mod probe;
mod token;

const ID: &str = "spiffe://example.org/ns/prod/sa/api";

fn hopgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(args)
        .output()
        .unwrap()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn init_ca(dir: &Path) {
    let out = hopgate(&[
        "dev-ca",
        "init",
        path_arg(dir),
        "--trust-domain",
        "example.org",
    ]);
    assert!(out.status.success(), "init failed: {}", stderr(&out));
}

fn issue(dir: &Path, id: &str) -> Output {
    hopgate(&["dev-ca", "issue", path_arg(dir), id])
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `openssl` with `args`, or `None` when openssl is not installed.
fn openssl(args: &[&str]) -> Option<String> {
    match Command::new("openssl").args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                stderr(&out)
            );
            Some(String::from_utf8(out.stdout).unwrap())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("openssl not installed; skipping certificate checks");
            None
        }
        Err(e) => panic!("cannot run openssl: {e}"),
    }
}

/// The line after the one containing `header` in `openssl x509 -text` output.
fn value_after<'a>(text: &'a str, header: &str) -> &'a str {
    let mut lines = text.lines();
    lines.find(|l| l.contains(header)).unwrap_or_else(|| {
        panic!("no `{header}` in:\n{text}");
    });
    lines.next().unwrap().trim()
}

#[test]
fn version_names_the_changelogs_top_version_and_the_commit() {
    let out = hopgate(&["--version"]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let changelog = include_str!("../../CHANGELOG.md");
    let top = changelog
        .lines()
        .find_map(|l| l.strip_prefix("## "))
        .unwrap()
        .trim();
    let want = format!("hopgate {top} (");
    assert!(printed.starts_with(&want), "{printed:?} is not {want}...");
    let commit = printed[want.len()..].trim_end().trim_end_matches(')');
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{printed:?}"
    );
}
