//! A bad new SVID or bundle file keeps the last good identity in use and is reported (log,
//! `hopgate_identity_reloads_total{result="error"}`, `/identity`); a good file afterwards is
//! picked up again. Covers both the file watcher and an explicit reload (what SIGHUP calls).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::support::client::Proto;
use crate::support::eventually::eventually;
use crate::support::pki::Ca;
use crate::support::proxy::{Mesh, SERVER_ID, TestProxy};
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_svid_file_keeps_the_last_good_identity_until_a_good_one_arrives() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let svid_dir = mesh.svid_dir();
    let good = first_cert(&svid_dir.join("svid.pem"));

    std::fs::write(svid_dir.join("svid.pem"), "this is not a certificate\n").unwrap();
    // The watcher notices on its own and reports the failure...
    wait_for_reload_error(&proxy).await;
    // ...and an explicit reload (SIGHUP's path) refuses the file too.
    let err = proxy.identity.reload().unwrap_err().to_string();
    assert!(
        err.contains("svid.pem"),
        "the error should name the file: {err}"
    );

    assert_still_serving_with(&mesh, &proxy, &good).await;
    assert_eq!(proxy.identity.snapshot().unwrap().id().as_str(), SERVER_ID);
    let identity = identity_json(&proxy).await;
    assert_eq!(identity["last_reload"]["result"], "error", "{identity}");
    let shown = identity["last_reload"]["error"].as_str().unwrap();
    assert!(shown.contains("svid.pem"), "{identity}");
    assert!(
        reload_errors(&proxy).await >= 2.0,
        "the watcher's and the explicit reload"
    );
    let (status, ready) = proxy.admin_get("/ready").await;
    assert_eq!(
        status, 200,
        "a refused rotation must not make the sidecar unready: {ready}"
    );

    // Recovery: a new, valid SVID (key first, so the pair is only ever complete with the cert).
    let next = mesh.ca.leaf(SERVER_ID).build();
    std::fs::write(svid_dir.join("svid_key.pem"), &next.key_pem).unwrap();
    std::fs::write(svid_dir.join("svid.pem"), &next.chain_pem).unwrap();
    proxy.identity.reload().unwrap();
    assert_still_serving_with(&mesh, &proxy, &next.cert_der).await;
    wait_for_last_reload_ok(&proxy).await;
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_key_does_not_match_is_refused_and_the_old_pair_kept() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let svid_dir = mesh.svid_dir();
    let good = first_cert(&svid_dir.join("svid.pem"));

    // A valid SVID of the right ID and CA, but the key on disk is the previous one's.
    let next = mesh.ca.leaf(SERVER_ID).build();
    std::fs::write(svid_dir.join("svid.pem"), &next.chain_pem).unwrap();
    let err = proxy.identity.reload().unwrap_err().to_string();
    assert!(err.contains("does not match the certificate"), "{err}");

    assert_still_serving_with(&mesh, &proxy, &good).await;
    let identity = identity_json(&proxy).await;
    assert_eq!(identity["last_reload"]["result"], "error", "{identity}");
    assert!(
        !identity["last_reload"]["error"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{identity}"
    );
    assert!(reload_errors(&proxy).await >= 1.0);

    // The matching key arrives: the watcher applies the pair without further help.
    std::fs::write(svid_dir.join("svid_key.pem"), &next.key_pem).unwrap();
    wait_for_last_reload_ok(&proxy).await;
    assert_still_serving_with(&mesh, &proxy, &next.cert_der).await;
    assert!(proxy.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_bundle_keeps_the_last_good_bundle_and_a_good_one_applies() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let bundle = mesh.dir.path().join("bundle.pem");
    let good = first_cert(&mesh.svid_dir().join("svid.pem"));

    std::fs::write(
        &bundle,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = proxy.identity.reload().unwrap_err().to_string();
    assert!(
        err.contains("bundle.pem"),
        "the error should name the file: {err}"
    );
    // Callers of the old CA are still admitted: the old bundle is still in use.
    assert_still_serving_with(&mesh, &proxy, &good).await;
    assert_eq!(
        identity_json(&proxy).await["last_reload"]["result"],
        "error"
    );

    // A new bundle holding the old root and a new CA's: callers of both are admitted.
    let new_ca = Ca::new("example.org");
    std::fs::write(
        &bundle,
        format!("{}{}", mesh.ca.bundle_pem(), new_ca.bundle_pem()),
    )
    .unwrap();
    proxy.identity.reload().unwrap();
    let leaf = new_ca
        .leaf("spiffe://example.org/ns/test/sa/new-ca-caller")
        .build();
    let client =
        crate::support::client::Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H2);
    let reply = client
        .get(proxy.inbound, "/from-new-ca", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_still_serving_with(&mesh, &proxy, &good).await;
    wait_for_last_reload_ok(&proxy).await;
    assert!(proxy.shutdown().await);
}

/// A fresh handshake is presented `leaf`, and a request over it reaches the app.
async fn assert_still_serving_with(mesh: &Mesh, proxy: &TestProxy, leaf: &CertificateDer<'_>) {
    assert_eq!(
        server_leaf(mesh, proxy.inbound).await.as_ref(),
        leaf.as_ref(),
        "unexpected server certificate"
    );
    for proto in [Proto::H1, Proto::H2] {
        let reply = mesh
            .client("caller", proto)
            .get(proxy.inbound, "/still-serving", &[])
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{proto:?}");
    }
}

async fn server_leaf(mesh: &Mesh, addr: SocketAddr) -> CertificateDer<'static> {
    let tls = mesh.client("probe", Proto::H1).connect(addr).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn first_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

async fn identity_json(proxy: &TestProxy) -> serde_json::Value {
    let (status, body) = proxy.admin_get("/identity").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn reload_errors(proxy: &TestProxy) -> f64 {
    let (_, metrics) = proxy.admin_get("/metrics").await;
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"hopgate_identity_reloads_total{result="error"}"#)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no identity reload error counter in:\n{metrics}"))
}

/// Polls (bounded) until the watcher has counted a failed reload.
async fn wait_for_reload_error(proxy: &TestProxy) {
    eventually(
        Duration::from_secs(5),
        "the watcher did not report the bad file",
        || async move { (reload_errors(proxy).await >= 1.0).then_some(()) },
    )
    .await;
}

/// Polls (bounded) until `/identity` reports the last reload as good; the watcher may still be
/// finishing a reload triggered by the test's own writes.
async fn wait_for_last_reload_ok(proxy: &TestProxy) {
    let identity = eventually(
        Duration::from_secs(5),
        "the last identity reload is still failing",
        || async move {
            Some(identity_json(proxy).await).filter(|i| i["last_reload"]["result"] == "ok")
        },
    )
    .await;
    assert!(identity["last_reload"]["error"].is_null(), "{identity}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_log_lines_carry_plain_values_not_debug_text() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let config = mesh.write_config(app.addr, "", "");
    let mut sidecar = crate::support::sidecar::Sidecar::start(&config).await;
    let next = mesh.ca.leaf(SERVER_ID).build();
    std::fs::write(mesh.svid_dir().join("svid_key.pem"), &next.key_pem).unwrap();
    std::fs::write(mesh.svid_dir().join("svid.pem"), &next.chain_pem).unwrap();
    sidecar.wait_for_log("identity reloaded").await;
    let output = sidecar.output();
    let line = output
        .lines()
        .find(|l| l.contains("identity reloaded"))
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    let not_after = record["svid.not_after"].as_str().unwrap_or_default();
    assert!(
        not_after.len() >= 20 && not_after.ends_with('Z') && not_after.as_bytes()[10] == b'T',
        "not RFC 3339: {line}"
    );
    assert!(!output.contains("SystemTime"), "{output}");
    assert!(
        !output.contains(" { "),
        "Debug text in a log line: {output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_policy_reload_is_a_warn_line_naming_the_file() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    mesh.write_policies(&[
        ("schema.cedarschema", crate::support::proxy::POLICY_SCHEMA),
        ("mesh.cedar", crate::policy::PERMIT_EXAMPLE_ORG),
    ]);
    let config = mesh.write_config(app.addr, "", crate::support::proxy::POLICY_YAML);
    let mut sidecar = crate::support::sidecar::Sidecar::start(&config).await;
    mesh.write_policies(&[("mesh.cedar", "permit (principal,")]);
    sidecar
        .wait_for_log("policy reload failed; keeping the last good policies")
        .await;
    let output = sidecar.output();
    let line = output
        .lines()
        .find(|l| l.contains("policy reload failed"))
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["level"], "WARN", "{line}");
    assert!(
        record["error"]
            .as_str()
            .unwrap_or_default()
            .contains("mesh.cedar"),
        "{line}"
    );
}
