//! Stack tests: the whole outbound side (routing, the credential swap, the egress decision,
//! the hop runner's error → response map) over an in-memory pipe from the "app"
//! (`tokio::io::duplex`), with no socket between the app and the sidecar.

use std::sync::Arc;

use bytes::Bytes;
use hopgate_config::{InboundMode, InboundTimeouts};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::route::Target;
use super::{Delegator, OutboundSide, destinations, serve_io};
use crate::connection::ConnectionServer;
use crate::hop::test_support::{Cedar, Fixture};
use crate::identity::Derived;
use crate::listener::HeadWatch;
use crate::shutdown;
use crate::telemetry::audit::AuditSink;
use crate::token::OriginVerifier;

const AGENT: &str = "spiffe://example.org/ns/agents/sa/agent";
const INFERENCE: &str = "spiffe://example.org/ns/ml/sa/inference";

/// An outbound side for `AGENT` with one route, `inference.ml`, to a loopback port nobody
/// listens on; with `egress` as the only Cedar file of an egress check when given.
struct Stack {
    side: Arc<OutboundSide>,
    server: ConnectionServer,
    /// Kept so the connections are not drained as they start.
    drain: (shutdown::Trigger, shutdown::Watch),
    /// Kept so the config folder outlives the side.
    _fx: Fixture,
}

impl Stack {
    fn new(egress: Option<&str>) -> Self {
        let cedar = egress.map(|text| Cedar {
            file: "egress.cedar",
            text,
            section: "  outbound: true\n",
        });
        let fx = Fixture::new(
            AGENT,
            &format!(
                "outbound:\n  listen: 127.0.0.1:0\n  routes:\n    - host: inference.ml\n      address: 127.0.0.1:9\n      identity: {INFERENCE}\n"
            ),
            cedar,
        );
        let outbound = fx.config.outbound().unwrap();
        let identity = fx.identity(Derived {
            allowed: fx.config.identity().trust_domains(),
            limits: fx.limits(),
            mint_ttl: Some(fx.config.token().ttl()),
            routes: outbound
                .routes()
                .iter()
                .map(|r| r.identity().clone())
                .collect(),
        });
        let (timeouts, limits) = (InboundTimeouts::default(), Default::default());
        let token = fx.config.token();
        let side = Arc::new(OutboundSide {
            shared: fx.shared(InboundMode::Enforce, &limits, &identity),
            identity,
            routes: destinations(outbound, &timeouts),
            delegator: Delegator::new(
                token,
                OriginVerifier::load(token.origin_issuers(), token.leeway()).unwrap(),
                Arc::new(crate::token::RelayCache::new(16, token.leeway())),
                Arc::clone(&fx.metrics),
            ),
        });
        Self {
            side,
            server: ConnectionServer::new(&timeouts, &limits),
            drain: shutdown::channel(),
            _fx: fx,
        }
    }

    /// Sends `req` as the app over a fresh in-memory connection: the status and body.
    async fn send(&self, req: Request<Empty<Bytes>>) -> (StatusCode, String) {
        let (app_io, sidecar_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_io(
            Arc::clone(&self.side),
            self.server.clone(),
            sidecar_io,
            Target::ByAuthority,
            None,
            self.drain.1.clone(),
            HeadWatch::default(),
        ));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(app_io))
            .await
            .unwrap();
        tokio::spawn(connection);
        let rsp = sender.send_request(req).await.unwrap();
        let status = rsp.status();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn audit_records(&self) -> Vec<String> {
        let AuditSink::Memory(records) = &self.side.shared.telemetry.audit else {
            panic!("a memory sink");
        };
        records.lock().unwrap().clone()
    }
}

fn request(host: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut req = Request::get("/v1/generate").header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Empty::new()).unwrap()
}

#[tokio::test]
async fn a_stack_over_a_pipe_refuses_a_host_no_route_matches() {
    let stack = Stack::new(None);
    let (status, body) = stack.send(request("crm.tools", &[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("no_route"), "{body}");
}

#[tokio::test]
async fn a_stack_over_a_pipe_refuses_a_connect_tunnel() {
    let stack = Stack::new(None);
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("inference.ml:443")
        .body(Empty::new())
        .unwrap();
    let (status, body) = stack.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_stack_over_a_pipe_refuses_a_relayed_token_its_inbound_side_never_accepted() {
    // ACT-14, CHA-04: a parent that fails is a 401, never dropped in favour of a fresh chain;
    // one this sidecar's inbound side never accepted fails as `relay`, whatever it holds.
    let stack = Stack::new(None);
    let (status, body) = stack
        .send(request("inference.ml", &[("hop-token", "not.a.token")]))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains(r#""reason":"relay""#), "{body}");
}

#[tokio::test]
async fn a_stack_over_a_pipe_answers_an_egress_deny_with_403_and_records_it_once() {
    let forbid = r#"@id("no-egress") forbid (principal, action, resource);"#;
    let stack = Stack::new(Some(forbid));
    let (status, body) = stack.send(request("inference.ml", &[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let records = stack.audit_records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].contains("no-egress"), "{}", records[0]);
    assert!(
        records[0].contains(r#""direction":"outbound""#),
        "{}",
        records[0]
    );
}

#[tokio::test]
async fn a_stack_over_a_pipe_reports_an_unreachable_destination_as_a_gateway_error() {
    // Routed, token minted, nothing to connect to: the one error map answers 502.
    let stack = Stack::new(None);
    let (status, body) = stack.send(request("inference.ml", &[])).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}
