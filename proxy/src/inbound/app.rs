//! Forwarding to the local app over a pooled HTTP/1.1 client.
//!
//! The app's address may be a name (`inbound.app: app.local:8080`): the connector asks
//! [`Resolved`] for its addresses, tries each in turn, and asks for a new lookup when none
//! answers.
//!
//! Bodies stream both ways: the request body is handed to the client as hyper's `Incoming`, and
//! the response body is returned unread, so server-sent events and chunked responses reach the
//! caller as the app produces them. Only the wait for the response *head* is bounded by the
//! response timeout; a long stream after that is the app's business.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hopgate_config::Address;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header::HOST};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::dns::Resolved;
use crate::http::{Body, Malformed, RequestError};

/// A pooled client to one upstream address.
#[derive(Clone, Debug)]
pub struct App {
    client: Client<HttpConnector<AppResolver>, Body>,
    authority: Authority,
    resolved: Resolved,
    response_timeout: Duration,
}

/// Hands hyper's connector the app's current addresses, whatever name it asks for.
#[derive(Clone, Debug)]
struct AppResolver {
    resolved: Resolved,
    wait: Duration,
}

// === impl App ===

impl App {
    /// A client for `addr` (a name is resolved again every `dns_refresh`), giving up on a
    /// connection after `connect_timeout` and on a response head after `response_timeout`.
    /// Must be called on a tokio runtime.
    pub fn new(
        addr: &Address,
        dns_refresh: Duration,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        let resolved = Resolved::new(addr, dns_refresh);
        let mut connector = HttpConnector::new_with_resolver(AppResolver {
            resolved: resolved.clone(),
            wait: connect_timeout,
        });
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        // INVARIANT: a checked address (an IP with its port, or a host name of letters,
        // digits, `-`, `_` and `.`) always renders as a valid authority.
        let authority = Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| Authority::from_static("127.0.0.1"));
        Self {
            client,
            authority,
            resolved,
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
            Ok(Err(err)) => {
                if err.is_connect() {
                    self.resolved.connect_failed();
                }
                Err(RequestError::UpstreamConnect(Box::new(err)))
            }
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
                .map_err(|_| RequestError::BadRequest(Malformed::Authority, "invalid authority"))?;
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

// === impl AppResolver ===

impl tower::Service<Name> for AppResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _name: Name) -> Self::Future {
        let Self { resolved, wait } = self.clone();
        Box::pin(async move {
            let addrs = resolved.addrs(wait).await.inspect_err(|err| {
                tracing::warn!(app = %resolved.address(), error = %err, "cannot reach the local app");
            })?;
            let owned: Vec<SocketAddr> = addrs.iter().copied().collect();
            Ok(owned.into_iter())
        })
    }
}
