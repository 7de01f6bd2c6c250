//! The real `hopgate` binary as a child process, for tests of what only a process shows:
//! signals, exit codes and the lines it prints. Its config uses port 0; the ports are read from
//! the `"message":"listening"` log lines. Signals go through the `kill` command (the workspace
//! forbids `unsafe`, which `libc::kill` would need).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::support::eventually::eventually;

/// A running `hopgate run` process.
pub(crate) struct Sidecar {
    child: Child,
    pub(crate) inbound: SocketAddr,
    /// The outbound listener, when the config has an `outbound` section.
    pub(crate) outbound: Option<SocketAddr>,
    pub(crate) admin: SocketAddr,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    /// The stdout lines alone, in the order written.
    stdout: Arc<Mutex<Vec<String>>>,
    /// While set, nobody reads the binary's stdout: a stalled log shipper.
    stdout_paused: Arc<AtomicBool>,
}

impl Sidecar {
    /// Starts the binary and waits (bounded) for its listeners to be logged.
    pub(crate) async fn start(config: &Path) -> Self {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_hopgate")), config).await
    }

    /// [`Sidecar::start`] as user and group `uid` (through `setpriv`; the caller is root), so a
    /// Workload API server attesting by uid tells the sidecars apart.
    #[allow(
        dead_code,
        reason = "the system tests' SPIRE sidecars use it; tests/e2e does not"
    )]
    pub(crate) async fn start_as(uid: u32, config: &Path) -> Self {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(env!("CARGO_BIN_EXE_hopgate"));
        Self::spawn(command, config).await
    }

    /// [`Sidecar::start`] through a wrapper: `command` ends in the binary's path, after what
    /// runs it (`ip netns exec NS setpriv ...`). `run -c CONFIG` is appended.
    #[allow(
        dead_code,
        reason = "the system tests' mesh uses it; tests/e2e does not"
    )]
    pub(crate) async fn start_with(command: Command, config: &Path) -> Self {
        Self::spawn(command, config).await
    }

    async fn spawn(mut command: Command, config: &Path) -> Self {
        let mut child = command
            .args(["run", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut lines) = mpsc::unbounded_channel();
        let stdout_paused = Arc::new(AtomicBool::new(false));
        let never_paused = Arc::new(AtomicBool::new(false));
        for (stream, paused, own) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                Arc::clone(&stdout_paused),
                Some(Arc::clone(&stdout)),
            ),
            (Box::new(child.stderr.take().unwrap()), never_paused, None),
        ] {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stream).lines();
                loop {
                    while paused.load(Ordering::Relaxed) {
                        #[allow(
                            clippy::disallowed_methods,
                            reason = "a reader thread of its own, not a runtime worker"
                        )]
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let Some(Ok(line)) = lines.next() else { return };
                    log.lock().unwrap().push(line.clone());
                    if let Some(own) = &own {
                        own.lock().unwrap().push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let (mut inbound, mut outbound, mut admin) = (None, None, None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // The admin listener is logged last, after inbound and outbound.
        while admin.is_none() {
            let line = tokio::time::timeout_at(deadline, lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no listening lines in 20 s: {:#?}", log.lock().unwrap())
                })
                .unwrap_or_else(|| panic!("the binary exited early: {:#?}", log.lock().unwrap()));
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["message"] != "listening" {
                continue;
            }
            let addr: SocketAddr = json["addr"].as_str().unwrap().parse().unwrap();
            match json["listener"].as_str() {
                Some("inbound") => inbound = Some(addr),
                Some("outbound") => outbound = Some(addr),
                Some("admin") => admin = Some(addr),
                other => panic!("unknown listener {other:?}"),
            }
        }
        let inbound = inbound
            .unwrap_or_else(|| panic!("no inbound listener logged: {:#?}", log.lock().unwrap()));
        Self {
            child,
            inbound,
            outbound,
            admin: admin.unwrap(),
            lines,
            log,
            stdout,
            stdout_paused,
        }
    }

    /// Stops reading the binary's stdout, so its pipe fills (lines already buffered by the
    /// reader are still delivered).
    pub(crate) fn pause_stdout(&self) {
        self.stdout_paused.store(true, Ordering::Relaxed);
    }

    /// Reads stdout again.
    pub(crate) fn resume_stdout(&self) {
        self.stdout_paused.store(false, Ordering::Relaxed);
    }

    /// Sends `SIG<name>` with the `kill` command.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits (bounded) for a log line containing `needle` from now on.
    pub(crate) async fn wait_for_log(&mut self, needle: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return,
                Ok(Some(_)) => {}
                Ok(None) => panic!("output ended before `{needle}`: {}", self.output()),
                Err(_) => panic!("no `{needle}` in 10 s: {}", self.output()),
            }
        }
    }

    pub(crate) fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Every `hopgate::audit` line so far, parsed.
    pub(crate) fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["target"] == "hopgate::audit")
            .collect()
    }

    /// Waits (bounded) for the first audit line that `matches`.
    pub(crate) async fn wait_for_audit(
        &self,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(
            Duration::from_secs(5),
            format_args!("no such audit line: {}", self.printed()),
            || async { self.audit_lines().into_iter().find(|r| matches(r)) },
        )
        .await
    }

    /// What the binary wrote to stdout so far, each line with its newline, as a file holds it.
    pub(crate) fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// Everything the binary printed so far, for failure messages.
    pub(crate) fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// What the binary has printed, read only when rendered: for `eventually`'s message.
    pub(crate) fn printed(&self) -> Printed<'_> {
        Printed(&self.log)
    }

    /// Waits (bounded) for the process to exit.
    pub(crate) async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually(
            limit,
            format_args!("still running after the signal: {}", Printed(&self.log)),
            || std::future::ready(child.try_wait().unwrap()),
        )
        .await
    }
}

/// The binary's output so far, joined when displayed.
pub(crate) struct Printed<'a>(&'a Mutex<Vec<String>>);

impl std::fmt::Display for Printed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.lock().unwrap().join("\n"))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // A failed test must not leave its sidecar running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
