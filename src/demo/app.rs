//! The demo's three apps, its HTTP helpers and its identity provider.

use super::*;

/// A demo app: what it received, and its sidecar's outbound listener.
pub(super) struct App {
    pub(super) role: Role,
    pub(super) addr: SocketAddr,
    pub(super) outbound: OnceLock<SocketAddr>,
    pub(super) tokens: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Agent,
    Inference,
    Crm,
}

// === impl App ===

impl App {
    pub(super) async fn start(role: Role) -> anyhow::Result<Arc<Self>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let app = Arc::new(Self {
            role,
            addr: listener.local_addr()?,
            outbound: OnceLock::new(),
            tokens: Mutex::new(Vec::new()),
        });
        let serving = Arc::clone(&app);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let app = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let app = Arc::clone(&app);
                        async move {
                            // inference's `/stream` answers as it goes (step 6).
                            if app.role == Role::Inference && req.uri().path() == "/stream" {
                                app.record_token(&req);
                                return Ok::<_, Infallible>(stream::sse());
                            }
                            Ok(app.handle(req).await.map(|body| body.boxed()))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(app)
    }

    fn record_token(&self, req: &Request<Incoming>) {
        if let Some(token) = req.headers().get("hop-token").and_then(|v| v.to_str().ok()) {
            lock(&self.tokens).push(token.to_owned());
        }
    }

    pub(super) fn last_token(&self) -> Option<String> {
        lock(&self.tokens).last().cloned()
    }

    /// What each app does: the agent turns alice's request into a call to inference (or, on
    /// `/direct-crm`, to crm); inference calls crm, relaying the hop token and trace context
    /// (on `/crm-tools`, as an MCP client of crm's tools); crm answers with a ticket, and on
    /// `/mcp` as an MCP tool server.
    pub(super) async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.record_token(&req);
        if self.role == Role::Crm && req.uri().path() == "/mcp" {
            return mcp::serve(req).await;
        }
        let headers = req.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(outbound) = self.outbound.get().copied() else {
            return json_response(503, &json!({ "error": "sidecar not ready" }));
        };
        match self.role {
            Role::Agent if req.uri().path() == "/direct-crm" => {
                let reply = get(
                    outbound,
                    "crm.tools",
                    "/tickets/42",
                    &[("intent-action", "read_ticket")],
                )
                .await;
                reply.relay()
            }
            Role::Agent => {
                let mut relayed =
                    vec![("intent-action", "generate"), ("intent-purpose", "support")];
                if let Some(auth) = header("authorization") {
                    relayed.push(("authorization", auth));
                }
                if let Some(action) = header("x-demo-crm-action") {
                    relayed.push(("x-demo-crm-action", action));
                }
                let path = if req.uri().path() == "/ask-tools" {
                    "/crm-tools"
                } else {
                    "/generate"
                };
                get(outbound, "inference.ml", path, &relayed).await.relay()
            }
            Role::Inference if req.uri().path() == "/crm-tools" => {
                let relayed: Vec<(&str, &str)> = ["hop-token", "traceparent", "tracestate"]
                    .into_iter()
                    .filter_map(|name| header(name).map(|value| (name, value)))
                    .collect();
                mcp::use_crm_tools(outbound, &relayed).await
            }
            Role::Inference => {
                let action = header("x-demo-crm-action").unwrap_or("read_ticket");
                let mut relayed = vec![("intent-action", action)];
                for name in ["hop-token", "traceparent", "tracestate"] {
                    if let Some(value) = header(name) {
                        relayed.push((name, value));
                    }
                }
                get(outbound, "crm.tools", "/tickets/42", &relayed)
                    .await
                    .relay()
            }
            Role::Crm => json_response(
                200,
                &json!({ "ticket": "42", "status": "open", "summary": "printer on fire" }),
            ),
        }
    }
}

// === HTTP helpers ===

pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: String,
}

impl Reply {
    pub(super) fn summary(&self) -> String {
        let body: String = self.body.chars().take(120).collect();
        format!("HTTP {} {body}", self.status)
    }

    pub(super) fn relay(self) -> Response<Full<Bytes>> {
        let mut rsp = Response::new(Full::new(Bytes::from(self.body)));
        *rsp.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        rsp
    }
}

pub(super) fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Reply {
        status,
        body: body.to_string(),
    }
    .relay()
}

/// A plain HTTP/1.1 GET to `addr` with `Host: host`; a failure is a 502 reply.
pub(super) async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    send(http::Method::GET, addr, host, path, headers, Bytes::new()).await
}

/// A plain HTTP/1.1 POST of `body` to `addr` with `Host: host`; a failure is a 502 reply.
pub(super) async fn post(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Reply {
    send(
        http::Method::POST,
        addr,
        host,
        path,
        headers,
        Bytes::from(body),
    )
    .await
}

async fn send(
    method: http::Method,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    match try_send(method, addr, host, path, headers, body).await {
        Ok(reply) => reply,
        Err(err) => Reply {
            status: 502,
            body: json!({ "error": format!("{err:#}") }).to_string(),
        },
    }
}

async fn try_send(
    method: http::Method,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let rsp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// === the demo identity provider ===

/// An ES256 key, its JWKS file, and the end-user tokens it signs.
pub(super) struct DemoIdp {
    pub(super) pair: EcdsaKeyPair,
}

impl DemoIdp {
    pub(super) fn new() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate the demo IdP key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("cannot load the demo IdP key"))?;
        Ok(Self { pair })
    }

    pub(super) fn write_jwks(&self, path: &Path) -> anyhow::Result<()> {
        let point = self.pair.public_key().as_ref();
        let (x, y) = point
            .get(1..33)
            .zip(point.get(33..65))
            .context("an uncompressed P-256 point")?;
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": "demo", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]});
        std::fs::write(path, jwks.to_string())?;
        Ok(())
    }

    pub(super) fn token(&self, sub: &str, scope: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": "demo" });
        let claims = json!({
            "iss": IDP, "sub": sub, "aud": IDP_AUDIENCE, "scope": scope,
            "iat": now, "exp": now + 3600,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| anyhow::anyhow!("cannot sign alice's token"))?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }
}
