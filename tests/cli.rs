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
fn dev_ca_init_creates_ca_and_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/ca");
    init_ca(&dir);

    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(std::fs::read_to_string(dir.join("bundle.pem")).unwrap(), ca);
    let key = std::fs::read_to_string(dir.join("ca_key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        std::fs::read_to_string(dir.join("trust_domain")).unwrap(),
        "example.org\n"
    );
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("ca_key.pem")), 0o600);

    let Some(text) = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        path_arg(&dir.join("ca.pem")),
    ]) else {
        return;
    };
    assert_eq!(
        value_after(&text, "X509v3 Basic Constraints: critical"),
        "CA:TRUE, pathlen:0"
    );
    assert_eq!(
        value_after(&text, "X509v3 Key Usage: critical"),
        "Certificate Sign, CRL Sign"
    );
    assert_eq!(
        value_after(&text, "X509v3 Subject Alternative Name"),
        "URI:spiffe://example.org"
    );
}

#[test]
fn dev_ca_init_rejects_an_invalid_trust_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let out = hopgate(&[
        "dev-ca",
        "init",
        path_arg(tmp.path()),
        "--trust-domain",
        "Example.org",
    ]);
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("`Example.org`"), "{}", stderr(&out));
    assert!(!tmp.path().join("ca.pem").exists());
}

#[test]
fn dev_ca_init_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    let before = std::fs::read(tmp.path().join("ca_key.pem")).unwrap();

    let out = hopgate(&[
        "dev-ca",
        "init",
        path_arg(tmp.path()),
        "--trust-domain",
        "example.org",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ca_key.pem` already exists"), "{err}");
    assert_eq!(
        std::fs::read(tmp.path().join("ca_key.pem")).unwrap(),
        before
    );
}

#[test]
fn dev_ca_issue_writes_a_chain_key_and_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());

    let out = issue(tmp.path(), ID);
    assert!(out.status.success(), "issue failed: {}", stderr(&out));
    let svid_dir = tmp.path().join("api");
    let chain = std::fs::read_to_string(svid_dir.join("svid.pem")).unwrap();
    assert_eq!(chain.matches("-----BEGIN CERTIFICATE-----").count(), 1);
    let key = std::fs::read_to_string(svid_dir.join("svid_key.pem")).unwrap();
    assert!(
        key.starts_with("-----BEGIN PRIVATE KEY-----"),
        "not PKCS#8: {key}"
    );
    assert_eq!(
        std::fs::read(svid_dir.join("bundle.pem")).unwrap(),
        std::fs::read(tmp.path().join("ca.pem")).unwrap()
    );
    #[cfg(unix)]
    assert_eq!(mode(&svid_dir.join("svid_key.pem")), 0o600);

    let (svid, bundle, key) = (
        svid_dir.join("svid.pem"),
        svid_dir.join("bundle.pem"),
        svid_dir.join("svid_key.pem"),
    );
    let Some(verified) = openssl(&["verify", "-CAfile", path_arg(&bundle), path_arg(&svid)]) else {
        return;
    };
    assert!(verified.trim_end().ends_with("OK"), "{verified}");
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in", path_arg(&svid)]).unwrap();
    let key_pub = openssl(&["pkey", "-pubout", "-in", path_arg(&key)]).unwrap();
    assert_eq!(
        cert_pub, key_pub,
        "the key does not belong to the certificate"
    );
}

#[test]
fn dev_ca_issue_writes_a_strict_x509_svid() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    let out_dir = tmp.path().join("elsewhere");
    let out = hopgate(&[
        "dev-ca",
        "issue",
        path_arg(tmp.path()),
        ID,
        "--out",
        path_arg(&out_dir),
        "--ttl",
        "30m",
    ]);
    assert!(out.status.success(), "issue failed: {}", stderr(&out));

    let svid = out_dir.join("svid.pem");
    let Some(text) = openssl(&["x509", "-noout", "-text", "-in", path_arg(&svid)]) else {
        return;
    };
    // Exactly one URI SAN, equal to the ID.
    assert_eq!(text.matches("URI:").count(), 1, "{text}");
    assert_eq!(
        value_after(&text, "X509v3 Subject Alternative Name"),
        format!("URI:{ID}")
    );
    assert_eq!(
        value_after(&text, "X509v3 Key Usage: critical"),
        "Digital Signature"
    );
    assert_eq!(value_after(&text, "X509v3 Basic Constraints"), "CA:FALSE");
    assert_eq!(
        value_after(&text, "X509v3 Extended Key Usage"),
        "TLS Web Server Authentication, TLS Web Client Authentication"
    );
    assert!(text.contains("ASN1 OID: prime256v1"), "{text}");

    // --ttl 30m: still valid in 25 minutes, expired in 35.
    let checkend = |secs: &str| {
        Command::new("openssl")
            .args(["x509", "-noout", "-checkend", secs, "-in", path_arg(&svid)])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(checkend("1500"), "expires before its ttl");
    assert!(!checkend("2100"), "outlives its ttl");
}

#[test]
fn dev_ca_issue_rejects_a_foreign_trust_domain() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    let out = issue(tmp.path(), "spiffe://other.org/api");
    assert_eq!(out.status.code(), Some(78));
    let err = stderr(&out);
    assert!(
        err.contains("`spiffe://other.org/api` is not in the CA's trust domain `example.org`"),
        "{err}"
    );
    assert!(!tmp.path().join("api").exists());
}

#[test]
fn dev_ca_issue_rejects_a_root_id() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    let out = issue(tmp.path(), "spiffe://example.org");
    assert_eq!(out.status.code(), Some(78));
    assert!(stderr(&out).contains("has no path"), "{}", stderr(&out));
}

#[test]
fn dev_ca_issue_rejects_a_non_canonical_id_and_a_bad_ttl() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    let out = issue(tmp.path(), "spiffe://example.org/a/../b");
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("`spiffe://example.org/a/../b`"),
        "{}",
        stderr(&out)
    );

    let out = hopgate(&["dev-ca", "issue", path_arg(tmp.path()), ID, "--ttl", "91d"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr(&out).contains("invalid ttl `91d`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn dev_ca_issue_without_init_names_the_missing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let out = issue(tmp.path(), ID);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "no dev CA in `{}`: run `hopgate dev-ca init` first",
        tmp.path().display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

#[test]
fn dev_ca_issue_again_replaces_the_svid() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    assert!(issue(tmp.path(), ID).status.success());
    let first = std::fs::read(tmp.path().join("api/svid.pem")).unwrap();
    let out = issue(tmp.path(), ID);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        std::fs::read(tmp.path().join("api/svid.pem")).unwrap(),
        first
    );
    assert!(!tmp.path().join("api/svid.pem.tmp").exists());
}

#[test]
fn dev_ca_svid_passes_hopgate_strict_verifiers_both_ways() {
    use std::collections::BTreeMap;

    use hopgate_config::{SpiffeId, TrustDomain};
    use hopgate_proxy::tls::{SpiffeClientVerifier, SpiffeServerVerifier, Svid, TrustBundles};
    use rustls::client::danger::ServerCertVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use rustls_pki_types::{ServerName, UnixTime};

    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    let out = issue(tmp.path(), ID);
    assert!(out.status.success(), "issue failed: {}", stderr(&out));
    let dir = tmp.path().join("api");

    // Svid::load applies the leaf profile (Usage::Both) and checks the key matches the leaf.
    let svid = Svid::load(&dir.join("svid.pem"), &dir.join("svid_key.pem")).unwrap();
    assert_eq!(svid.id().as_str(), ID);
    let td = TrustDomain::parse("example.org").unwrap();
    let bundles =
        TrustBundles::load(&BTreeMap::from([(td.clone(), dir.join("bundle.pem"))])).unwrap();
    let (leaf, intermediates) = svid.chain().split_first().unwrap();

    SpiffeClientVerifier::new(&bundles, &[td])
        .unwrap()
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .unwrap();
    SpiffeServerVerifier::new(&bundles, SpiffeId::parse(ID).unwrap())
        .unwrap()
        .verify_server_cert(
            leaf,
            intermediates,
            &ServerName::try_from("api.example.org").unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap();
}

// === bad configs: every class of error exits 78 and names its path, for both commands ===

/// A folder with a dev CA, a valid SVID and a config file.
struct ConfigDir {
    dir: tempfile::TempDir,
}

/// The body of a valid config, relative to a [`ConfigDir`].
const VALID: &str = "\
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
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca);
        let out = issue(&ca, ID);
        assert!(out.status.success(), "issue failed: {}", stderr(&out));
        Self { dir }
    }

    fn write(&self, yaml: &str) -> std::path::PathBuf {
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

// === policy check | explain | test ===

const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";

/// The shipped example policies.
fn example_policies() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A policy folder with the shipped schema and `policies` as `test.cedar`.
fn policy_dir(policies: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        example_policies().join("schema.cedarschema"),
        dir.path().join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::write(dir.path().join("test.cedar"), policies).unwrap();
    dir
}

/// `policy explain` on the example policies.
fn explain(args: &[&str]) -> Output {
    let examples = example_policies();
    let mut all = vec!["policy", "explain", path_arg(&examples)];
    all.extend_from_slice(args);
    hopgate(&all)
}

/// The value of `label:` in `policy explain` output.
fn explained<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map_or_else(|| panic!("no `{label}` in:\n{out}"), str::trim)
}

#[test]
fn policy_check_accepts_the_shipped_example_policies() {
    let out = hopgate(&["policy", "check", path_arg(&example_policies())]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("policies, digest "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn policy_check_fails_on_a_syntax_error_and_names_the_file() {
    let dir = policy_dir("@id(\"half\")\npermit (principal,\n");
    let out = hopgate(&["policy", "check", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("test.cedar"), "{}", stderr(&out));
}

#[test]
fn policy_check_fails_on_a_policy_that_can_never_apply() {
    // `colour` is not a declared intent attribute: the permit can never apply.
    let dir = policy_dir(
        "@id(\"never\")\npermit (principal in Hop::TrustDomain::\"demo.local\", action, resource)\nwhen { context.intent has colour };\n",
    );
    let out = hopgate(&["policy", "check", path_arg(dir.path())]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("policy `never` can never apply"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn policy_explain_names_the_forbid_that_stops_the_agent_calling_the_crm_directly() {
    let out = explain(&["--peer", AGENT, "--dest", CRM]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "decision:"), "deny");
    assert_eq!(explained(&text, "policies:"), "deny-agent-direct-to-crm");
    assert_eq!(explained(&text, "reason:"), "forbidden");
    assert_eq!(explained(&text, "action:"), "call");
    let id = explained(&text, "decision id:");
    assert_eq!(id.len(), 36, "not a UUID: {id}");
}

#[test]
fn policy_explain_names_the_permit_that_lets_the_agent_generate_on_inference() {
    let out = explain(&["--action", "generate", "--peer", AGENT, "--dest", INFERENCE]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "decision:"), "allow");
    assert_eq!(explained(&text, "action:"), "generate");
    assert_eq!(explained(&text, "policies:"), "agent-generate-on-inference");

    // Without the action header it is the default `call`, which no permit names.
    let out = explain(&["--peer", AGENT, "--dest", INFERENCE]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(explained(&stdout(&out), "reason:"), "no_permit");
}

#[test]
fn policy_explain_reads_token_claims_for_inference_reading_a_ticket_for_alice() {
    let claims = r#"{"sub":"alice","iss":"spiffe://demo.local/ns/ml/sa/inference","scope":"tickets.read","act":{"sub":"spiffe://demo.local/ns/ml/sa/inference","act":{"sub":"spiffe://demo.local/ns/agents/sa/support-agent"}}}"#;
    let read = [
        "--action",
        "read_ticket",
        "--peer",
        INFERENCE,
        "--dest",
        CRM,
    ];
    let mut args = read.to_vec();
    args.extend(["--token-claims", claims]);
    let out = explain(&args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(explained(&text, "decision:"), "allow");
    assert_eq!(
        explained(&text, "policies:"),
        "inference-read-ticket-on-crm"
    );

    // The same hop without a token, or with a write, is denied.
    let out = explain(&read);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let mut write = vec![
        "--action",
        "write_ticket",
        "--peer",
        INFERENCE,
        "--dest",
        CRM,
    ];
    write.extend(["--token-claims", claims]);
    let out = explain(&write);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
}

#[test]
fn policy_explain_exits_78_on_bad_input() {
    for args in [
        vec!["--peer", "spiffe://demo.local/ns//sa/x", "--dest", CRM],
        vec![
            "--peer",
            AGENT,
            "--dest",
            CRM,
            "--token-claims",
            "{not json",
        ],
        vec!["--peer", AGENT, "--dest", CRM, "--header", "no colon here"],
    ] {
        let out = explain(&args);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

const CASES: &str = r#"- name: agent-generates-on-inference
  peer: spiffe://demo.local/ns/agents/sa/support-agent
  dest: spiffe://demo.local/ns/ml/sa/inference
  action: generate
  headers: { intent-purpose: support }
  expect: allow
- name: agent-cannot-call-crm-directly
  peer: spiffe://demo.local/ns/agents/sa/support-agent
  dest: spiffe://demo.local/ns/tools/sa/crm
  action: read_ticket
  expect: deny
- name: inference-reads-a-ticket-for-alice
  peer: spiffe://demo.local/ns/ml/sa/inference
  dest: spiffe://demo.local/ns/tools/sa/crm
  action: read_ticket
  method: POST
  path: /tickets/42
  token_claims:
    sub: alice
    iss: spiffe://demo.local/ns/ml/sa/inference
    scope: tickets.read
    act:
      sub: spiffe://demo.local/ns/ml/sa/inference
      act: { sub: spiffe://demo.local/ns/agents/sa/support-agent }
  expect: allow
"#;

fn policy_test(cases: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.yaml");
    std::fs::write(&file, cases).unwrap();
    hopgate(&[
        "policy",
        "test",
        path_arg(&example_policies()),
        path_arg(&file),
    ])
}

#[test]
fn policy_test_passes_when_every_case_holds() {
    let out = policy_test(CASES);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for name in [
        "agent-generates-on-inference",
        "agent-cannot-call-crm-directly",
        "inference-reads-a-ticket-for-alice",
    ] {
        assert!(text.contains(&format!("pass  {name}: ")), "{text}");
    }
    assert!(text.contains("3 passed, 0 failed"), "{text}");
}

#[test]
fn policy_test_fails_and_names_a_case_whose_expectation_is_wrong() {
    let cases = CASES.replace(
        "  action: read_ticket\n  expect: deny\n",
        "  action: read_ticket\n  expect: allow\n",
    );
    assert_ne!(cases, CASES);
    let out = policy_test(&cases);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    let row = text
        .lines()
        .find(|l| l.starts_with("FAIL  agent-cannot-call-crm-directly: "))
        .unwrap_or_else(|| panic!("no FAIL row for the case:\n{text}"));
    assert!(row.contains("deny-agent-direct-to-crm"), "{row}");
    assert!(
        text.contains("pass  agent-generates-on-inference: "),
        "{text}"
    );
    assert!(text.contains("2 passed, 1 failed"), "{text}");
}

#[test]
fn policy_test_exits_78_on_a_malformed_or_missing_cases_file() {
    for cases in [
        "- name: [unclosed\n",
        "- name: x\n  peer: a\n  colour: red\n",
    ] {
        let out = policy_test(cases);
        assert_eq!(out.status.code(), Some(78), "{cases}: {}", stdout(&out));
        assert!(stderr(&out).contains("cases.yaml"), "{}", stderr(&out));
    }
    let out = hopgate(&[
        "policy",
        "test",
        path_arg(&example_policies()),
        "/nonexistent/cases.yaml",
    ]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
}

#[test]
fn an_origin_jwks_file_without_a_usable_key_is_refused_by_run_and_check_config() {
    // A sidecar whose origin issuer has no key could never verify an end user: refuse to start,
    // naming the setting, even before an outbound side is configured.
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_hopgate");
    let run = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    let ca = dir.path().join("ca");
    assert!(
        run(&[
            "dev-ca",
            "init",
            ca.to_str().unwrap(),
            "--trust-domain",
            "example.org"
        ])
        .status
        .success()
    );
    assert!(
        run(&[
            "dev-ca",
            "issue",
            ca.to_str().unwrap(),
            "spiffe://example.org/ns/a/sa/b"
        ])
        .status
        .success()
    );
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys":[]}"#).unwrap();
    let config = dir.path().join("hopgate.yaml");
    std::fs::write(
        &config,
        "identity:\n  svid: { cert: ca/b/svid.pem, key: ca/b/svid_key.pem }\n  bundles: { example.org: ca/bundle.pem }\n\
         inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\n\
         token:\n  origin:\n    issuers: [{ issuer: https://idp.test, jwks_file: jwks.json, audience: agents }]\n\
         admin:\n  listen: 127.0.0.1:0\n",
    )
    .unwrap();
    for args in [
        vec!["check-config", config.to_str().unwrap()],
        vec!["run", "-c", config.to_str().unwrap()],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("token.origin"), "{args:?}: {stderr}");
    }
}

/// A hop token minted by a fresh dev-CA SVID for `spiffe://example.org/ns/b/sa/tool`, and the
/// folder holding the CA (its `bundle.pem` verifies the token).
fn minted_token(dir: &Path) -> String {
    use hopgate_proxy::tls::Svid;
    use hopgate_proxy::token::{MintRequest, Minter};
    let bin = env!("CARGO_BIN_EXE_hopgate");
    let ca = dir.join("ca");
    let ok = |args: &[&str]| {
        assert!(
            Command::new(bin)
                .args(args)
                .output()
                .unwrap()
                .status
                .success()
        )
    };
    ok(&[
        "dev-ca",
        "init",
        ca.to_str().unwrap(),
        "--trust-domain",
        "example.org",
    ]);
    ok(&[
        "dev-ca",
        "issue",
        ca.to_str().unwrap(),
        "spiffe://example.org/ns/a/sa/agent",
    ]);
    let svid = Svid::load(&ca.join("agent/svid.pem"), &ca.join("agent/svid_key.pem")).unwrap();
    let minter = Minter::new(&svid, std::time::Duration::from_secs(60)).unwrap();
    let aud = hopgate_config::SpiffeId::parse("spiffe://example.org/ns/b/sa/tool").unwrap();
    minter
        .mint(MintRequest {
            aud: &aud,
            parent: None,
            origin: None,
            route_scopes: &["tickets.read".to_owned()],
            tctx: None,
        })
        .unwrap()
        .compact()
        .to_owned()
}

#[test]
fn token_inspect_verifies_a_token_and_prints_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let token = minted_token(dir.path());
    let bundle = dir.path().join("ca/bundle.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args([
            "token",
            "inspect",
            &token,
            "--bundle",
            bundle.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("sub:     spiffe://example.org/ns/a/sa/agent"),
        "{stdout}"
    );
    assert!(stdout.contains("scope:   tickets.read"), "{stdout}");
    assert!(
        stdout.contains("spiffe://example.org/ns/b/sa/tool  (aud: the next hop)"),
        "{stdout}"
    );
    assert!(stdout.contains("verified"), "{stdout}");
    // The token itself is never printed.
    assert!(!stdout.contains(&token));
}

#[test]
fn token_inspect_refuses_a_token_from_another_ca_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let token = minted_token(dir.path());
    let other = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_hopgate");
    let ca = other.path().join("ca");
    assert!(
        Command::new(bin)
            .args([
                "dev-ca",
                "init",
                ca.to_str().unwrap(),
                "--trust-domain",
                "example.org"
            ])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = Command::new(bin)
        .args([
            "token",
            "inspect",
            &token,
            "--bundle",
            ca.join("bundle.pem").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid: chain"));

    // From standard input, and malformed.
    let mut child = Command::new(bin)
        .args(["token", "inspect", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"not.a.token").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid: malformed"));
}

#[test]
fn demo_runs_the_four_steps_and_exits_0_when_each_behaves_as_expected() {
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   step 1: allowed; crm saw sub=alice",
        "ok   step 2: denied with 403 by crm's policy [\"deny-agent-direct-to-crm\"]",
        "ok   step 3: rejected with 401 `binding`",
        "ok   step 4: denied with 403 by crm",
        "every step behaved as expected",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    // The span tree shows the whole chain as one trace, and no token is printed whole.
    assert!(
        stdout.contains(
            "└─ crm hopgate.inbound  GET /tickets/42 → 200  allow [inference-read-ticket-on-crm]"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("eyJ"), "a token was printed: {stdout}");
}

#[test]
fn an_https_otlp_endpoint_is_refused_rather_than_exported_to_in_the_clear() {
    // This build has no TLS to the collector: an https endpoint must not be silently downgraded.
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
            err.contains("telemetry.otlp.endpoint") && err.contains("https://"),
            "{command}: {err}"
        );
    }
}
