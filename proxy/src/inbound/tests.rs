//! Stack tests: the whole inbound side (TLS handshake, SPIFFE verification, the hop runner's
//! hygiene, token and policy stages, the error → response map) over an in-memory pipe
//! (`tokio::io::duplex`), with no socket between the caller and the sidecar.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hopgate_config::SpiffeId;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::accept::Connection;
use super::{App, Authenticator, InboundSide};
use crate::connection::ConnectionServer;
use crate::hop::test_support::{Cedar, Fixture};
use crate::identity::Derived;
use crate::listener::HeadWatch;
use crate::shutdown;
use crate::telemetry::audit::AuditSink;
use crate::tls::outbound_client_config;
use crate::tls::test_support::identity_under;

const SERVER: &str = "spiffe://example.org/ns/ml/sa/inference";
const CALLER: &str = "spiffe://example.org/ns/agents/sa/agent";

/// An inbound side for `SERVER`, its config's `inbound` section extended by `inbound`, and
/// with `policy` as its only Cedar file when given. Its app is a loopback port nobody
/// listens on: a request that gets that far is answered 502.
struct Stack {
    fx: Fixture,
    side: Arc<InboundSide>,
    server: ConnectionServer,
    /// Kept so the connections are not drained as they start.
    drain: (shutdown::Trigger, shutdown::Watch),
}

impl Stack {
    fn new(inbound: &str, policy: Option<&str>) -> Self {
        let cedar = policy.map(|text| Cedar {
            file: "hop.cedar",
            text,
            section: "",
        });
        let fx = Fixture::new(
            SERVER,
            &format!("inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:9\n{inbound}"),
            cedar,
        );
        let inbound = fx.config.inbound().unwrap();
        let identity = fx.identity(Derived {
            allowed: inbound.allowed_trust_domains().to_vec(),
            limits: fx.limits(),
            mint_ttl: None,
            routes: Vec::new(),
        });
        let timeouts = inbound.timeouts();
        let side = Arc::new(InboundSide {
            shared: fx.shared(inbound.mode(), inbound.limits(), &identity),
            identity,
            authenticator: Authenticator::new(
                fx.config.token(),
                inbound.require_token(),
                Arc::new(crate::token::RelayCache::new(
                    16,
                    fx.config.token().leeway(),
                )),
                Arc::clone(&fx.metrics),
            ),
            app_client: App::new(
                inbound.app(),
                hopgate_config::DEFAULT_DNS_REFRESH,
                timeouts.app_connect(),
                timeouts.app_response(),
            ),
        });
        let server = ConnectionServer::new(timeouts, inbound.limits());
        Self {
            fx,
            side,
            server,
            drain: shutdown::channel(),
        }
    }

    /// Sends `req` as `CALLER` over a fresh in-memory connection; the response's status and
    /// body.
    async fn send(&self, req: Request<Empty<Bytes>>) -> (StatusCode, String) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let conn = Connection {
            side: Arc::clone(&self.side),
            server: self.server.clone(),
            handshake_timeout: std::time::Duration::from_secs(5),
        };
        let remote = SocketAddr::from(([127, 0, 0, 1], 40000));
        tokio::spawn(conn.serve_io(
            server_io,
            remote,
            self.drain.1.clone(),
            HeadWatch::default(),
        ));
        let (caller, _dir) = identity_under(&self.fx.ca, CALLER);
        let config = outbound_client_config(&caller, SpiffeId::parse(SERVER).unwrap()).unwrap();
        let mut config = Arc::unwrap_or_clone(config);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from("hopgate.test").unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, client_io)
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let rsp = sender.send_request(req).await.unwrap();
        let status = rsp.status();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "inference.ml")
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn a_stack_over_a_pipe_refuses_a_call_without_the_required_token() {
    let stack = Stack::new("  require_token: true\n", None);
    let (status, body) = stack.send(get("/v1/generate")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains(r#""reason":"missing""#), "{body}");
}

#[tokio::test]
async fn a_stack_over_a_pipe_answers_a_policy_deny_with_403_and_records_it_once() {
    let forbid = r#"@id("no-generate") forbid (principal, action, resource);"#;
    let stack = Stack::new("", Some(forbid));
    let (status, body) = stack.send(get("/v1/generate")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("decision_id"), "{body}");
    let AuditSink::Memory(records) = &stack.side.shared.telemetry.audit else {
        panic!("a memory sink");
    };
    let records = records.lock().unwrap();
    assert_eq!(
        records.len(),
        1,
        "one audit record per decision: {records:?}"
    );
    assert!(records[0].contains("no-generate"), "{}", records[0]);
    assert!(records[0].contains(CALLER), "{}", records[0]);
}

#[tokio::test]
async fn a_stack_over_a_pipe_refuses_a_path_the_app_could_resolve_differently() {
    // PATH-03: refused by hygiene, before any token or policy stage.
    let stack = Stack::new(
        "",
        Some(r#"@id("all") permit (principal, action, resource);"#),
    );
    for path in ["/v1/../admin", "/v1/%2e%2e/admin"] {
        let (status, body) = stack.send(get(path)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }
}

#[tokio::test]
async fn a_stack_over_a_pipe_reports_an_unreachable_app_as_a_gateway_error() {
    // Admitted and allowed, then the app (a port nobody listens on) refuses: the runner's one
    // error map answers 502, never a hang or a dropped connection.
    let stack = Stack::new("", None);
    let (status, body) = stack.send(get("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}
