//! Bad configs: every class of error exits 78 and names its path, for `run` and `check-config`.

use super::*;

/// A folder with a dev CA, a valid SVID and a config file.
pub(super) struct ConfigDir {
    dir: tempfile::TempDir,
}

/// The body of a valid config, relative to a [`ConfigDir`].
pub(super) const VALID: &str = "\
identity:
  svid: { cert: ca/api/svid.pem, key: ca/api/svid_key.pem }
  bundles: { example.org: ca/bundle.pem }
inbound:
  listen: 127.0.0.1:0
  app: 127.0.0.1:9
admin:
  listen: 127.0.0.1:0
";

impl ConfigDir {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca);
        let out = issue(&ca, ID);
        assert!(out.status.success(), "issue failed: {}", stderr(&out));
        Self { dir }
    }

    pub(super) fn write(&self, yaml: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("hopgate.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// `hopgate run -c FILE`, killed (and the test failed) if it is still running after 20 s:
/// a config error must stop it before it serves.
fn run_config(path: &Path) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["run", "-c", path_arg(path)])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("`hopgate run` was still running 20 s after start: the config was accepted");
        }
    }
}

/// Both `check-config` and `run -c` exit 78 on `yaml`, print each of `expected` on stderr and
/// count exactly `problems` problems.
fn assert_refused(yaml: &str, expected: &[&str], problems: usize) {
    let dir = ConfigDir::new();
    let path = dir.write(yaml);
    for (command, out) in [
        ("check-config", hopgate(&["check-config", path_arg(&path)])),
        ("run -c", run_config(&path)),
    ] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{command}: {err}");
        for line in expected {
            assert!(err.contains(line), "{command}: no `{line}` in:\n{err}");
        }
        let count = format!("{}: {problems} problem(s)", path.display());
        assert!(err.contains(&count), "{command}: no `{count}` in:\n{err}");
    }
}

#[test]
fn a_valid_config_passes_check_config() {
    let dir = ConfigDir::new();
    let path = dir.write(VALID);
    let out = hopgate(&["check-config", path_arg(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}: ok", path.display())),
        "{stdout}"
    );
}

#[test]
fn an_unknown_key_is_refused_with_its_path() {
    assert_refused(
        &VALID.replace(
            "  listen: 127.0.0.1:0\n  app:",
            "  lisen: 127.0.0.1:0\n  listen: 127.0.0.1:0\n  app:",
        ),
        &["error: inbound.lisen: unknown key"],
        1,
    );
}

#[test]
fn a_duration_without_a_unit_is_refused_with_its_path() {
    assert_refused(
        &VALID.replace(
            "  app: 127.0.0.1:9\n",
            "  app: 127.0.0.1:9\n  timeouts: { idle: 10 }\n",
        ),
        &["error: inbound.timeouts.idle: `10` has no unit"],
        1,
    );
}

#[test]
fn a_malformed_spiffe_id_in_a_route_is_refused_with_its_path() {
    let yaml = format!(
        "{VALID}outbound:\n  listen: 127.0.0.1:0\n  routes:\n    - host: inference.ml\n      address: 127.0.0.1:16006\n      identity: spiffe://example.org/ns//sa/inference\n"
    );
    assert_refused(
        &yaml,
        &[
            "error: outbound.routes[0].identity: `spiffe://example.org/ns//sa/inference` is not a SPIFFE ID",
        ],
        1,
    );
}

#[test]
fn an_svid_file_that_does_not_exist_is_refused_with_its_path() {
    assert_refused(
        &VALID.replace("cert: ca/api/svid.pem", "cert: ca/api/missing.pem"),
        &["error: identity.svid.cert: cannot read", "missing.pem"],
        1,
    );
}

#[test]
fn a_bad_socket_address_is_refused_with_its_path() {
    assert_refused(
        &VALID.replace(
            "  listen: 127.0.0.1:0\n  app:",
            "  listen: 127.0.0.1:99999\n  app:",
        ),
        &["error: inbound.listen: `127.0.0.1:99999` is not a socket address"],
        1,
    );
}

#[test]
fn a_yaml_syntax_error_is_refused_with_its_line() {
    assert_refused(
        &VALID.replace(
            "  bundles: { example.org: ca/bundle.pem }",
            "  bundles: { example.org: ca/bundle.pem",
        ),
        &["error: invalid yaml", "line "],
        1,
    );
}

#[test]
fn several_errors_are_all_reported_at_once() {
    let yaml = format!(
        "{}outbound:\n  listen: 127.0.0.1:0\n  routes:\n    - host: inference.ml\n      address: 127.0.0.1:16006\n      identity: spiffe://Example.org/ns/ml/sa/inference\n",
        VALID
            .replace(
                "  listen: 127.0.0.1:0\n  app:",
                "  lisen: 127.0.0.1:0\n  listen: 127.0.0.1:99999\n  app:"
            )
            .replace(
                "  app: 127.0.0.1:9\n",
                "  app: 127.0.0.1:9\n  timeouts: { idle: 10 }\n"
            )
            .replace("cert: ca/api/svid.pem", "cert: ca/api/missing.pem")
    );
    assert_refused(
        &yaml,
        &[
            "error: inbound.lisen: unknown key",
            "error: inbound.listen: `127.0.0.1:99999`",
            "error: inbound.timeouts.idle: `10`",
            "error: identity.svid.cert: cannot read",
            "error: outbound.routes[0].identity: `spiffe://Example.org/ns/ml/sa/inference`",
        ],
        5,
    );
}

#[test]
fn a_config_file_that_does_not_exist_exits_78() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("absent.yaml");
    for out in [
        hopgate(&["check-config", path_arg(&path)]),
        run_config(&path),
    ] {
        assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
        assert!(stderr(&out).contains("absent.yaml"), "{}", stderr(&out));
    }
}

#[test]
fn a_cert_file_that_is_not_a_certificate_is_reported_under_identity_svid() {
    let dir = ConfigDir::new();
    let svid = dir.dir.path().join("ca/api/svid.pem");
    std::fs::write(&svid, "not a certificate\n").unwrap();
    let path = dir.write(VALID);

    let out = hopgate(&["check-config", path_arg(&path)]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("error: identity.svid: "), "{err}");
    assert!(
        err.contains(path_arg(&svid)),
        "the file should be named: {err}"
    );
    assert!(err.contains("1 problem(s)"), "{err}");

    // `run` finds it when loading the identity, before binding anything.
    let out = run_config(&path);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains(path_arg(&svid)), "{}", stderr(&out));
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_reported_under_identity_svid() {
    let dir = ConfigDir::new();
    let ca = dir.dir.path().join("ca");
    let other = dir.dir.path().join("other");
    let out = hopgate(&[
        "dev-ca",
        "issue",
        path_arg(&ca),
        ID,
        "--out",
        path_arg(&other),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::copy(other.join("svid_key.pem"), ca.join("api/svid_key.pem")).unwrap();
    let path = dir.write(VALID);

    let out = hopgate(&["check-config", path_arg(&path)]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("error: identity.svid: "), "{err}");
    assert!(err.contains("does not match the certificate"), "{err}");
    let out = run_config(&path);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not match the certificate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_bundle_that_is_not_a_certificate_is_reported_under_identity_bundles() {
    let dir = ConfigDir::new();
    std::fs::write(dir.dir.path().join("ca/bundle.pem"), "garbage\n").unwrap();
    let path = dir.write(VALID);
    let out = hopgate(&["check-config", path_arg(&path)]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: identity.bundles: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(run_config(&path).status.code(), Some(78));
}

#[test]
fn an_https_otlp_endpoint_without_a_ca_is_refused_rather_than_exported_to_unverified() {
    let dir = ConfigDir::new();
    let path = dir.write(&format!(
        "{VALID}telemetry:\n  otlp: {{ endpoint: \"https://collector.example:4317\", protocol: grpc }}\n"
    ));
    for (command, out) in [
        ("check-config", hopgate(&["check-config", path_arg(&path)])),
        ("run -c", run_config(&path)),
    ] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{command}: {err}");
        assert!(
            err.contains("telemetry.otlp.tls.ca: is required"),
            "{command}: {err}"
        );
    }
}

#[test]
fn a_collector_ca_file_without_a_certificate_is_refused_naming_tls_ca() {
    let dir = ConfigDir::new();
    std::fs::write(
        dir.dir.path().join("collector-ca.pem"),
        "not a certificate\n",
    )
    .unwrap();
    let path = dir.write(&format!(
        "{VALID}telemetry:\n  otlp: {{ endpoint: \"https://collector.example:4317\", tls: {{ ca: collector-ca.pem }} }}\n"
    ));
    for (command, out) in [
        ("check-config", hopgate(&["check-config", path_arg(&path)])),
        ("run -c", run_config(&path)),
    ] {
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{command}: {err}");
        assert!(
            err.contains("telemetry.otlp: tls.ca: ") && err.contains("collector-ca.pem"),
            "{command}: {err}"
        );
    }
}

#[test]
fn check_config_reads_the_otel_variables_and_names_a_bad_one() {
    let dir = ConfigDir::new();
    let path = dir.write(VALID);
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["check-config", path_arg(&path)])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("$OTEL_EXPORTER_OTLP_PROTOCOL: `http/json` is not supported"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["check-config", path_arg(&path)])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn check_config_accepts_the_spire_example_and_says_the_socket_is_checked_at_run_time() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/spire/hopgate.yaml");
    let out = hopgate(&["check-config", example]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("unix:///run/spire/sockets/agent.sock` is checked at run time, not now"),
        "{err}"
    );
}

#[test]
fn run_with_an_absent_workload_api_socket_exits_1_naming_it() {
    let dir = ConfigDir::new();
    let socket = dir.dir.path().join("absent.sock");
    let path = dir.write(&format!(
        "identity:\n  workload_api: {{ socket: 'unix://{}', initial_timeout: 1s }}\n\
         inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\nadmin:\n  listen: 127.0.0.1:0\n",
        socket.display()
    ));
    let out = run_config(&path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&socket.display().to_string()), "{err}");
}
