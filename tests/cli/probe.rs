//! `hopgate probe live|ready`: against a running sidecar, a closed port, a server answering 503
//! and one that never answers.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::config::{ConfigDir, VALID};
use super::*;

/// `hopgate run` on [`VALID`], killed when dropped.
struct Running {
    child: Child,
    admin: SocketAddr,
    _dir: ConfigDir,
}

impl Running {
    /// Starts the sidecar and waits (at most 20 s) for its admin listener's `listening` line.
    fn start() -> Self {
        let dir = ConfigDir::new();
        let config = dir.write(VALID);
        let mut child = Command::new(env!("CARGO_BIN_EXE_hopgate"))
            .args(["run", "-c", path_arg(&config)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let field = |name| json.get(name).and_then(serde_json::Value::as_str);
                if field("message") == Some("listening") && field("listener") == Some("admin") {
                    let _ = tx.send(field("addr").unwrap().parse::<SocketAddr>());
                }
                // Keep reading, so the sidecar never blocks on a full pipe.
            }
        });
        let admin = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no admin listener within 20 s"))
            .unwrap();
        Self {
            child,
            admin,
            _dir: dir,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn probe(check: &str, admin: SocketAddr, extra: &[&str]) -> Output {
    let admin = admin.to_string();
    let mut args = vec!["probe", check, "--admin", &admin];
    args.extend_from_slice(extra);
    hopgate(&args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A one-connection server: reads the request head, answers `response`, and hands the request
/// back.
fn answer_once(response: String) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut byte = [0_u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            request.push(byte[0]);
        }
        stream.write_all(response.as_bytes()).unwrap();
        let _ = tx.send(String::from_utf8(request).unwrap());
    });
    (addr, rx)
}

#[test]
fn probe_live_and_ready_exit_0_against_a_running_sidecar() {
    let sidecar = Running::start();
    let live = probe("live", sidecar.admin, &[]);
    assert_eq!(live.status.code(), Some(0), "{}", stderr(&live));
    assert_eq!(stdout(&live), "HTTP/1.1 200 OK\n{\"live\":true}\n");
    let ready = probe("ready", sidecar.admin, &[]);
    assert_eq!(ready.status.code(), Some(0), "{}", stderr(&ready));
    let printed = stdout(&ready);
    assert!(printed.starts_with("HTTP/1.1 200 OK\n"), "{printed}");
    assert!(printed.contains("\"ready\":true"), "{printed}");
}

#[test]
fn probe_against_a_closed_port_exits_1_saying_it_cannot_connect() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = probe("live", closed, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot connect to the admin listener at `{closed}`"
        )),
        "{err}"
    );
}

#[test]
fn probe_ready_answered_503_exits_1_printing_the_status_and_the_reason() {
    let body = r#"{"ready":false,"reason":"draining"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (addr, request) = answer_once(response);
    let out = probe("ready", addr, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("HTTP/1.1 503 Service Unavailable\n{body}\n")
    );
    let request = request.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        request.starts_with("GET /ready HTTP/1.1\r\n"),
        "{request:?}"
    );
}

#[test]
fn probe_against_a_server_that_never_answers_exits_1_after_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let out = probe("live", addr, &["--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no response from `{addr}` within 200ms")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    drop(listener);
}

#[test]
fn probe_refuses_a_bad_admin_address_or_timeout_naming_it() {
    let out = hopgate(&["probe", "ready", "--admin", "localhost:15000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--admin `localhost:15000`"),
        "{}",
        stderr(&out)
    );
    let out = hopgate(&["probe", "ready", "--timeout", "1m"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--timeout `1m`"), "{}", stderr(&out));
}
