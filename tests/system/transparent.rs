//! Transparent mode for real: iptables REDIRECT in a network namespace, SO_ORIGINAL_DST routing.
//!
//! Each scenario is a pair of tests. The outer one, which `cargo test` runs, creates a fresh
//! network namespace and re-executes this test binary inside it, running only the matching
//! `inner_*` test. That inner test does the work inside the namespace: it brings `lo` up, puts
//! the service addresses on it, starts the sidecars and adds the REDIRECT rules. When the outer
//! test ends, whatever the outcome, it deletes the namespace, and every address and rule goes
//! with it (see [`crate::netns`]).

use std::net::SocketAddr;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::netns::{self, Netns, run};
use crate::support::proxy::requests_total;
use crate::support::workload::{Reply, RouteSpec, Workload, Workloads, plain_request};

/// The destination crm is reached at, as an unmodified client would dial it.
const SERVICE: &str = "10.99.0.5:8080";
/// Also redirected to the sidecar, but no route names it.
const UNROUTED: &str = "10.99.0.6:8080";

#[test]
fn transparent_mode_routes_an_unmodified_client_by_its_original_destination() {
    run_in_netns("inner_routes_an_unmodified_client_by_its_original_destination");
}

#[test]
fn transparent_mode_refuses_an_original_destination_no_route_has_whatever_the_host() {
    run_in_netns("inner_refuses_an_original_destination_no_route_has");
}

#[test]
fn transparent_mode_routes_a_connection_made_to_the_listener_itself_by_host() {
    run_in_netns("inner_routes_a_connection_made_to_the_listener_itself_by_host");
}

#[tokio::test]
#[ignore = "run inside a network namespace by the outer test"]
async fn inner_routes_an_unmodified_client_by_its_original_destination() {
    let scene = Scene::start().await;
    let (agent, crm) = (&scene.agent, &scene.crm);

    // curl knows nothing of hopgate: it dials the service address in plain HTTP.
    let (code, out) = curl(format!("http://{SERVICE}/tickets/42")).await;
    assert_eq!(code, 0, "curl failed: {out}");
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{body}");
    let seen: Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["path"], "/tickets/42");

    // Routed: crm's app got it, under the name the client used.
    let received = crm.app.received();
    assert_eq!(received.len(), 1);
    let at_crm = &received[0].headers;
    assert_eq!(at_crm["host"], SERVICE);
    // Tokenised: a hop token the agent minted for crm, as the workload (no origin credential).
    let mut tokens = at_crm.get_all("hop-token").iter();
    let token = tokens.next().expect("a hop token reached crm");
    assert!(tokens.next().is_none(), "one hop token");
    let claims = claims(token.to_str().unwrap());
    assert_eq!(claims["iss"], agent.id);
    assert_eq!(claims["aud"], crm.id);
    assert_eq!(claims["sub"], agent.id);
    assert_eq!(
        claims["scope"], "read_ticket write_ticket",
        "the route's scopes"
    );
    // Authenticated: crm's sidecar names the agent's SVID as the mTLS client.
    let xfcc = at_crm["x-forwarded-client-cert"].to_str().unwrap();
    assert!(xfcc.starts_with(&format!("By={};", crm.id)), "{xfcc}");
    assert!(xfcc.ends_with(&format!(";URI={}", agent.id)), "{xfcc}");

    let (_, metrics) = agent.admin_get("/metrics").await;
    assert_eq!(
        requests_total(
            &metrics,
            &[("direction", "outbound"), ("decision", "allow")]
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
#[ignore = "run inside a network namespace by the outer test"]
async fn inner_refuses_an_original_destination_no_route_has() {
    let scene = Scene::start().await;
    // Every request on the connection is refused, even one whose Host names a route: the
    // original destination decides, and a header cannot steer a redirected connection.
    let replies = on_one_connection(addr(UNROUTED), &[UNROUTED, "crm.tools"]).await;
    for reply in &replies {
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.json(), json!({ "error": "no_route" }));
    }
    assert!(scene.crm.app.received().is_empty(), "nothing reached crm");

    let (_, metrics) = scene.agent.admin_get("/metrics").await;
    assert_eq!(
        requests_total(&metrics, &[("direction", "outbound"), ("decision", "deny")]),
        2.0,
        "{metrics}"
    );
}

#[tokio::test]
#[ignore = "run inside a network namespace by the outer test"]
async fn inner_routes_a_connection_made_to_the_listener_itself_by_host() {
    let scene = Scene::start().await;
    let (agent, crm) = (&scene.agent, &scene.crm);
    let reply = plain_request(agent.outbound, "GET", "crm.tools", "/direct", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = plain_request(agent.outbound, "GET", "elsewhere.example", "/", &[]).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.json(), json!({ "error": "no_route" }));

    let received = crm.app.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/direct");
    let token = received[0].headers["hop-token"].to_str().unwrap();
    assert_eq!(claims(token)["aud"], crm.id);
}

/// crm, and a client-only agent in transparent mode whose one route has crm at [`SERVICE`],
/// with [`SERVICE`] and [`UNROUTED`] redirected to the agent's outbound listener.
struct Scene {
    agent: Workload,
    crm: Workload,
    _mesh: Workloads,
}

impl Scene {
    async fn start() -> Self {
        netns::assert_inner("transparent::transparent_mode_*");
        run("ip", &["link", "set", "lo", "up"]);
        // A destination must be routable before netfilter ever sees the connection.
        for dst in [SERVICE, UNROUTED] {
            let ip = format!("{}/32", addr(dst).ip());
            run("ip", &["addr", "add", &ip, "dev", "lo"]);
        }
        let mesh = Workloads::new();
        let crm = mesh.workload("crm").start().await;
        let agent = mesh
            .workload("agent")
            .client_only()
            .outbound_yaml("  transparent: true\n")
            .route_spec(RouteSpec {
                host: "crm.tools".to_owned(),
                address: crm.inbound.unwrap().to_string(),
                identity: crm.id.clone(),
                scopes: vec!["read_ticket".to_owned(), "write_ticket".to_owned()],
                original_dst: Some(addr(SERVICE)),
            })
            .start()
            .await;
        // The listener's port is known only now: redirect the app's connections to it.
        for dst in [SERVICE, UNROUTED] {
            let dst = addr(dst);
            let rule = format!(
                "-t nat -A OUTPUT -p tcp -d {} --dport {} -j REDIRECT --to-ports {}",
                dst.ip(),
                dst.port(),
                agent.outbound.port()
            );
            run("iptables", &rule.split(' ').collect::<Vec<_>>());
        }
        Self {
            agent,
            crm,
            _mesh: mesh,
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The claims of a compact token, decoded without verification (crm's sidecar verified it).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// `curl --write-out '\n%{http_code}' url`: (exit code, body and status).
async fn curl(url: String) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(["--write-out", "\n%{http_code}", &url])
            .output()
            .expect("curl is installed (./test.sh installs it)");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    })
    .await
    .unwrap()
}

/// One `GET /` per host, in turn, over one HTTP/1.1 connection to `addr`.
async fn on_one_connection(addr: SocketAddr, hosts: &[&str]) -> Vec<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut replies = Vec::new();
    for host in hosts {
        let req = Request::get("/").header("host", *host);
        let rsp = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = rsp.status().as_u16();
        let headers = rsp.headers().clone();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        replies.push(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    replies
}

// === the outer side ===

/// Runs `transparent::<inner>` in a fresh network namespace and fails if it did not pass.
fn run_in_netns(inner: &str) {
    if netns::skip_or_check("transparent mode") {
        return;
    }
    Netns::create().run_inner(&format!("transparent::{inner}"), &[]);
}
