//! The inbound data path over real mTLS: forwarding, identity and hop-by-hop headers,
//! streaming and the errors hopgate answers itself.

use std::time::Duration;

use http_body_util::BodyExt;
use rustls_pki_types::CertificateDer;

use crate::support::client::{Client, Proto};
use crate::support::proxy::{Mesh, SERVER_ID, requests_total};
use crate::support::upstream::Upstream;

fn sha256_hex(der: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn inbound_forwards_http1_and_http2_to_the_app() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    for proto in [Proto::H1, Proto::H2] {
        let reply = mesh
            .client("caller", proto)
            .get(proxy.inbound, "/hello?x=1", &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{proto:?}");
        let seen = reply.json();
        assert_eq!(seen["path"], "/hello", "{proto:?}");
        assert_eq!(seen["headers"]["host"][0], "hopgate.test", "{proto:?}");
    }
    let received = app.received();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.path == "/hello"));
    assert!(
        received
            .iter()
            .all(|r| r.headers.contains_key("x-forwarded-client-cert"))
    );
    assert!(proxy.shutdown().await);
}

#[tokio::test]
async fn inbound_refuses_a_repeated_intent_header_even_identity_only() {
    // One reader for the intent headers, on both sides, with or without policies: a value the
    // next hop could read differently from this one never reaches the app.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    for proto in [Proto::H1, Proto::H2] {
        let reply = mesh
            .client("caller", proto)
            .get(
                proxy.inbound,
                "/",
                &[("intent-purpose", "support"), ("intent-purpose", "billing")],
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 400, "{proto:?}");
    }
    assert!(app.received().is_empty(), "nothing reached the app");
}

#[tokio::test]
async fn inbound_replaces_a_spoofed_client_cert_header_with_the_verified_identity() {
    // HDR-01, HDR-02 (docs/security.md)
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let leaf = mesh.leaf("caller");
    let client = Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H1);
    let spoof = "By=spiffe://example.org/x;URI=spiffe://example.org/ns/admin/sa/root";
    let reply = client
        .get(
            proxy.inbound,
            "/",
            &[
                ("x-forwarded-client-cert", spoof),
                ("X-Forwarded-Client-Cert", spoof),
                ("x_forwarded_client_cert", spoof),
            ],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let headers = &reply.json()["headers"];
    let xfcc = headers["x-forwarded-client-cert"].as_array().unwrap();
    assert_eq!(xfcc.len(), 1, "exactly one XFCC reaches the app: {xfcc:?}");
    let expected = format!(
        "By={SERVER_ID};Hash={};URI=spiffe://example.org/ns/test/sa/caller",
        sha256_hex(&leaf.cert_der)
    );
    assert_eq!(xfcc[0], expected.as_str());
    assert!(headers.get("x_forwarded_client_cert").is_none());
}

#[tokio::test]
async fn inbound_strips_hop_by_hop_headers_both_ways() {
    // HDR-04, HDR-05 (docs/security.md)
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let reply = mesh
        .client("caller", Proto::H1)
        .get(
            proxy.inbound,
            "/",
            &[
                (
                    "connection",
                    "keep-alive, x-secret, x-forwarded-client-cert",
                ),
                ("x-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("te", "gzip"),
                ("upgrade", "h2c"),
                ("x-app", "kept"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let headers = reply.json()["headers"].clone();
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            headers.get(gone).is_none(),
            "`{gone}` reached the app: {headers}"
        );
    }
    assert_eq!(headers["x-app"][0], "kept");
    // Named in Connection by the caller, the identity header is still set exactly once.
    assert_eq!(
        headers["x-forwarded-client-cert"].as_array().unwrap().len(),
        1
    );
    // The app's own hop-by-hop field does not reach the caller.
    assert!(reply.headers.get("x-app-hop").is_none());
}

#[tokio::test]
async fn inbound_refuses_a_connection_header_that_nominates_content_length() {
    // SMG-22 (docs/security.md)
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let reply = mesh
        .client("caller", Proto::H1)
        .get(proxy.inbound, "/", &[("connection", "content-length")])
        .await
        .unwrap();
    assert_eq!(reply.status, 400);
    assert!(
        app.received().is_empty(),
        "a refused request reached the app"
    );
}

#[tokio::test]
async fn inbound_streams_the_first_sse_event_before_the_stream_ends() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = mesh
            .client("caller", proto)
            .open(proxy.inbound)
            .await
            .unwrap();
        let rsp = conn.send("/sse", &[]).await.unwrap();
        assert_eq!(rsp.status(), 200);
        let mut body = rsp.into_body();
        // The app holds the second event back until released: the first can only arrive if
        // the sidecar streams rather than buffers.
        let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("first event did not arrive while the stream was open")
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), "data: first\n\n");
        app.sse_release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest, "data: second\n\n");
    }
}

#[tokio::test]
async fn inbound_answers_502_when_the_app_is_unreachable() {
    let mesh = Mesh::new();
    let proxy = mesh.proxy(Upstream::closed_addr().await).start().await;
    let reply = mesh
        .client("caller", Proto::H2)
        .get(proxy.inbound, "/", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 502);
    assert_eq!(reply.json()["error"], "upstream_unavailable");
}

#[tokio::test]
async fn inbound_answers_504_when_the_app_is_too_slow() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .inbound_yaml("  timeouts: { app_response: 200ms }\n")
        .start()
        .await;
    let reply = mesh
        .client("caller", Proto::H1)
        .get(proxy.inbound, "/slow/3000", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 504);
    assert_eq!(reply.json()["error"], "upstream_timeout");
}

#[tokio::test]
async fn inbound_refuses_a_client_without_a_certificate() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let result = Client::without_cert(Proto::H1)
        .get(proxy.inbound, "/", &[])
        .await;
    assert!(
        result.is_err(),
        "a client without a certificate got an answer"
    );
    assert!(app.received().is_empty());
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"hopgate_tls_handshake_failures_total{reason="no_client_cert"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn inbound_serves_many_requests_on_one_keep_alive_connection() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = mesh
            .client("caller", proto)
            .open(proxy.inbound)
            .await
            .unwrap();
        for i in 0..20 {
            let reply = conn.get(&format!("/n/{i}"), &[]).await;
            assert_eq!(reply.status, 200);
        }
    }
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(
        requests_total(&metrics, &[("direction", "inbound"), ("decision", "allow")]),
        40.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn inbound_closes_a_connection_that_sends_no_head_within_the_header_timeout() {
    // DOS-01 (docs/security.md): a TCP connection that never starts TLS is closed.
    use tokio::io::AsyncReadExt;
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .inbound_yaml("  timeouts: { header_read: 300ms }\n")
        .start()
        .await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.inbound).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("the silent connection was not closed");
    assert!(matches!(read, Ok(0) | Err(_)));
}

#[tokio::test]
async fn inbound_stops_accepting_at_the_connection_cap_and_resumes_below_it() {
    // DOS-04 (docs/security.md): a global connection cap; excess clients wait in the backlog.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .inbound_yaml("  limits: { max_connections: 1 }\n")
        .start()
        .await;
    let client = mesh.client("caller", Proto::H1);
    let mut first = client.open(proxy.inbound).await.unwrap();
    assert_eq!(first.get("/", &[]).await.status, 200);
    // The second connection is not accepted while the first holds the only place...
    let second = tokio::spawn({
        let client = client.clone();
        let addr = proxy.inbound;
        async move { client.get(addr, "/second", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a connection over the cap was served"
    );
    // ...and is served as soon as the first one closes.
    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the waiting connection was not served after a place freed up")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn inbound_refuses_paths_the_app_could_read_differently() {
    // PATH-01, PATH-02 (docs/security.md): the policy reads the path's bytes, so a path an app
    // might normalise into another one never reaches it.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let client = mesh.client("caller", Proto::H2);
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/a%2Fb",
        "//admin",
        "/./admin",
        "/admin;x=1",
        "/admin%00",
        "/%61dmin",
    ] {
        let reply = client.get(proxy.inbound, path, &[]).await.unwrap();
        assert_eq!(reply.status, 400, "{path}");
    }
    assert!(app.received().is_empty(), "a refused path reached the app");
    let reply = client
        .get(proxy.inbound, "/caf%C3%A9/a%20b", &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn inbound_never_passes_an_unverified_hop_token_to_the_app() {
    // The app relays the hop token it receives, so it may only ever see one hopgate verified:
    // an unverifiable one is a 401, never forwarded.
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let reply = mesh
        .client("caller", Proto::H1)
        .get(
            proxy.inbound,
            "/",
            &[("hop-token", "eyJhbGciOiJub25lIn0.e30.")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["error"], "unauthenticated");
    assert!(app.received().is_empty());
}
