//! `hopgate demo`: the demo mesh (support-agent → inference → crm; docs/cedar.md, "Writing
//! rules") in one process, on loopback, with the real listeners.
//!
//! ```text
//!  alice's request ─▶ support-agent app ─▶ agent hopgate OUTBOUND ══mTLS══▶ inference hopgate INBOUND
//!   (Bearer, demo IdP)                        (origin token → hop token)        ─▶ inference app
//!  inference app ─▶ inference hopgate OUTBOUND ══mTLS══▶ crm hopgate INBOUND ─▶ crm app
//!                   (relayed token → child token)
//! ```
//!
//! A dev CA for `demo.local` issues the three SVIDs; a demo identity provider (an ES256 key and
//! its JWKS file) issues alice's token; the policies are the shipped `examples/policies`. Each
//! sidecar is a full [`Proxy`] (inbound, outbound, Cedar, tokens, audit into memory, spans into a
//! shared in-memory collector and, with `--otlp`, to a collector). The four steps print what was
//! called, the decisions, the hop-token chain and the span tree, and the command exits 0 only
//! when every step behaved as expected.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hopgate_config::{SpiffeId, TrustDomain};
use hopgate_proxy::telemetry::audit::AuditSink;
use hopgate_proxy::telemetry::trace::SpanCollector;
use hopgate_proxy::tls::{Identity, outbound_client_config};
use hopgate_proxy::{BuildOptions, Proxy};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_sdk::trace::SpanData;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::dev_ca;
use crate::token_cmd::render_tree;

const TRUST_DOMAIN: &str = "demo.local";
const AGENT: &str = "spiffe://demo.local/ns/agents/sa/support-agent";
const INFERENCE: &str = "spiffe://demo.local/ns/ml/sa/inference";
const CRM: &str = "spiffe://demo.local/ns/tools/sa/crm";
const IDP: &str = "https://idp.demo.local";
const IDP_AUDIENCE: &str = "agents";
/// alice may have the agent generate for her and read tickets; not write them.
const ALICE_SCOPE: &str = "inference.generate tickets.read";

const SCHEMA: &str = include_str!("../examples/policies/schema.cedarschema");
const MESH: &str = include_str!("../examples/policies/mesh.cedar");
const GUARDS: &str = include_str!("../examples/policies/guards.cedar");

/// `hopgate demo` options.
#[derive(Debug)]
pub(crate) struct DemoOptions {
    /// Also export spans to this OTLP collector (`:4318` means HTTP/protobuf, else gRPC).
    pub(crate) otlp: Option<String>,
    /// Keep the mesh up after the steps, with curl commands to explore it.
    pub(crate) serve: bool,
}

/// The three workloads: who they are and where they listen.
struct Mesh {
    dir: tempfile::TempDir,
    collector: SpanCollector,
    sidecars: Vec<Sidecar>,
    apps: Apps,
    alice: String,
}

struct Sidecar {
    name: &'static str,
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
    audit: Arc<Mutex<Vec<String>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The three apps.
struct Apps {
    agent: Arc<App>,
    inference: Arc<App>,
    crm: Arc<App>,
}

/// A demo app: what it received, and its sidecar's outbound listener.
struct App {
    role: Role,
    addr: SocketAddr,
    outbound: OnceLock<SocketAddr>,
    tokens: Mutex<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Agent,
    Inference,
    Crm,
}

/// One step's outcome against its expectation.
struct Outcome {
    ok: bool,
    why: String,
}

pub(crate) async fn run(options: DemoOptions) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mesh = Mesh::start(options.otlp.as_deref())
        .await
        .context("starting the demo mesh")?;
    println!(
        "hopgate demo: three workloads of {TRUST_DOMAIN}, each an app behind its own hopgate, on loopback"
    );
    for sidecar in &mesh.sidecars {
        println!(
            "  {:<14} inbound {}  outbound {}  admin {}",
            sidecar.name, sidecar.inbound, sidecar.outbound, sidecar.admin
        );
    }
    println!("  policies: examples/policies (mesh.cedar, guards.cedar); end user: alice ({IDP})");
    let outcomes = [
        step1(&mesh).await,
        step2(&mesh).await,
        step3(&mesh).await,
        step4(&mesh).await,
    ];
    println!();
    let mut all = true;
    for (i, outcome) in outcomes.iter().enumerate() {
        let mark = if outcome.ok { "ok  " } else { "FAIL" };
        println!("{mark} step {}: {}", i + 1, outcome.why);
        all &= outcome.ok;
    }
    println!(
        "{} in {:.1}s",
        if all {
            "every step behaved as expected"
        } else {
            "some steps did not behave as expected"
        },
        started.elapsed().as_secs_f64()
    );
    if options.serve {
        mesh.serve().await;
    }
    Ok(if all {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

// === the steps ===

async fn step1(mesh: &Mesh) -> Outcome {
    header(
        1,
        "alice → support-agent → inference (generate) → crm (read_ticket)",
    );
    let mark = mesh.mark();
    println!(
        "call: alice's request to the support-agent app, which calls http://inference.ml/generate\n      through its hopgate with `Authorization: Bearer <alice's IdP token>`; the inference app\n      calls http://crm.tools/tickets/42 through its own, relaying the hop token it received"
    );
    let reply = get(
        mesh.app(Role::Agent).addr,
        "agent.demo",
        "/ask",
        &[("authorization", &format!("Bearer {}", mesh.alice))],
    )
    .await;
    println!("result: {}", reply.summary());
    mesh.print_decisions(&mark);
    let at_crm = mesh.app(Role::Crm).last_token();
    let mut ok = reply.status == 200;
    let mut why = format!("alice's call reached crm: HTTP {}", reply.status);
    if let Some(token) = &at_crm {
        println!("hop token crm received (`hopgate token inspect`):");
        print_token(token);
        let claims = hopgate_proxy::token::inspect(token).map(|t| t.claims().clone());
        if let Ok(claims) = claims {
            let scopes: Vec<&str> = claims.scopes().collect();
            let chain_ok = claims.sub() == "alice" && claims.iss() == INFERENCE;
            ok &= chain_ok && scopes == ["tickets.read"];
            why = format!(
                "allowed; crm saw sub=alice, minted by inference for crm, scope narrowed to `{}`",
                scopes.join(" ")
            );
        } else {
            ok = false;
        }
    } else {
        ok = false;
        why.push_str(", but crm's app got no hop token");
    }
    mesh.print_spans(&mark);
    Outcome { ok, why }
}

async fn step2(mesh: &Mesh) -> Outcome {
    header(2, "support-agent → crm directly");
    let mark = mesh.mark();
    println!("call: the support-agent app calls http://crm.tools/tickets/42 through its hopgate");
    let reply = get(mesh.app(Role::Agent).addr, "agent.demo", "/direct-crm", &[]).await;
    println!("result: {}", reply.summary());
    let decisions = mesh.print_decisions(&mark);
    let denied_by = decisions
        .iter()
        .find(|d| field(d, "effect") == "deny")
        .map(|d| field(d, "policies").clone());
    let ok = reply.status == 403
        && denied_by
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|p| p.iter().any(|id| id == "deny-agent-direct-to-crm"));
    mesh.print_spans(&mark);
    Outcome {
        ok,
        why: format!(
            "denied with 403 by crm's policy {}",
            denied_by.map_or_else(|| "(none)".to_owned(), |p| p.to_string())
        ),
    }
}

async fn step3(mesh: &Mesh) -> Outcome {
    header(
        3,
        "the inference→crm hop token, replayed by the support agent",
    );
    let mark = mesh.mark();
    let Some(stolen) = mesh.app(Role::Crm).last_token() else {
        return Outcome {
            ok: false,
            why: "no token from step 1 to replay".to_owned(),
        };
    };
    println!(
        "call: the support agent, bypassing its sidecar, connects to crm's hopgate with its own SVID\n      and presents the token crm received from inference in step 1"
    );
    let reply = match mesh.replay_as_agent(&stolen).await {
        Ok(reply) => reply,
        Err(err) => {
            return Outcome {
                ok: false,
                why: format!("the replay could not be sent: {err:#}"),
            };
        }
    };
    println!("result: {}", reply.summary());
    mesh.print_decisions(&mark);
    mesh.print_spans(&mark);
    let reason = serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| field(&v, "reason").as_str().map(str::to_owned))
        .unwrap_or_default();
    Outcome {
        ok: reply.status == 401 && reason == "binding",
        why: format!(
            "rejected with {} `{reason}`: the token is bound to inference's certificate",
            reply.status
        ),
    }
}

async fn step4(mesh: &Mesh) -> Outcome {
    header(4, "inference asks crm to write_ticket for alice");
    let mark = mesh.mark();
    println!(
        "call: as in step 1, but the inference app asks crm to `write_ticket`; alice's origin scope\n      only covers reading"
    );
    let reply = get(
        mesh.app(Role::Agent).addr,
        "agent.demo",
        "/ask",
        &[
            ("authorization", &format!("Bearer {}", mesh.alice)),
            ("x-demo-crm-action", "write_ticket"),
        ],
    )
    .await;
    println!("result: {}", reply.summary());
    let decisions = mesh.print_decisions(&mark);
    if let Some(parent) = mesh.app(Role::Inference).last_token() {
        println!("hop token the inference app relayed (its child can only narrow this scope):");
        print_token(&parent);
    }
    mesh.print_spans(&mark);
    let denied = decisions.iter().any(|d| {
        field(d, "effect") == "deny"
            && field(d, "resource") == CRM
            && field(d, "action") == "write_ticket"
    });
    let parent_scope_lacks_write = mesh
        .app(Role::Inference)
        .last_token()
        .and_then(|t| hopgate_proxy::token::inspect(&t).ok())
        .is_some_and(|t| !t.claims().scopes().any(|s| s == "tickets.write"));
    Outcome {
        ok: reply.status == 403 && denied && parent_scope_lacks_write,
        why: "denied with 403 by crm: the token cannot carry `tickets.write`, so no permit applies"
            .to_owned(),
    }
}

fn header(n: u32, title: &str) {
    println!();
    println!(
        "── step {n}: {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}

fn print_token(token: &str) {
    match hopgate_proxy::token::inspect(token) {
        Ok(parsed) => {
            for line in render_tree(parsed.claims()).lines() {
                println!("  {line}");
            }
        }
        Err(reason) => println!("  (undecodable: {})", reason.as_str()),
    }
}

// === impl Mesh ===

/// Where each step's records start: the audit lines per sidecar.
struct Mark {
    audit: Vec<usize>,
}

impl Mesh {
    async fn start(otlp: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a temporary folder")?;
        let root = dir.path();
        let td = TrustDomain::parse(TRUST_DOMAIN).context("the demo trust domain")?;
        dev_ca::init(&root.join("ca"), &td).context("the dev CA")?;
        for (name, id) in [("agent", AGENT), ("inference", INFERENCE), ("crm", CRM)] {
            let id = SpiffeId::parse(id).context("a demo SPIFFE ID")?;
            let options = dev_ca::IssueOptions {
                out: Some(&root.join(name)),
                ttl: Duration::from_secs(3600),
                dns: &[],
                force: false,
            };
            dev_ca::issue(&root.join("ca"), &id, &options)
                .with_context(|| format!("the {name} SVID"))?;
        }
        let policies = root.join("policies");
        std::fs::create_dir_all(&policies)?;
        std::fs::write(policies.join("schema.cedarschema"), SCHEMA)?;
        std::fs::write(policies.join("mesh.cedar"), MESH)?;
        std::fs::write(policies.join("guards.cedar"), GUARDS)?;
        let idp = DemoIdp::new()?;
        idp.write_jwks(&root.join("idp-jwks.json"))?;
        let alice = idp.token("alice", ALICE_SCOPE)?;

        let collector = SpanCollector::new();
        let apps = Apps {
            agent: App::start(Role::Agent).await?,
            inference: App::start(Role::Inference).await?,
            crm: App::start(Role::Crm).await?,
        };
        let telemetry = |service: &str| {
            let otlp = otlp.map_or(String::new(), |url| {
                let protocol = if url.contains(":4318") {
                    "http"
                } else {
                    "grpc"
                };
                format!("  otlp: {{ endpoint: \"{url}\", protocol: {protocol} }}\n")
            });
            format!("telemetry:\n  service_name: {service}\n  log_format: text\n{otlp}")
        };
        let mut sidecars: Vec<Sidecar> = Vec::new();
        // Destinations first: a caller's routes name their inbound listeners.
        let crm = Self::sidecar(
            root,
            "crm",
            apps.crm.addr,
            "    []\n",
            "",
            &telemetry("crm"),
            &collector,
        )
        .await?;
        let inference_routes = format!(
            "    - {{ host: crm.tools, address: \"{}\", identity: \"{CRM}\", scopes: [tickets.read, tickets.write] }}\n",
            crm.inbound
        );
        let inference = Self::sidecar(
            root,
            "inference",
            apps.inference.addr,
            &inference_routes,
            "",
            &telemetry("inference"),
            &collector,
        )
        .await?;
        let agent_routes = format!(
            "    - {{ host: inference.ml, address: \"{}\", identity: \"{INFERENCE}\", scopes: [inference.generate, tickets.read, tickets.write] }}\n\
             \x20   - {{ host: crm.tools, address: \"{}\", identity: \"{CRM}\", scopes: [tickets.read] }}\n",
            inference.inbound, crm.inbound
        );
        let origin = format!(
            "token:\n  origin:\n    issuers:\n      - {{ issuer: \"{IDP}\", jwks_file: idp-jwks.json, audience: {IDP_AUDIENCE} }}\n"
        );
        let agent = Self::sidecar(
            root,
            "agent",
            apps.agent.addr,
            &agent_routes,
            &origin,
            &telemetry("support-agent"),
            &collector,
        )
        .await?;
        for (app, sidecar) in [
            (&apps.agent, &agent),
            (&apps.inference, &inference),
            (&apps.crm, &crm),
        ] {
            let _ = app.outbound.set(sidecar.outbound);
        }
        sidecars.extend([agent, inference, crm]);
        Ok(Self {
            dir,
            collector,
            sidecars,
            apps,
            alice,
        })
    }

    async fn sidecar(
        root: &Path,
        name: &'static str,
        app: SocketAddr,
        routes: &str,
        extra: &str,
        telemetry: &str,
        collector: &SpanCollector,
    ) -> anyhow::Result<Sidecar> {
        let yaml = format!(
            "identity:\n  svid: {{ cert: {name}/svid.pem, key: {name}/svid_key.pem }}\n  bundles: {{ {TRUST_DOMAIN}: ca/bundle.pem }}\n\
             inbound:\n  listen: 127.0.0.1:0\n  app: {app}\n\
             outbound:\n  listen: 127.0.0.1:0\n  routes:\n{routes}\
             policy:\n  dir: policies\n\
             admin:\n  listen: 127.0.0.1:0\n{extra}{telemetry}"
        );
        let path = root.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        let config = hopgate_config::load(&path).map_err(|err| anyhow::anyhow!("{name}: {err}"))?;
        let audit = Arc::new(Mutex::new(Vec::new()));
        let proxy = Proxy::build_with(
            &config,
            BuildOptions {
                audit: AuditSink::Memory(Arc::clone(&audit)),
                spans: Some(collector.clone()),
            },
        )
        .await
        .with_context(|| format!("the {name} sidecar"))?;
        let (Some(inbound), Some(outbound), Some(admin)) = (
            proxy.inbound_addr(),
            proxy.outbound_addr(),
            proxy.admin_addr(),
        ) else {
            bail!("the {name} sidecar has no listeners");
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(proxy.run(async move {
            let _ = stopped.await;
        }));
        Ok(Sidecar {
            name,
            inbound,
            outbound,
            admin,
            audit,
            _stop: stop,
        })
    }

    fn app(&self, role: Role) -> &App {
        match role {
            Role::Agent => &self.apps.agent,
            Role::Inference => &self.apps.inference,
            Role::Crm => &self.apps.crm,
        }
    }

    fn mark(&self) -> Mark {
        self.collector.clear();
        Mark {
            audit: self.sidecars.iter().map(|s| lock(&s.audit).len()).collect(),
        }
    }

    /// Prints the decisions made since `mark`, sidecar by sidecar, and returns them.
    fn print_decisions(&self, mark: &Mark) -> Vec<Value> {
        let mut all = Vec::new();
        println!("decisions:");
        for (sidecar, from) in self.sidecars.iter().zip(&mark.audit) {
            let lines: Vec<String> = lock(&sidecar.audit).iter().skip(*from).cloned().collect();
            for line in lines {
                let Ok(record) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let policies = field(&record, "policies")
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "no permit applies (default deny)".to_owned());
                println!(
                    "  {:<10} {:<8} {:<5} action {:<12} by {policies}\n  {:<10} decision {}  sub {}  depth {}",
                    sidecar.name,
                    field(&record, "direction").as_str().unwrap_or(""),
                    field(&record, "effect").as_str().unwrap_or(""),
                    field(&record, "action").as_str().unwrap_or(""),
                    "",
                    field(&record, "decision_id").as_str().unwrap_or(""),
                    field(&record, "sub").as_str().unwrap_or("-"),
                    field(&record, "depth"),
                );
                all.push(record);
            }
        }
        if all.is_empty() {
            println!("  (no policy decision: refused before policy)");
        }
        all
    }

    /// Prints the spans ended since `mark` as trees, one per trace.
    fn print_spans(&self, _mark: &Mark) {
        let spans = self.collector.spans();
        println!("spans:");
        let mut traces: BTreeMap<String, Vec<&SpanData>> = BTreeMap::new();
        for span in &spans {
            traces
                .entry(span.span_context.trace_id().to_string())
                .or_default()
                .push(span);
        }
        for (trace, spans) in traces {
            println!("  trace {trace}");
            let ids: Vec<String> = spans
                .iter()
                .map(|s| s.span_context.span_id().to_string())
                .collect();
            let roots = spans
                .iter()
                .filter(|s| !ids.contains(&s.parent_span_id.to_string()));
            for root in roots {
                print_span(root, &spans, 1);
            }
        }
    }

    /// Step 3: the agent's own SVID, straight to crm's inbound, with a token it does not own.
    async fn replay_as_agent(&self, token: &str) -> anyhow::Result<Reply> {
        let root = self.dir.path();
        let td = TrustDomain::parse(TRUST_DOMAIN)?;
        let bundles = BTreeMap::from([(td, root.join("ca/bundle.pem"))]);
        let identity = Identity::load(
            &root.join("agent/svid.pem"),
            &root.join("agent/svid_key.pem"),
            &bundles,
        )?;
        let mut config = (*outbound_client_config(&identity, SpiffeId::parse(CRM)?)?).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let crm = self
            .sidecars
            .iter()
            .find(|s| s.name == "crm")
            .map(|s| s.inbound)
            .context("the crm sidecar")?;
        let tcp = tokio::net::TcpStream::connect(crm).await?;
        let name = rustls_pki_types::ServerName::IpAddress(crm.ip().into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let req = Request::get("/tickets/42")
            .header("host", "crm.tools")
            .header("hop-token", token)
            .body(Full::new(Bytes::new()))?;
        let rsp = sender.send_request(req).await?;
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// `--serve`: keeps the mesh up, with commands to explore it, until Ctrl-C.
    async fn serve(&self) {
        let agent_app = self.app(Role::Agent).addr;
        let bundle = self.dir.path().join("ca/bundle.pem");
        println!();
        println!("The mesh stays up; Ctrl-C stops it. Try:");
        println!(
            "  curl -s -H 'Authorization: Bearer {}' http://{agent_app}/ask",
            self.alice
        );
        println!(
            "  curl -s -H 'Authorization: Bearer {}' -H 'x-demo-crm-action: write_ticket' http://{agent_app}/ask",
            self.alice
        );
        println!("  curl -s http://{agent_app}/direct-crm");
        for sidecar in &self.sidecars {
            println!(
                "  curl -s http://{}/metrics | grep ^hopgate_requests   # {}",
                sidecar.admin, sidecar.name
            );
        }
        if let Some(first) = self.sidecars.first() {
            println!(
                "  curl -s http://{}/policy; curl -s http://{}/identity",
                first.admin, first.admin
            );
        }
        println!(
            "  hopgate token inspect \"$TOKEN\" --bundle {}   # a token from a response's `hop-token`",
            bundle.display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_span(span: &SpanData, all: &[&SpanData], depth: usize) {
    let attr = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| match &kv.value {
                opentelemetry::Value::Array(opentelemetry::Array::String(items)) => items
                    .iter()
                    .map(|i| short(i.as_str()))
                    .collect::<Vec<_>>()
                    .join(" → "),
                other => other.as_str().into_owned(),
            })
            .unwrap_or_default()
    };
    let indent = "   ".repeat(depth);
    println!(
        "{indent}└─ {} {}  {} {} → {}  {}{}",
        attr("service.name"),
        span.name,
        attr("http.request.method"),
        attr("url.path"),
        attr("http.response.status_code"),
        attr("hop.decision"),
        match attr("hop.policy.ids") {
            ids if ids.is_empty() => String::new(),
            ids => format!(" [{ids}]"),
        },
    );
    let chain = attr("hop.chain");
    if !chain.is_empty() {
        println!(
            "{indent}   enduser {}  chain {chain}  txn {}",
            attr("enduser.id"),
            attr("hop.txn")
        );
    }
    let id = span.span_context.span_id();
    for child in all.iter().filter(|s| s.parent_span_id == id) {
        print_span(child, all, depth + 1);
    }
}

/// A SPIFFE ID's last path segment (`.../sa/inference` → `inference`), for compact trees.
fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// A member of a JSON object, `null` when absent.
fn field<'a>(value: &'a Value, name: &str) -> &'a Value {
    value.get(name).unwrap_or(&Value::Null)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl App ===

impl App {
    async fn start(role: Role) -> anyhow::Result<Arc<Self>> {
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
                    let service = hyper::service::service_fn(move |req| {
                        let app = Arc::clone(&app);
                        async move { Ok::<_, Infallible>(app.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(app)
    }

    fn last_token(&self) -> Option<String> {
        lock(&self.tokens).last().cloned()
    }

    /// What each app does: the agent turns alice's request into a call to inference (or, on
    /// `/direct-crm`, to crm); inference calls crm, relaying the hop token and trace context;
    /// crm answers with a ticket.
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let headers = req.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(token) = header("hop-token") {
            lock(&self.tokens).push(token.to_owned());
        }
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
                get(outbound, "inference.ml", "/generate", &relayed)
                    .await
                    .relay()
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

struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn summary(&self) -> String {
        let body: String = self.body.chars().take(120).collect();
        format!("HTTP {} {body}", self.status)
    }

    fn relay(self) -> Response<Full<Bytes>> {
        let mut rsp = Response::new(Full::new(Bytes::from(self.body)));
        *rsp.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        rsp
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Reply {
        status,
        body: body.to_string(),
    }
    .relay()
}

/// A plain HTTP/1.1 GET to `addr` with `Host: host`; a failure is a 502 reply.
async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    match try_get(addr, host, path, headers).await {
        Ok(reply) => reply,
        Err(err) => Reply {
            status: 502,
            body: json!({ "error": format!("{err:#}") }).to_string(),
        },
    }
}

async fn try_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let rsp = sender
        .send_request(req.body(Full::new(Bytes::new()))?)
        .await?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// === the demo identity provider ===

/// An ES256 key, its JWKS file, and the end-user tokens it signs.
struct DemoIdp {
    pair: EcdsaKeyPair,
}

impl DemoIdp {
    fn new() -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate the demo IdP key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("cannot load the demo IdP key"))?;
        Ok(Self { pair })
    }

    fn write_jwks(&self, path: &Path) -> anyhow::Result<()> {
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

    fn token(&self, sub: &str, scope: &str) -> anyhow::Result<String> {
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
