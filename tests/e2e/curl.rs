//! A real, independent client: curl with a client SVID, over HTTP/1.1 and HTTP/2.

use std::process::Command;

use crate::support::proxy::Mesh;
use crate::support::upstream::Upstream;

/// Runs curl against the sidecar and returns (exit code, stdout).
async fn curl(args: Vec<String>) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl is installed (.ci/run installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn curl_with_a_client_svid_gets_through_over_http1_and_http2() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = mesh.leaf("curl").write(dir.path());
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, out) = curl(vec![
            flag.into(),
            // An SVID carries a SPIFFE ID, not a DNS name: curl cannot check the server by
            // name. What is under test is the client side, which hopgate enforces.
            "--insecure".into(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--write-out".into(),
            "\n%{http_code} %{http_version}".into(),
            format!("https://{}/via-curl", proxy.inbound),
        ])
        .await;
        assert_eq!(code, 0, "curl {flag} failed: {out}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, format!("200 {version}"), "curl {flag}");
        let seen: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(seen["path"], "/via-curl");
        let xfcc = seen["headers"]["x-forwarded-client-cert"][0]
            .as_str()
            .unwrap();
        assert!(
            xfcc.ends_with(";URI=spiffe://example.org/ns/test/sa/curl"),
            "{xfcc}"
        );
    }
}

#[tokio::test]
async fn curl_without_a_client_certificate_is_refused() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    for flag in ["--http1.1", "--http2"] {
        let (code, _) = curl(vec![
            flag.into(),
            "--insecure".into(),
            format!("https://{}/", proxy.inbound),
        ])
        .await;
        assert_ne!(code, 0, "curl {flag} without a certificate got through");
    }
    assert!(app.received().is_empty());
}

#[tokio::test]
async fn curl_with_a_certificate_from_another_ca_is_refused() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let stranger = Mesh::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = stranger.leaf("impostor").write(dir.path());
    let (code, _) = curl(vec![
        "--insecure".into(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
        format!("https://{}/", proxy.inbound),
    ])
    .await;
    assert_ne!(code, 0, "a certificate from an untrusted root got through");
    assert!(app.received().is_empty());
}
