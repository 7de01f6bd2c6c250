//! The admin listener: `/live`, `/ready`, `/metrics`, `/identity` and `/policy`. Plain HTTP on
//! loopback by default; every endpoint is read-only.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hopgate_policy::PolicyStore;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

use crate::http::{Body, full_body};
use crate::identity::IdentityStore;
use crate::shutdown;
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::ProxyMetrics;
use crate::time::{rfc3339, unix_seconds};

/// The admin server, bound and ready.
#[derive(Debug)]
pub struct Admin {
    listener: TcpListener,
    state: Arc<AdminState>,
}

/// How policy decides on this sidecar, as `/ready`, `/policy` and the startup line say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyMode {
    /// A policy section, and denies are enforced.
    Enforced,
    /// A policy section with `inbound.mode: audit`: a would-be deny is recorded
    /// (`audit_deny`) and the call let through.
    Audit,
    /// No policy section: every verified peer of an allowed trust domain is admitted.
    IdentityOnly,
}

/// What the endpoints report on.
#[derive(Debug)]
struct AdminState {
    identity: Arc<IdentityStore>,
    policies: Option<Arc<PolicyStore>>,
    mode: PolicyMode,
    metrics: Arc<ProxyMetrics>,
    draining: shutdown::Draining,
    audit: AuditSink,
}

// === impl Admin ===

impl Admin {
    /// Binds the admin listener.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(
        addr: SocketAddr,
        identity: Arc<IdentityStore>,
        policies: Option<Arc<PolicyStore>>,
        mode: PolicyMode,
        metrics: Arc<ProxyMetrics>,
        draining: shutdown::Draining,
        audit: AuditSink,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            state: Arc::new(AdminState {
                identity,
                policies,
                mode,
                metrics,
                draining,
                audit,
            }),
        })
    }

    /// The bound address.
    ///
    /// # Errors
    /// Never, for a bound listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped. It keeps serving through the drain, so `/ready`
    /// can answer 503 `draining` and probes see the sidecar leaving rather than vanishing.
    pub async fn serve(self) {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = Arc::clone(&self.state);
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(state.route(&req)) }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

// === impl AdminState ===

impl AdminState {
    fn route(&self, req: &Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method_not_allowed"}),
            );
        }
        match req.uri().path() {
            "/live" => json_response(StatusCode::OK, &json!({"live": true})),
            "/ready" => self.ready(),
            "/metrics" => self.metrics(),
            "/identity" => self.identity(),
            "/policy" => self.policy(),
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    fn ready(&self) -> Response<Body> {
        // `None`: the Workload API withdrew the SVID (or sent an expired one).
        let not_after = self
            .identity
            .snapshot()
            .map(|s| s.identity().svid().not_after());
        let reason = if self.draining.is_draining() {
            Some("draining")
        } else if not_after.is_none() {
            Some("no_identity")
        } else if not_after.is_some_and(|t| t <= SystemTime::now()) {
            Some("svid_expired")
        } else if self.audit.refusing() {
            // Requests are refused until stdout is read again: send traffic elsewhere.
            Some("audit_unavailable")
        } else {
            None
        };
        match reason {
            Some(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"ready": false, "reason": reason}),
            ),
            // Without a policy section hopgate admits every verified peer of an allowed trust
            // domain; /ready says so, as the startup log does.
            None => json_response(
                StatusCode::OK,
                &json!({"ready": true, "policy": self.mode.as_str()}),
            ),
        }
    }

    fn metrics(&self) -> Response<Body> {
        match self.metrics.encode() {
            Ok(text) => {
                let mut rsp = Response::new(full_body(text));
                rsp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                rsp
            }
            Err(_) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "metrics"}),
            ),
        }
    }

    fn identity(&self) -> Response<Body> {
        let last = self.identity.last_reload();
        let last_update = json!({
            "at": rfc3339(last.at()),
            "result": last.result(),
            "error": last.error(),
        });
        let mut body = match self.identity.snapshot() {
            Some(snapshot) => {
                let identity = snapshot.identity();
                let svid = identity.svid();
                json!({
                    "spiffe_id": svid.id().as_str(),
                    "not_after": rfc3339(svid.not_after()),
                    "not_after_unix": unix_seconds(svid.not_after()),
                    "trust_domains": identity.bundles().trust_domains().iter().map(|td| td.as_str()).collect::<Vec<_>>(),
                })
            }
            // Withdrawn: nothing is in use, and nothing older is shown as if it were.
            None => json!({
                "spiffe_id": null,
                "not_after": null,
                "not_after_unix": null,
                "trust_domains": [],
            }),
        };
        if let Some(fields) = body.as_object_mut() {
            fields.insert("source".into(), self.identity.source().into());
            fields.insert("socket".into(), self.identity.socket().into());
            fields.insert("last_update".into(), last_update.clone());
            // The files source's name for the same record, kept for existing readers.
            fields.insert("last_reload".into(), last_update);
        }
        json_response(StatusCode::OK, &body)
    }
}

impl AdminState {
    fn policy(&self) -> Response<Body> {
        let Some(policies) = &self.policies else {
            return json_response(
                StatusCode::OK,
                &json!({"policy": "identity_only", "policy_ids": [], "revocations": 0}),
            );
        };
        let snapshot = policies.current();
        let last = policies.last_reload();
        json_response(
            StatusCode::OK,
            &json!({
                "policy": self.mode.as_str(),
                "digest": snapshot.digest(),
                "loaded_at": rfc3339(snapshot.loaded_at()),
                "policy_ids": snapshot.policy_ids(),
                "revocations": snapshot.revocations().len(),
                "warnings": snapshot.warnings(),
                "last_reload": {
                    "at": rfc3339(last.at()),
                    "result": if last.error().is_some() { "error" } else { "ok" },
                    "error": last.error(),
                },
            }),
        )
    }
}

// === impl PolicyMode ===

impl PolicyMode {
    /// `enforced`, `audit` or `identity_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforced => "enforced",
            Self::Audit => "audit",
            Self::IdentityOnly => "identity_only",
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut rsp = Response::new(full_body(body.to_string()));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}
