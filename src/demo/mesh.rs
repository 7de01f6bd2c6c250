//! The demo mesh: three sidecars in one process, their files, `--serve` and the shutdown.

use super::*;

/// The three workloads: who they are and where they listen.
pub(super) struct Mesh {
    pub(super) dir: tempfile::TempDir,
    pub(super) collector: SpanCollector,
    /// Spans ended before the last [`Mesh::mark`] cleared the collector.
    pub(super) spans_before: AtomicUsize,
    pub(super) sidecars: Vec<Sidecar>,
    pub(super) apps: Apps,
    pub(super) alice: String,
}

pub(super) struct Sidecar {
    pub(super) name: &'static str,
    pub(super) inbound: SocketAddr,
    pub(super) outbound: SocketAddr,
    pub(super) admin: SocketAddr,
    pub(super) audit: Arc<Mutex<Vec<String>>>,
    pub(super) config: PathBuf,
    pub(super) stop: tokio::sync::oneshot::Sender<()>,
    /// `Proxy::run`: resolves once the sidecar drained and sent its queued spans.
    pub(super) done: tokio::task::JoinHandle<bool>,
}

/// The three apps.
pub(super) struct Apps {
    pub(super) agent: Arc<App>,
    pub(super) inference: Arc<App>,
    pub(super) crm: Arc<App>,
}

// === impl Mesh ===

/// Where each step's records start: the audit lines per sidecar.
pub(super) struct Mark {
    pub(super) audit: Vec<usize>,
}

impl Mesh {
    pub(super) async fn start(otlp: Option<&str>) -> anyhow::Result<Self> {
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
        // crm is also an MCP tool server: its sidecar decides each MCP call by its method and
        // tool, and filters `tools/list`; inference's reads its calls before they leave.
        let mcp = "mcp:\n  paths: [/mcp]\n";
        let crm = Self::sidecar(
            root,
            "crm",
            apps.crm.addr,
            "    []\n",
            mcp,
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
            mcp,
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
            spans_before: AtomicUsize::new(0),
            sidecars,
            apps,
            alice,
        })
    }

    pub(super) async fn sidecar(
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
        let done = tokio::spawn(proxy.run(async move {
            let _ = stopped.await;
        }));
        Ok(Sidecar {
            name,
            inbound,
            outbound,
            admin,
            audit,
            config: path,
            stop,
            done,
        })
    }

    pub(super) fn app(&self, role: Role) -> &App {
        match role {
            Role::Agent => &self.apps.agent,
            Role::Inference => &self.apps.inference,
            Role::Crm => &self.apps.crm,
        }
    }

    pub(super) fn mark(&self) -> Mark {
        self.spans_before
            .fetch_add(self.collector.spans().len(), Ordering::Relaxed);
        self.collector.clear();
        Mark {
            audit: self.sidecars.iter().map(|s| lock(&s.audit).len()).collect(),
        }
    }

    /// Prints the audit records written since `mark`, sidecar by sidecar, and returns them.
    pub(super) fn print_decisions(&self, mark: &Mark) -> Vec<Value> {
        let mut all = Vec::new();
        println!("audit records:");
        for (sidecar, from) in self.sidecars.iter().zip(&mark.audit) {
            let lines: Vec<String> = lock(&sidecar.audit).iter().skip(*from).cloned().collect();
            for line in lines {
                let Ok(record) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let policies: Vec<&str> = field(&record, "policies")
                    .as_array()
                    .map(|p| p.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let effect = field(&record, "effect").as_str().unwrap_or("");
                // An MCP call is decided as its method, on the tool it names.
                let action = field(&record, "action").as_str().map(|action| {
                    match field(&record, "mcp_name").as_str() {
                        Some(tool) => format!("{action} {tool}"),
                        None => action.to_owned(),
                    }
                });
                let why = match (action.as_deref(), effect) {
                    _ if field(&record, "event").as_str() == Some("stream_closed") => format!(
                        "open stream cut: {} ({} ms after it was admitted)",
                        field(&record, "reason").as_str().unwrap_or(""),
                        field(&record, "duration_us").as_u64().unwrap_or(0) / 1000
                    ),
                    (None, _) => match field(&record, "reason").as_str() {
                        Some(reason) => format!("refused before any policy: {reason}"),
                        None => "no policy on this side (policy.outbound is off)".to_owned(),
                    },
                    (Some(action), _) if policies.is_empty() => {
                        format!("action {action}: no permit applies (default deny)")
                    }
                    (Some(action), _) => format!("action {action} by {}", policies.join(", ")),
                };
                println!(
                    "  {:<10} {:<8} {} {:<5} {why}\n  {:<10} decision {}  sub {}  depth {}",
                    sidecar.name,
                    field(&record, "direction").as_str().unwrap_or(""),
                    field(&record, "status"),
                    effect,
                    "",
                    field(&record, "decision_id").as_str().unwrap_or(""),
                    field(&record, "sub").as_str().unwrap_or("-"),
                    field(&record, "depth")
                        .as_u64()
                        .map_or("-".to_owned(), |d| d.to_string()),
                );
                all.push(record);
            }
        }
        all
    }

    /// The audit logs so far, as `hopgate audit trace` reads them: one per sidecar.
    pub(super) fn audit_logs(&self) -> Vec<(String, Vec<String>)> {
        self.sidecars
            .iter()
            .map(|s| (format!("{}.audit.jsonl", s.name), lock(&s.audit).clone()))
            .collect()
    }

    /// Prints the spans ended since `mark` as trees, one per trace.
    pub(super) fn print_spans(&self, _mark: &Mark) {
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
    pub(super) async fn replay_as_agent(&self, token: &str) -> anyhow::Result<Reply> {
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

    /// `--serve`: keeps the mesh up, with its files and commands to explore it, until Ctrl-C
    /// or SIGTERM. Tokens go into files rather than onto the terminal.
    pub(super) async fn serve(
        &self,
        terminate: &mut tokio::signal::unix::Signal,
    ) -> anyhow::Result<()> {
        let root = self.dir.path();
        let agent_app = self.app(Role::Agent).addr;
        let bundle = root.join("ca/bundle.pem");
        let alice = root.join("alice.jwt");
        std::fs::write(&alice, &self.alice).context("writing alice's token")?;
        println!();
        println!(
            "The mesh stays up in {}; Ctrl-C or SIGTERM stops it and removes it.",
            root.display()
        );
        for sidecar in &self.sidecars {
            println!(
                "  {:<10} config {}  audit log {}",
                sidecar.name,
                sidecar.config.display(),
                audit_log(root, sidecar.name).display()
            );
        }
        if let Some(token) = self.app(Role::Crm).last_token() {
            let path = root.join("hop-token.jwt");
            std::fs::write(&path, token).context("writing the hop token")?;
            println!("The last hop token crm received, to inspect:");
            println!(
                "  hopgate token inspect - --bundle {} < {}",
                bundle.display(),
                path.display()
            );
        }
        println!("Try:");
        println!(
            "  curl -s -H \"Authorization: Bearer $(cat {})\" http://{agent_app}/ask",
            alice.display()
        );
        println!(
            "  curl -s -H \"Authorization: Bearer $(cat {})\" -H 'x-demo-crm-action: write_ticket' http://{agent_app}/ask",
            alice.display()
        );
        println!(
            "  curl -s -H \"Authorization: Bearer $(cat {})\" http://{agent_app}/ask-tools",
            alice.display()
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
        let mut written = vec![0; self.sidecars.len()];
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                _ = tick.tick() => self.write_audit_logs(&mut written)?,
            }
        }
        self.write_audit_logs(&mut written)
    }

    /// Appends each sidecar's new audit records to its audit log file.
    pub(super) fn write_audit_logs(&self, written: &mut [usize]) -> anyhow::Result<()> {
        use std::io::Write as _;
        for (sidecar, done) in self.sidecars.iter().zip(written.iter_mut()) {
            let lines: Vec<String> = lock(&sidecar.audit).iter().skip(*done).cloned().collect();
            let path = audit_log(self.dir.path(), sidecar.name);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            for line in &lines {
                writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))?;
            }
            *done += lines.len();
        }
        Ok(())
    }

    /// Stops every sidecar and waits for each to drain and send its queued spans (bounded by
    /// the sidecar's own export timeout). Returns how many spans the mesh ended in all.
    pub(super) async fn shutdown(self) -> usize {
        let Self {
            sidecars,
            collector,
            spans_before,
            dir,
            ..
        } = self;
        for sidecar in sidecars {
            let _ = sidecar.stop.send(());
            let _ = sidecar.done.await;
        }
        let spans = spans_before.into_inner() + collector.spans().len();
        // The folder, with the CA key, goes only now: the sidecars read from it until here.
        drop(dir);
        spans
    }
}

/// Where `--serve` writes a sidecar's audit records.
pub(super) fn audit_log(root: &Path, name: &str) -> PathBuf {
    root.join(format!("{name}.audit.jsonl"))
}

pub(super) fn print_span(span: &SpanData, all: &[&SpanData], depth: usize) {
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
    // An MCP call: its method and tool after the path.
    let call = [attr("mcp.method.name"), attr("gen_ai.tool.name")]
        .iter()
        .filter(|part| !part.is_empty())
        .fold(String::new(), |call, part| format!("{call} {part}"));
    println!(
        "{indent}└─ {} {}  {} {}{call} → {}  {}{}",
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
pub(super) fn short(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

/// A member of a JSON object, `null` when absent.
pub(super) fn field<'a>(value: &'a Value, name: &str) -> &'a Value {
    value.get(name).unwrap_or(&Value::Null)
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
