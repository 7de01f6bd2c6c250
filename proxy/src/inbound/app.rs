//! Forwarding to the local app over a pooled HTTP/1.1 client.
//!
//! Bodies stream both ways: the request body is handed to the client as hyper's `Incoming`, and
//! the response body is returned unread, so server-sent events and chunked responses reach the
//! caller as the app produces them. Only the wait for the response *head* is bounded by the
//! response timeout; a long stream after that is the app's business.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header::HOST};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::http::{Body, RequestError};

/// A pooled client to one upstream address.
#[derive(Clone, Debug)]
pub struct App {
    client: Client<HttpConnector, Body>,
    authority: Authority,
    response_timeout: Duration,
}

// === impl App ===

impl App {
    /// A client for `addr`, giving up on a connection after `connect_timeout` and on a response
    /// head after `response_timeout`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration, response_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        // INVARIANT: a socket address always renders as a valid authority.
        let authority = Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Self {
            client,
            authority,
            response_timeout,
        }
    }

    /// Sends `req` to the upstream and returns its response with the body still streaming.
    ///
    /// The request's own authority (`Host`, or `:authority` on HTTP/2) is kept in `Host`, so the
    /// app sees the name the caller used; the connection goes to the app's address.
    ///
    /// # Errors
    /// [`RequestError::UpstreamConnect`] when the upstream refuses or drops the connection,
    /// [`RequestError::UpstreamTimeout`] when no response head arrives in time.
    pub async fn forward(&self, req: Request<Body>) -> Result<Response<Incoming>, RequestError> {
        let req = self.to_upstream(req)?;
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(err)) => Err(RequestError::UpstreamConnect(Box::new(err))),
            Err(_) => Err(RequestError::UpstreamTimeout),
        }
    }

    fn to_upstream(&self, req: Request<Body>) -> Result<Request<Body>, RequestError> {
        let (mut parts, body) = req.into_parts();
        // HTTP/2 carries the authority in the URI, HTTP/1.1 in `Host`: the app gets `Host`.
        if let Some(authority) = parts.uri.authority()
            && !parts.headers.contains_key(HOST)
        {
            let host = http::HeaderValue::from_str(authority.as_str())
                .map_err(|_| RequestError::BadRequest("invalid authority"))?;
            parts.headers.insert(HOST, host);
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| RequestError::Internal("upstream uri"))?;
        parts.version = Version::HTTP_11;
        Ok(Request::from_parts(parts, body))
    }
}
