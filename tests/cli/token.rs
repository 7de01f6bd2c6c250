//! Origin JWKS files and `hopgate token inspect`.

use super::*;

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
            trace: None,
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
fn token_inspect_without_a_bundle_prints_the_tree_with_iat_and_exits_1_as_unverified() {
    let dir = tempfile::tempdir().unwrap();
    let token = minted_token(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(["token", "inspect", &token])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "decoded is not verified: {stdout}"
    );
    assert!(stdout.contains("├─ issued:  "), "{stdout}");
    assert!(stdout.contains("not verified"), "{stdout}");
}

#[test]
fn token_inspect_json_carries_the_claims_the_chain_and_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let token = minted_token(dir.path());
    let bundle = dir.path().join("ca/bundle.pem");
    let inspect = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
            .args(["token", "inspect", &token, "--json"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            !stdout.contains(&token),
            "the token itself is never printed"
        );
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        (out.status.code(), json)
    };
    let (code, json) = inspect(&["--bundle", bundle.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["verified"], true);
    assert!(json["error"].is_null());
    assert_eq!(json["claims"]["sub"], "spiffe://example.org/ns/a/sa/agent");
    assert_eq!(json["claims"]["scope"], "tickets.read");
    assert!(json["claims"]["iat"].as_u64().is_some());
    assert_eq!(
        json["chain"],
        serde_json::json!([
            "spiffe://example.org/ns/a/sa/agent",
            "spiffe://example.org/ns/b/sa/tool"
        ])
    );
    let (code, json) = inspect(&[]);
    assert_eq!(code, Some(1));
    assert_eq!(json["verified"], false);
    assert_eq!(json["error"], "not_verified");
}
