//! `hopgate audit verify`: its usage errors and exits. Sealed logs themselves are verified in
//! the e2e test `audit_seal.rs` and the verifier's unit tests.

use super::*;

#[test]
fn audit_verify_without_a_file_is_a_usage_error() {
    let out = hopgate(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("<FILE>"), "{}", stderr(&out));
}

#[test]
fn audit_verify_of_an_unreadable_file_names_it_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.log");
    let out = hopgate(&["audit", "verify", path_arg(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read") && err.contains("missing.log"),
        "{err}"
    );
}

#[test]
fn audit_verify_of_a_log_without_seals_exits_1_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plain.log");
    std::fs::write(
        &log,
        "{\"target\":\"hopgate_proxy\",\"message\":\"listening\"}\n\
         {\"level\":\"INFO\",\"target\":\"hopgate::audit\",\"decision_id\":\"d\"}\n",
    )
    .unwrap();
    let out = hopgate(&["audit", "verify", path_arg(&log)]);
    assert_eq!(out.status.code(), Some(1));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim(),
        format!("{}:2: 1 record at the end is not sealed", log.display())
    );
}

#[test]
fn audit_verify_refuses_two_bundles_without_a_trust_domain_and_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("empty.log");
    std::fs::write(&log, "").unwrap();
    let out = hopgate(&[
        "audit",
        "verify",
        path_arg(&log),
        "--bundle",
        "a.pem",
        "--bundle",
        "b.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--bundle TD=PATH"),
        "{}",
        stderr(&out)
    );

    let out = hopgate(&[
        "audit",
        "verify",
        path_arg(&log),
        "--bundle",
        "bad td=x.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad td=x.pem"), "{}", stderr(&out));

    let out = hopgate(&[
        "audit",
        "verify",
        path_arg(&log),
        "--bundle",
        "example.org=/nonexistent/bundle.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/nonexistent/bundle.pem"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn check_config_accepts_sign_true_now_that_seals_are_signed() {
    let dir = config::ConfigDir::new();
    let yaml = format!("{}telemetry:\n  audit: {{ sign: true }}\n", config::VALID);
    let path = dir.write(&yaml);
    let out = hopgate(&["check-config", path_arg(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
