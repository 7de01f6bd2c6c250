//! Running SPIRE's processes and commands, and saying why a wait failed.

use std::cell::RefCell;
use std::fmt;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::STARTUP;
use crate::support::eventually::eventually;

/// How many lines of a log a failure message shows.
const LOG_TAIL: usize = 40;

/// Waits until `<bin> healthcheck -socketPath <socket>` passes; fails at once, with the log,
/// if the process exits.
pub(super) async fn wait_healthy(
    child: &mut Child,
    bin: &Path,
    socket: &str,
    log: &Path,
    name: &str,
) {
    let last = RefCell::new(String::from("no healthcheck yet"));
    let failure = Failure {
        what: format!("{name} did not become healthy"),
        last: &last,
        log: log.to_owned(),
    };
    let last = &last;
    eventually(STARTUP, failure, || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{name} exited ({status})\n--- log ---\n{}", tail(log));
        }
        let mut check = Command::new(bin);
        check.args(["healthcheck", "-socketPath", socket]);
        async move {
            let out = run(&mut check).await;
            if out.status.success() {
                return Some(());
            }
            *last.borrow_mut() = output_text(&out);
            None
        }
    })
    .await;
}

/// What a bounded wait reports when it gives up: rendered only then, so it reads the last
/// attempt and the log as they are at that moment.
pub(super) struct Failure<'a> {
    pub(super) what: String,
    pub(super) last: &'a RefCell<String>,
    pub(super) log: PathBuf,
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; last attempt: {}\n--- {} ---\n{}",
            self.what,
            self.last.borrow().trim(),
            self.log.display(),
            tail(&self.log)
        )
    }
}

/// Runs `command` to completion off the async runtime's thread, capturing its output.
pub(super) async fn run(command: &mut Command) -> Output {
    let mut command = std::mem::replace(command, Command::new("true"));
    command.stdin(Stdio::null());
    let shown = format!("{command:?}");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

/// Starts `bin args`, its stdout and stderr appended to `log`.
pub(super) fn spawn_logged(bin: &Path, args: &[&str], log: &Path) -> Child {
    let out = File::options().create(true).append(true).open(log).unwrap();
    let err = out.try_clone().unwrap();
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

/// Two distinct loopback ports that were free a moment ago. SPIRE takes port numbers, not
/// sockets, and does not report the port it bound for port 0: the listeners are closed just
/// before SPIRE binds them.
pub(super) fn free_ports() -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    [
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    ]
}

/// `d` as a Go duration (`time.ParseDuration`): whole milliseconds.
pub(super) fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

pub(super) fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

/// A command's stdout and stderr, for a failure message.
pub(super) fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The last [`LOG_TAIL`] lines of the file at `path`.
pub(super) fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}
