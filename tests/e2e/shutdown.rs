//! The real binary's signal handling: SIGTERM and SIGINT stop accepting, let in-flight requests
//! finish within `shutdown_grace` and exit 0; SIGHUP re-reads the SVID and bundles.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::client::Proto;
use crate::support::eventually::eventually;
use crate::support::pki::Ca;
use crate::support::proxy::{Mesh, admin_get};
use crate::support::sidecar::Sidecar;
use crate::support::upstream::Upstream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let config = mesh.write_config(app.addr, "", "shutdown_grace: 10s\n");
    let mut sidecar = Sidecar::start(&config).await;
    let client = mesh.client("caller", Proto::H1);

    let slow = {
        let client = client.clone();
        let inbound = sidecar.inbound;
        tokio::spawn(async move { client.get(inbound, "/slow/1500", &[]).await })
    };
    wait_until_received(&app, "/slow/1500").await;
    let signaled = Instant::now();
    sidecar.signal("TERM");
    sidecar.wait_for_log("shutting down").await;

    // The listener closes at once while the slow request is still being served.
    wait_until_refused(sidecar.inbound).await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before the listener closed"
    );

    let reply = slow
        .await
        .unwrap()
        .expect("the in-flight request must complete");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"slow done");
    let status = sidecar.wait_for_exit(Duration::from_secs(10)).await;
    eprintln!("exited {:?} after SIGTERM", signaled.elapsed());
    assert_eq!(status.code(), Some(0), "{}", sidecar.output());
    assert!(sidecar.logged("drained"), "{}", sidecar.output());
    assert!(
        client.get(sidecar.inbound, "/after", &[]).await.is_err(),
        "a connection after the drain was served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_and_exits_zero_too() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let config = mesh.write_config(app.addr, "", "shutdown_grace: 10s\n");
    let mut sidecar = Sidecar::start(&config).await;
    let client = mesh.client("caller", Proto::H2);
    let reply = client.get(sidecar.inbound, "/before", &[]).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    let slow = {
        let client = client.clone();
        let inbound = sidecar.inbound;
        tokio::spawn(async move { client.get(inbound, "/slow/500", &[]).await })
    };
    wait_until_received(&app, "/slow/500").await;
    sidecar.signal("INT");
    let reply = slow
        .await
        .unwrap()
        .expect("the in-flight HTTP/2 request must complete");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], b"slow done");
    let status = sidecar.wait_for_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", sidecar.output());
    assert!(
        sidecar.logged(r#""signal":"SIGINT""#),
        "{}",
        sidecar.output()
    );
    assert!(client.get(sidecar.inbound, "/after", &[]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_503_draining_while_requests_drain() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let config = mesh.write_config(app.addr, "", "shutdown_grace: 10s\n");
    let mut sidecar = Sidecar::start(&config).await;
    let (status, body) = admin_get(sidecar.admin, "/ready").await;
    assert_eq!(status, 200, "{body}");

    let client = mesh.client("caller", Proto::H1);
    let slow = {
        let inbound = sidecar.inbound;
        tokio::spawn(async move { client.get(inbound, "/slow/3000", &[]).await })
    };
    wait_until_received(&app, "/slow/3000").await;
    sidecar.signal("TERM");
    sidecar.wait_for_log("shutting down").await;

    // A probe arriving during the drain (a kubelet opens a new connection per probe) must be
    // told the sidecar is draining, so the endpoint is removed before in-flight work ends. The
    // "shutting down" line is logged just before the drain begins, hence the (bounded) poll.
    let admin = sidecar.admin;
    eventually(
        Duration::from_secs(2),
        "/ready still 200 2 s into the drain",
        || async move {
            let probe = tokio::net::TcpStream::connect(admin).await;
            assert!(
                probe.is_ok(),
                "the admin listener closed during the drain: /ready cannot answer 503 ({:?})",
                probe.err()
            );
            drop(probe);
            let (status, body) = admin_get(admin, "/ready").await;
            if status != 503 {
                assert_eq!(status, 200, "{body}");
                return None;
            }
            let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(ready["reason"], "draining", "{body}");
            Some(())
        },
    )
    .await;
    assert!(
        !slow.is_finished(),
        "the slow request ended before /ready turned 503"
    );

    let reply = slow.await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        sidecar.wait_for_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_identity_files_of_the_running_binary() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let config = mesh.write_config(app.addr, "", "shutdown_grace: 10s\n");
    let mut sidecar = Sidecar::start(&config).await;
    assert_eq!(reloads(sidecar.admin, "ok").await, 0.0);

    // Unchanged files: only SIGHUP can cause this reload.
    sidecar.signal("HUP");
    sidecar.wait_for_log("SIGHUP: reloading identity").await;
    sidecar.wait_for_log("identity reloaded").await;
    // The line is logged just before the counter moves, hence the (bounded) poll.
    let admin = sidecar.admin;
    eventually(
        Duration::from_secs(2),
        "the SIGHUP reload was not counted",
        || async move { (reloads(admin, "ok").await >= 1.0).then_some(()) },
    )
    .await;
    assert_eq!(reloads(sidecar.admin, "ok").await, 1.0);
    assert_eq!(reloads(sidecar.admin, "error").await, 0.0);

    // A bundle that adds a second CA: its callers are admitted once reloaded.
    let new_ca = Ca::new("example.org");
    let bundle = mesh.dir.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        format!("{}{}", mesh.ca.bundle_pem(), new_ca.bundle_pem()),
    )
    .unwrap();
    sidecar.signal("HUP");
    let leaf = new_ca
        .leaf("spiffe://example.org/ns/test/sa/new-ca-caller")
        .build();
    let client =
        crate::support::client::Client::with_svid(&leaf.chain_pem, &leaf.key_pem, Proto::H1);
    // Before the reload the handshake is refused; that is the point of the poll.
    let reply = eventually(
        Duration::from_secs(5),
        format_args!("the new bundle was not applied: {}", sidecar.printed()),
        || async { client.get(sidecar.inbound, "/new-ca", &[]).await.ok() },
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let old = mesh.client("old-ca-caller", Proto::H1);
    assert_eq!(
        old.get(sidecar.inbound, "/old-ca", &[])
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );

    sidecar.signal("TERM");
    assert_eq!(
        sidecar.wait_for_exit(Duration::from_secs(10)).await.code(),
        Some(0)
    );
}

// === the binary as a child process ===

/// Waits (bounded) until the app has received a request for `path`.
async fn wait_until_received(app: &Upstream, path: &str) {
    eventually(
        Duration::from_secs(5),
        format_args!("the app never received {path}"),
        || async { app.received().iter().any(|r| r.path == path).then_some(()) },
    )
    .await;
}

/// Waits (bounded) until a TCP connect to `addr` is refused.
async fn wait_until_refused(addr: SocketAddr) {
    eventually(
        Duration::from_secs(2),
        "the listener still accepts",
        || async move {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

/// `hopgate_identity_reloads_total{result=...}` from the binary's `/metrics`.
async fn reloads(admin: SocketAddr, result: &str) -> f64 {
    let (_, metrics) = admin_get(admin, "/metrics").await;
    let sample = format!(r#"hopgate_identity_reloads_total{{result="{result}"}}"#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(sample.as_str())?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{metrics}"))
}
