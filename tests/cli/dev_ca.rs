//! `hopgate dev-ca init` and `issue`: the files, the certificate profile, refusals.

use super::*;

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
fn dev_ca_issue_refuses_to_replace_an_svid_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    assert!(issue(tmp.path(), ID).status.success());
    let first = std::fs::read(tmp.path().join("api/svid.pem")).unwrap();
    let first_key = std::fs::read(tmp.path().join("api/svid_key.pem")).unwrap();
    let out = issue(tmp.path(), ID);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("svid.pem") && err.contains("--force"), "{err}");
    assert_eq!(
        std::fs::read(tmp.path().join("api/svid.pem")).unwrap(),
        first
    );
    assert_eq!(
        std::fs::read(tmp.path().join("api/svid_key.pem")).unwrap(),
        first_key
    );
}

#[test]
fn dev_ca_issue_with_force_replaces_the_svid() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    assert!(issue(tmp.path(), ID).status.success());
    let first = std::fs::read(tmp.path().join("api/svid.pem")).unwrap();
    let out = hopgate(&["dev-ca", "issue", path_arg(tmp.path()), ID, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(
        std::fs::read(tmp.path().join("api/svid.pem")).unwrap(),
        first
    );
    assert!(!tmp.path().join("api/svid.pem.tmp").exists());
}

#[test]
fn dev_ca_issue_with_dns_puts_the_names_beside_the_spiffe_id() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    let out = hopgate(&[
        "dev-ca",
        "issue",
        path_arg(tmp.path()),
        ID,
        "--dns",
        "localhost",
        "--dns",
        "API.Example.org.",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svid = tmp.path().join("api/svid.pem");
    let Some(text) = openssl(&["x509", "-noout", "-text", "-in", path_arg(&svid)]) else {
        return;
    };
    assert_eq!(
        value_after(&text, "X509v3 Subject Alternative Name"),
        format!("URI:{ID}, DNS:localhost, DNS:api.example.org")
    );
}

#[test]
fn dev_ca_issue_refuses_a_bad_dns_name_with_78() {
    let tmp = tempfile::tempdir().unwrap();
    init_ca(tmp.path());
    for bad in [
        "",
        "*.example.org",
        "a..b",
        "-a.example",
        "10.0.0.1",
        "exa mple",
    ] {
        let arg = format!("--dns={bad}");
        let out = hopgate(&["dev-ca", "issue", path_arg(tmp.path()), ID, &arg]);
        assert_eq!(out.status.code(), Some(78), "{bad:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--dns"), "{}", stderr(&out));
        assert!(
            !tmp.path().join("api/svid.pem").exists(),
            "{bad:?} wrote files"
        );
    }
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
