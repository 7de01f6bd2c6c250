//! The one place where a failed request becomes an HTTP response.
//!
//! Every [`RequestError`] variant is matched without a wildcard, so a new failure cannot reach
//! the wire without someone deciding its status and body. Bodies are generic JSON: the details
//! stay in the logs and the audit record, never in the response. A 401 and a 403 carry the
//! request's decision id, which finds its audit record.

use http::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use thiserror::Error;

use super::mcp::McpRefusal;
use super::{Body, full_body};
use crate::telemetry::metrics::DecisionLabel;

/// Why hopgate answered a request itself instead of forwarding it. Named by who is at fault:
/// the client (`BadRequest`, `Unauthenticated`, `Forbidden`, `NoRoute`), the upstream
/// (`UpstreamConnect`, `UpstreamTimeout`) or hopgate (`Overloaded`, `Internal`).
#[derive(Debug, Error)]
pub enum RequestError {
    /// The request is malformed in a way a proxy must not forward (docs/security.md, "Request
    /// smuggling and ambiguity").
    #[error("bad request: {1}")]
    BadRequest(Malformed, &'static str),
    /// An MCP request whose call cannot be decided unambiguously (MCP-01..04), or whose body
    /// is too large (413) or too slow (408).
    #[error("bad MCP request: {0}")]
    Mcp(McpRefusal),
    /// The hop token is missing or invalid; the reason is a stable code from docs/tokens.md,
    /// "Receiver checks and reason codes".
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// Policy denied the request.
    #[error("forbidden by policy")]
    Forbidden,
    /// No outbound route matches the destination.
    #[error("no route to the destination")]
    NoRoute,
    /// The upstream could not be reached.
    #[error("upstream unreachable: {0}")]
    UpstreamConnect(#[source] BoxError),
    /// The upstream did not answer in time.
    #[error("upstream did not answer within the response timeout")]
    UpstreamTimeout,
    /// Too many requests are in flight.
    #[error("overloaded: too many requests in flight")]
    Overloaded,
    /// The audit buffer to stdout is full (`telemetry.audit.when_full: refuse`): a request
    /// served now could not be recorded.
    #[error("audit records cannot be written: stdout is not being read")]
    AuditUnavailable,
    /// This sidecar has no SVID: the Workload API withdrew it (or sent an expired one). No
    /// token can be verified or minted, and no fallback identity is used.
    #[error("no identity: the Workload API has withdrawn this workload's SVID")]
    NoIdentity,
    /// A bug or an unexpected local failure.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What was wrong with a request refused with 400: the audit record's and the span's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// `path`: a path an app could resolve differently (PATH rules in docs/security.md).
    Path,
    /// `host`: two hosts, or a `Host` that differs from the request target's authority.
    Host,
    /// `authority`: an authority that is not a valid one.
    Authority,
    /// `connection`: a `Connection` header nominating a framing field.
    Connection,
    /// `intent`: an intent header that is not visible ASCII or appears twice.
    Intent,
    /// `method`: a method hopgate does not proxy (`CONNECT`).
    Method,
    /// `framing`: a `Transfer-Encoding` other than one `chunked` (SMG-05).
    Framing,
    /// `body`: a request body that is not well framed (a malformed chunk) or broke off.
    Body,
}

// === impl Malformed ===

impl Malformed {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Host => "host",
            Self::Authority => "authority",
            Self::Connection => "connection",
            Self::Intent => "intent",
            Self::Method => "method",
            Self::Framing => "framing",
            Self::Body => "body",
        }
    }
}

/// A type-erased error, as tower and hyper use them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

// === impl RequestError ===

impl RequestError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(..) => StatusCode::BAD_REQUEST,
            Self::Mcp(McpRefusal::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Mcp(McpRefusal::SlowBody) => StatusCode::REQUEST_TIMEOUT,
            Self::Mcp(McpRefusal::BadResult) => StatusCode::BAD_GATEWAY,
            Self::Mcp(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::NoRoute => StatusCode::FORBIDDEN,
            Self::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Overloaded | Self::AuditUnavailable | Self::NoIdentity => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// How the request is counted (`hopgate_requests_total{decision}`): refused by the caller's
    /// fault is `deny` (or `unauthenticated`), failed after admission is `allow`.
    pub fn decision(&self) -> DecisionLabel {
        match self {
            Self::Unauthenticated(_) => DecisionLabel::Unauthenticated,
            Self::Mcp(McpRefusal::BadResult) => DecisionLabel::Allow,
            Self::Forbidden | Self::BadRequest(..) | Self::Mcp(_) | Self::NoRoute => {
                DecisionLabel::Deny
            }
            // Refused for capacity or failed upstream after admission.
            Self::UpstreamConnect(_)
            | Self::UpstreamTimeout
            | Self::Overloaded
            | Self::AuditUnavailable
            | Self::NoIdentity
            | Self::Internal(_) => DecisionLabel::Allow,
        }
    }

    /// The stable code of the refusal, for the audit record and the span's `hop.reason`: the
    /// token check's reason (401), the kind of malformation (400), or what failed. `None` for a
    /// policy deny, whose reason is the decision's.
    pub fn reason(&self) -> Option<&'static str> {
        Some(match self {
            Self::BadRequest(malformed, _) => malformed.as_str(),
            Self::Mcp(refusal) => refusal.as_str(),
            Self::Unauthenticated(reason) => reason,
            Self::Forbidden => return None,
            Self::NoRoute => "no_route",
            Self::UpstreamConnect(_) => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Overloaded => "overloaded",
            Self::AuditUnavailable => "audit_unavailable",
            Self::NoIdentity => "no_identity",
            Self::Internal(_) => "internal",
        })
    }

    /// The generic JSON body of the response. The decision id is a UUID hopgate made itself:
    /// nothing in it needs escaping.
    fn body(&self, decision_id: &str) -> String {
        match self {
            Self::BadRequest(..) | Self::Mcp(_) => json_error("bad_request"),
            Self::Unauthenticated(reason) => format!(
                r#"{{"error":"unauthenticated","reason":"{reason}","decision_id":"{decision_id}"}}"#
            ),
            Self::Forbidden => {
                format!(r#"{{"error":"forbidden","decision_id":"{decision_id}"}}"#)
            }
            Self::NoRoute => json_error("no_route"),
            Self::UpstreamConnect(_) => json_error("upstream_unavailable"),
            Self::UpstreamTimeout => json_error("upstream_timeout"),
            Self::Overloaded => json_error("overloaded"),
            Self::AuditUnavailable => json_error("audit_unavailable"),
            Self::NoIdentity => json_error("no_identity"),
            Self::Internal(_) => json_error("internal"),
        }
    }

    /// Turns the error into the response sent to the client; `decision_id` is the request's
    /// (in the body of a 401 or 403).
    pub fn into_response(self, decision_id: &str) -> Response<Body> {
        let mut rsp = Response::new(full_body(self.body(decision_id)));
        *rsp.status_mut() = self.status();
        let headers = rsp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, Self::Unauthenticated(_)) {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("hop-token"));
        }
        rsp
    }

    /// The answer to an MCP request: the same status, with a JSON-RPC error an MCP client
    /// shows as a tool error, carrying the request's `id` and, in `data`, the decision id and
    /// the reason code.
    pub fn into_mcp_response(self, decision_id: &str, id: &serde_json::Value) -> Response<Body> {
        let (code, message) = match &self {
            Self::Mcp(refusal) => refusal.json_rpc(),
            Self::Forbidden => (-32001, "Forbidden: hopgate's policy denies this call"),
            Self::Unauthenticated(_) => (-32001, "Unauthenticated: the hop token was refused"),
            Self::BadRequest(..) => (-32600, "Invalid Request"),
            Self::NoRoute => (-32001, "No route to the destination"),
            _ => (
                -32603,
                "Internal error: hopgate could not complete the call",
            ),
        };
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": code,
                "message": message,
                // A policy deny has no reason code of its own: it is `forbidden`.
                "data": { "decision_id": decision_id, "reason": self.reason().unwrap_or("forbidden") },
            },
        });
        let mut rsp = Response::new(full_body(body.to_string()));
        *rsp.status_mut() = self.status();
        let headers = rsp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, Self::Unauthenticated(_)) {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("hop-token"));
        }
        rsp
    }
}

fn json_error(code: &str) -> String {
    format!(r#"{{"error":"{code}"}}"#)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn body_of(err: RequestError) -> (StatusCode, String) {
        let rsp = err.into_response("abc");
        let status = rsp.status();
        let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn bad_request_is_400() {
        assert_eq!(
            body_of(RequestError::BadRequest(Malformed::Path, "x"))
                .await
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn unauthenticated_is_401_with_reason_decision_id_and_challenge() {
        let rsp = RequestError::Unauthenticated("binding").into_response("abc");
        assert_eq!(rsp.status(), StatusCode::UNAUTHORIZED);
        assert!(rsp.headers().contains_key(WWW_AUTHENTICATE));
        let (_, body) = body_of(RequestError::Unauthenticated("binding")).await;
        assert_eq!(
            body,
            r#"{"error":"unauthenticated","reason":"binding","decision_id":"abc"}"#
        );
    }

    #[tokio::test]
    async fn forbidden_is_403_with_decision_id() {
        let (status, body) = body_of(RequestError::Forbidden).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, r#"{"error":"forbidden","decision_id":"abc"}"#);
    }

    #[tokio::test]
    async fn no_route_is_403() {
        let (status, body) = body_of(RequestError::NoRoute).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, r#"{"error":"no_route"}"#);
    }

    #[tokio::test]
    async fn upstream_connect_is_502() {
        let err = RequestError::UpstreamConnect("refused".into());
        assert_eq!(body_of(err).await.0, StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn upstream_timeout_is_504() {
        assert_eq!(
            body_of(RequestError::UpstreamTimeout).await.0,
            StatusCode::GATEWAY_TIMEOUT
        );
    }

    #[tokio::test]
    async fn overloaded_is_503() {
        assert_eq!(
            body_of(RequestError::Overloaded).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn audit_unavailable_is_503_naming_it() {
        let (status, body) = body_of(RequestError::AuditUnavailable).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, r#"{"error":"audit_unavailable"}"#);
    }

    #[tokio::test]
    async fn internal_is_500() {
        assert_eq!(
            body_of(RequestError::Internal("x")).await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
