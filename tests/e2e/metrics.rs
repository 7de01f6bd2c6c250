//! `/metrics` as a Prometheus scrape sees it: the request counters by status code, peer and
//! destination, capped, in a stable order.

use std::net::SocketAddr;

use crate::support::client::Proto;
use crate::support::proxy::{Mesh, SERVER_ID, requests_total};
use crate::support::upstream::Upstream;

fn id(name: &str) -> String {
    format!("spiffe://example.org/ns/test/sa/{name}")
}

/// The `hopgate_requests_total` lines of a scrape, without their values.
fn request_series(metrics: &str) -> Vec<&str> {
    metrics
        .lines()
        .filter(|l| l.starts_with("hopgate_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(series, _)| series))
        .collect()
}

/// A port nothing listens on: the app of a sidecar whose every request is a 502.
/// One successful GET from each of `callers`, in order.
async fn get_as(mesh: &Mesh, inbound: SocketAddr, callers: &[&str]) {
    for name in callers {
        let reply = mesh
            .client(name, Proto::H1)
            .get(inbound, "/", &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{name}");
    }
}

fn dead_app() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn request_counters_tell_a_502_and_a_401_apart_from_a_success_by_code_and_peer() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    let broken = mesh.proxy(dead_app()).start().await;
    let caller = mesh.client("caller", Proto::H2);
    assert_eq!(
        caller.get(proxy.inbound, "/", &[]).await.unwrap().status,
        200
    );
    let forged = [("hop-token", "eyJhbGciOiJub25lIn0.e30.")];
    let reply = caller.get(proxy.inbound, "/", &forged).await.unwrap();
    assert_eq!(reply.status, 401);
    assert_eq!(
        caller.get(broken.inbound, "/", &[]).await.unwrap().status,
        502
    );

    let caller_id = id("caller");
    let (_, metrics) = proxy.admin_get("/metrics").await;
    for (decision, code) in [("allow", "200"), ("unauthenticated", "401")] {
        let series = format!(
            r#"hopgate_requests_total{{direction="inbound",decision="{decision}",code="{code}",peer="{caller_id}",dest="{SERVER_ID}"}} 1"#
        );
        assert!(metrics.lines().any(|l| l == series), "{series}:\n{metrics}");
    }
    let (_, metrics) = broken.admin_get("/metrics").await;
    assert_eq!(
        requests_total(
            &metrics,
            &[("decision", "allow"), ("code", "502"), ("peer", &caller_id)]
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        requests_total(&metrics, &[("code", "200")]),
        0.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn request_series_come_out_in_label_order_on_every_scrape() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh.proxy(app.addr).start().await;
    // Callers arrive in an order that is not their IDs' order.
    get_as(&mesh, proxy.inbound, &["zulu", "caller", "alpha"]).await;
    let (_, first) = proxy.admin_get("/metrics").await;
    let (_, second) = proxy.admin_get("/metrics").await;
    let series = request_series(&first);
    assert_eq!(series, request_series(&second));
    let peers: Vec<String> = ["alpha", "caller", "zulu"].map(id).into();
    let in_order: Vec<String> = peers
        .iter()
        .map(|peer| {
            format!(
                r#"hopgate_requests_total{{direction="inbound",decision="allow",code="200",peer="{peer}",dest="{SERVER_ID}"}}"#
            )
        })
        .collect();
    assert_eq!(series, in_order, "{first}");
    // Every family keeps its place too: the scrape's names, in order, do not move.
    let names = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(names(&first), names(&second));
}

#[tokio::test]
async fn peers_past_the_identity_cap_are_counted_as_other() {
    let app = Upstream::start().await;
    let mesh = Mesh::new();
    let proxy = mesh
        .proxy(app.addr)
        .top_yaml("telemetry: { metrics: { max_identities: 2 } }\n")
        .start()
        .await;
    // The first request's caller and the sidecar's own ID take the two places; every later
    // caller is `other`.
    get_as(&mesh, proxy.inbound, &["caller", "second", "third"]).await;
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(
        requests_total(&metrics, &[("peer", "other"), ("dest", SERVER_ID)]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        requests_total(&metrics, &[("peer", &id("caller"))]),
        1.0,
        "{metrics}"
    );
    assert!(
        !metrics.contains("sa/second") && !metrics.contains("sa/third"),
        "{metrics}"
    );
}
