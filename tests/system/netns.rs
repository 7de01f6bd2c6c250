//! Network namespaces for the system tests: a fresh one per test, deleted on drop, with every
//! address and rule made in it, and a way to re-execute this test binary inside one (an
//! `inner_*` test, `#[ignore]`d so that only its outer test runs it).
//!
//! They need root, `ip` (iproute2) and `iptables`; `./test.sh` installs them. Without them the
//! outer tests fail and say what is missing. `HOPGATE_SKIP_NETNS=1` is the explicit opt-out.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Set (to `1`) by the outer test for the re-executed binary.
pub(crate) const INNER_ENV: &str = "HOPGATE_NETNS_INNER";
/// `1` skips these tests, saying so, where no network namespace can be made.
const SKIP_ENV: &str = "HOPGATE_SKIP_NETNS";
/// How long the re-executed binary may take before it is killed.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// A network namespace this test made, deleted on drop.
pub(crate) struct Netns {
    pub(crate) name: String,
}

/// Whether these tests are skipped (`HOPGATE_SKIP_NETNS=1`); says so when they are. Otherwise
/// fails the test, saying what is missing, unless this machine can run them.
pub(crate) fn skip_or_check(what: &str) -> bool {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        println!("skipped: {SKIP_ENV}=1 ({what} was not tested)");
        return true;
    }
    let missing = missing_prerequisites();
    assert!(
        missing.is_empty(),
        "{what} needs a network namespace and iptables, but this machine lacks: {}. Run as \
         root with iproute2 and iptables installed (./test.sh installs them), or set \
         {SKIP_ENV}=1 to skip these tests explicitly",
        missing.join("; ")
    );
    false
}

/// Fails unless this is the re-executed binary inside a namespace.
pub(crate) fn assert_inner(outer: &str) {
    assert_eq!(
        std::env::var(INNER_ENV).as_deref(),
        Ok("1"),
        "this test runs inside a network namespace, started by its outer test (`{outer}`); run \
         that one instead"
    );
}

/// Runs a command that must succeed; its stdout.
pub(crate) fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What this machine lacks to run the namespace tests, each said plainly.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => missing.push(format!("root (effective uid is {uid})")),
        None => missing.push("root (no effective uid in /proc/self/status)".to_owned()),
    }
    for (program, arg, what) in [
        ("ip", "-V", "`ip` (package iproute2)"),
        ("iptables", "--version", "`iptables` (package iptables)"),
    ] {
        let runs = Command::new(program)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !runs {
            missing.push(format!("{what} on PATH"));
        }
    }
    missing
}

/// The second field of the `Uid:` line (real, effective, saved, filesystem).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

// === impl Netns ===

impl Netns {
    pub(crate) fn create() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("hopgate-e2e-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`ip netns add {name}` failed (it needs CAP_SYS_ADMIN and CAP_NET_ADMIN; set \
             {SKIP_ENV}=1 to skip): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }

    /// `program args` inside the namespace.
    pub(crate) fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `program args` inside the namespace, which must succeed; its stdout.
    pub(crate) fn exec_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.exec(program, args);
        assert!(
            out.status.success(),
            "`{program} {}` in `{}` failed ({}): {}{}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the test `path` (`transparent::inner_...`) of this test binary inside the namespace,
    /// with `envs` set, and fails unless it ran and passed. Kills it at [`CHILD_DEADLINE`], so a
    /// hang fails the test instead of stalling the run.
    pub(crate) fn run_inner(&self, path: &str, envs: &[(&str, &str)]) {
        let out = self.run_test(path, envs);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}{stderr}");
        assert!(
            out.status.success(),
            "`{path}` failed in network namespace `{}` ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            self.name,
            out.status
        );
        // A filter matching no test passes too: make sure this one ran.
        assert!(
            stdout.contains("test result: ok. 1 passed"),
            "`{path}` did not run:\n{stdout}"
        );
    }

    fn run_test(&self, path: &str, envs: &[(&str, &str)]) -> Output {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(std::env::current_exe().unwrap())
            .arg(path)
            .args(["--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(INNER_ENV, "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        match rx.recv_timeout(CHILD_DEADLINE) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                // `ip netns exec` execs the command: this pid is the test binary itself.
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                let out = rx.recv().unwrap().unwrap();
                panic!(
                    "`{path}` did not finish within {CHILD_DEADLINE:?}:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|status| status.success());
        if !deleted {
            eprintln!("could not delete network namespace `{}`", self.name);
        }
    }
}
