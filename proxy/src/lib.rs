//! hopgate's data path: listeners, SPIFFE mTLS, HTTP forwarding, admin and shutdown.
//!
//! ```text
//!  peer sidecar ══ mTLS (h2 | http/1.1) ══▶ listener ─▶ tls ─▶ connection ─▶ inbound ─▶ http ─▶ app
//!                                           (cap,       (SPIFFE   (h1/h2,      (XFCC,       (pooled,
//!                                            back-off)   verifier) limits)      hop-by-hop)  streaming)
//!  admin: /live /ready /metrics /identity          shutdown: stop accepting, drain in-flight
//! ```
//!
//! [`Proxy::build`] loads identity and binds every listener, so a configuration that cannot run
//! fails before anything is served; [`Proxy::run`] serves until the shutdown future resolves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hopgate_config::{
    Config, DEFAULT_DNS_REFRESH, IdentitySource, InboundConfig, InboundMode, OutboundConfig,
    StreamsConfig,
};
use hopgate_policy::{PolicyError, PolicyStore, ReloadOutcome};
use thiserror::Error;
use tokio::sync::Notify;

pub mod admin;
pub mod connection;
mod dns;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod hop;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod listener;
pub mod outbound;
pub mod shutdown;
mod streams;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
mod time;
pub mod tls;
pub mod token;
mod watch;

use crate::admin::{Admin, PolicyMode};
use crate::hop::HopTelemetry;
use crate::http::authorize::Authorizer;
use crate::identity::{Derived, IdentityError, IdentityStore};
use crate::inbound::{Authenticator, Inbound};
use crate::outbound::{Delegator, Outbound};
use crate::streams::Streams;
use crate::telemetry::CurrentSvid;
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::{ProxyMetrics, ReloadResult};
use crate::telemetry::stdout::stdout;
use crate::telemetry::trace::{SpanCollector, TraceError, Tracing};
use crate::tls::TlsError;
use crate::token::RelayCache;
use crate::token::{Limits, OriginVerifier, TokenError};
use crate::watch::{PathWatch, WatchError};

/// How a sidecar started in-process reports: audit records and (optionally) spans kept in memory
/// as well as, or instead of, the configured sinks. The binary uses the defaults.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// Where audit records go (stdout by default).
    pub audit: AuditSink,
    /// A collector that also receives every span (tracing is on with one, even without OTLP).
    pub spans: Option<SpanCollector>,
}

/// A sidecar with its identity loaded and its listeners bound.
#[derive(Debug)]
pub struct Proxy {
    identity: Arc<IdentityStore>,
    policies: Option<Arc<PolicyStore>>,
    metrics: Arc<ProxyMetrics>,
    inbound: Option<Inbound>,
    outbound: Option<Outbound>,
    admin: Admin,
    mode: PolicyMode,
    tracing: Tracing,
    drain: (shutdown::Trigger, shutdown::Watch),
    grace: Duration,
    _watcher: IdentityWatch,
    _policy_watcher: Option<PathWatch>,
}

/// Why the sidecar could not start.
#[derive(Debug, Error)]
pub enum StartupError {
    /// The SVID or a bundle could not be loaded; a configuration problem.
    #[error("identity: {0}")]
    Identity(#[from] TlsError),
    /// The policy folder could not be loaded or failed validation; a configuration problem.
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    /// An origin issuer's JWKS file cannot be used; a configuration problem.
    #[error("token.origin.issuers: {0}")]
    Origin(#[source] TokenError),
    /// The SVID's key cannot sign hop tokens (the outbound side mints them); a configuration
    /// problem.
    #[error("identity.svid: cannot sign hop tokens: {0}")]
    Minter(#[source] TokenError),
    /// `telemetry.audit.sign: true`, and the SVID's key cannot sign the seals; a configuration
    /// problem.
    #[error("telemetry.audit.sign: the SVID's key cannot sign the audit seals: {0}")]
    AuditSeal(#[source] TokenError),
    /// The OTLP exporter could not be built; a configuration problem.
    #[error("{0}")]
    Telemetry(#[from] TraceError),
    /// The Workload API gave no usable SVID within `identity.workload_api.initial_timeout`; a
    /// runtime problem (exit 1): the agent, its socket or the registration entry.
    #[error("identity.workload_api: {0}")]
    WorkloadApi(String),
    /// A file watch could not start (for example, no inotify watch left).
    #[error("{0}")]
    Watch(#[from] WatchError),
    /// A listener could not be bound.
    #[error("cannot bind {what} listener on `{addr}`: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address it was to bind.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
}

impl From<IdentityError> for StartupError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::Tls(error) => Self::Identity(error),
            IdentityError::Minter(error) => Self::Minter(error),
            IdentityError::WorkloadApi(error) => Self::WorkloadApi(error),
        }
    }
}

/// What keeps the identity current: the file watch, or the Workload API stream's task. Held
/// for its `Drop`, which stops it.
#[derive(Debug)]
enum IdentityWatch {
    Files { _watch: Option<PathWatch> },
    WorkloadApi { _task: identity::WorkloadApiTask },
}

/// Signs the audit seals with the identity current at each seal. The store is held by the
/// process-wide writer, not borrowed from the sidecar: the last seal is written by the flush
/// on the way out, after the sidecar itself is gone, and must still be signed.
fn seal_with(identity: &Arc<IdentityStore>) -> Result<(), StartupError> {
    if let Some(snapshot) = identity.snapshot() {
        token::Signer::from_svid(snapshot.identity().svid()).map_err(StartupError::AuditSeal)?;
    }
    let store = Arc::clone(identity);
    stdout().seal_with(move || store.snapshot().map(|snapshot| snapshot.shared_identity()));
    Ok(())
}

// === impl StartupError ===

impl StartupError {
    /// Whether the failure lies in the configuration (exit 78) rather than the runtime (exit 1).
    pub fn is_config(&self) -> bool {
        match self {
            Self::Identity(_)
            | Self::Policy(_)
            | Self::Origin(_)
            | Self::Minter(_)
            | Self::AuditSeal(_)
            | Self::Telemetry(_) => true,
            Self::Bind { .. } | Self::Watch(_) | Self::WorkloadApi(_) => false,
        }
    }
}

// === impl Proxy ===

impl Proxy {
    /// Loads the identity (from its files, or the first usable answer of the Workload API),
    /// starts following it and binds every listener. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`StartupError::Identity`] for unreadable or invalid SVID and bundle files,
    /// [`StartupError::WorkloadApi`] when the Workload API gave no usable SVID in time,
    /// [`StartupError::Policy`] for a policy folder that does not load or validate,
    /// [`StartupError::Bind`] when an address is taken.
    pub async fn build(config: &Config) -> Result<Self, StartupError> {
        Self::build_with_audit(config, AuditSink::Stdout).await
    }

    /// [`Proxy::build`], with audit records going to `audit` instead of stdout (for tests that
    /// run sidecars in-process and read their records).
    ///
    /// # Errors
    /// As [`Proxy::build`].
    pub async fn build_with_audit(config: &Config, audit: AuditSink) -> Result<Self, StartupError> {
        Self::build_with(config, BuildOptions { audit, spans: None }).await
    }

    /// [`Proxy::build`] with [`BuildOptions`].
    ///
    /// # Errors
    /// As [`Proxy::build`], and [`StartupError::Telemetry`] when the OTLP exporter cannot be
    /// built.
    pub async fn build_with(config: &Config, options: BuildOptions) -> Result<Self, StartupError> {
        let BuildOptions { audit, spans } = options;
        if matches!(audit, AuditSink::Stdout) {
            stdout().configure(config.telemetry().audit());
        }
        let metrics = Arc::new(ProxyMetrics::with_max_identities(
            config.telemetry().metrics().max_identities(),
        ));
        metrics.register_token_reasons(token::rejection_reasons());
        let allowed = config
            .inbound()
            .map(|inbound| inbound.allowed_trust_domains().to_vec())
            .unwrap_or_else(|| config.identity().trust_domains());
        // Everything derived from the identity is built with it, on every update.
        let derived = Derived {
            allowed,
            limits: Limits::from(config.token()),
            mint_ttl: config.outbound().map(|_| config.token().ttl()),
            routes: config
                .outbound()
                .map(|o| o.routes().iter().map(|r| r.identity().clone()).collect())
                .unwrap_or_default(),
        };
        let (identity, watcher) = match config.identity().source() {
            IdentitySource::Files(files) => {
                let identity = IdentityStore::load(files, derived, Arc::clone(&metrics))?;
                let watcher = identity.spawn_watcher()?;
                (identity, IdentityWatch::Files { _watch: watcher })
            }
            IdentitySource::WorkloadApi(api) => {
                let (identity, task) =
                    identity::workload_api::start(api, derived, Arc::clone(&metrics)).await?;
                (identity, IdentityWatch::WorkloadApi { _task: task })
            }
        };
        if matches!(audit, AuditSink::Stdout) && config.telemetry().audit().sign() {
            seal_with(&identity)?;
        }
        // Each side's sweeper of open requests, woken by a policy reload (streams.rs).
        let wake = [Arc::new(Notify::new()), Arc::new(Notify::new())];
        let (policies, policy_watcher) = match config.policy() {
            Some(policy) => {
                let store = PolicyStore::load(policy.dir(), config.intent().default_action())?;
                metrics.set_revocations_loaded(store.current().revocations().len());
                let counted = Arc::clone(&metrics);
                let dir = policy.dir().to_owned();
                let sweepers = wake.clone();
                store.set_reload_hook(Box::new(move |outcome| match outcome {
                    ReloadOutcome::Applied(snapshot) => {
                        tracing::info!(
                            policy.dir = %dir.display(),
                            policy.digest = snapshot.digest(),
                            revocations = snapshot.revocations().len(),
                            "policies reloaded"
                        );
                        counted.record_policy_reload(ReloadResult::Ok);
                        counted.set_revocations_loaded(snapshot.revocations().len());
                        for sweeper in &sweepers {
                            sweeper.notify_one();
                        }
                    }
                    ReloadOutcome::Failed(error) => {
                        tracing::warn!(
                            policy.dir = %dir.display(),
                            %error,
                            "policy reload failed; keeping the last good policies",
                        );
                        counted.record_policy_reload(ReloadResult::Error);
                    }
                }));
                let watcher = watch::policy_folder(&store)?;
                (Some(store), Some(watcher))
            }
            None => (None, None),
        };
        // The collector sees the SVID current at each handshake (`tls.client_svid`).
        let svid_store = Arc::clone(&identity);
        let svid: CurrentSvid = Arc::new(move || {
            svid_store
                .snapshot()
                .map(|snapshot| snapshot.identity().svid().certified_key())
        });
        let tracing = Tracing::new(config.telemetry(), spans, Arc::clone(&metrics), Some(svid))?;
        let drain = shutdown::channel();
        let telemetry = HopTelemetry {
            tracing: tracing.clone(),
            metrics: Arc::clone(&metrics),
            audit: audit.clone(),
        };
        // What the inbound side accepts, the outbound side may relay: one set for both sides,
        // outliving identity snapshots.
        let relay = Arc::new(RelayCache::new(
            config.token().relay_cache(),
            config.token().leeway(),
        ));
        let inbound = match config.inbound() {
            Some(cfg) => {
                let authorizer = Authorizer::new(policies.clone(), cfg.mode(), config.intent())
                    .with_mcp(config.mcp());
                let authenticator = Authenticator::new(
                    config.token(),
                    cfg.require_token(),
                    Arc::clone(&relay),
                    Arc::clone(&metrics),
                );
                let dns_refresh = config
                    .outbound()
                    .map_or(DEFAULT_DNS_REFRESH, OutboundConfig::dns_refresh);
                let [wake, _] = &wake;
                let streams = Streams::new(
                    cfg.streams(),
                    config.token().leeway(),
                    Arc::clone(&identity),
                    Arc::clone(wake),
                );
                let inbound = Inbound::bind(
                    cfg,
                    dns_refresh,
                    Arc::clone(&identity),
                    authenticator,
                    authorizer,
                    telemetry.clone(),
                    streams,
                )
                .map_err(|source| StartupError::Bind {
                    what: "inbound",
                    addr: cfg.listen(),
                    source,
                })?;
                Some(inbound)
            }
            None => None,
        };
        // The JWKS files are read even without an outbound side, so a broken one is reported
        // where it is configured instead of when someone adds the outbound side.
        let origin = OriginVerifier::load(config.token().origin_issuers(), config.token().leeway())
            .map_err(StartupError::Origin)?;
        if config.outbound().is_none() && !origin.is_empty() {
            tracing::warn!("token.origin has no effect without an outbound side");
        }
        let outbound = match config.outbound() {
            Some(cfg) => {
                let delegator = Delegator::new(
                    config.token(),
                    origin,
                    Arc::clone(&relay),
                    Arc::clone(&metrics),
                );
                // The egress check runs only when `policy.outbound` asks for it.
                let egress = config
                    .policy()
                    .filter(|policy| policy.outbound())
                    .and(policies.clone());
                let mode = config
                    .inbound()
                    .map_or(InboundMode::Enforce, InboundConfig::mode);
                // Revocations hold on both sides, with or without the egress check.
                let authorizer = Authorizer::new(egress, mode, config.intent())
                    .with_mcp(config.mcp())
                    .with_revocations(policies.clone());
                let [_, wake] = &wake;
                let defaults = StreamsConfig::default();
                let streams = Streams::new(
                    config.inbound().map_or(&defaults, InboundConfig::streams),
                    config.token().leeway(),
                    Arc::clone(&identity),
                    Arc::clone(wake),
                );
                let outbound = Outbound::bind(
                    cfg,
                    config.inbound(),
                    Arc::clone(&identity),
                    delegator,
                    authorizer,
                    telemetry.clone(),
                    streams,
                )
                .map_err(|source| StartupError::Bind {
                    what: "outbound",
                    addr: cfg.listen(),
                    source,
                })?;
                Some(outbound)
            }
            None => None,
        };
        let mode = match (&policies, config.inbound().map(|i| i.mode())) {
            (None, _) => PolicyMode::IdentityOnly,
            (Some(_), Some(InboundMode::Audit)) => PolicyMode::Audit,
            (Some(_), _) => PolicyMode::Enforced,
        };
        let admin_addr = config.admin().listen();
        let admin = Admin::bind(
            admin_addr,
            Arc::clone(&identity),
            policies.clone(),
            mode,
            Arc::clone(&metrics),
            drain.0.draining(),
            audit.clone(),
        )
        .await
        .map_err(|source| StartupError::Bind {
            what: "admin",
            addr: admin_addr,
            source,
        })?;
        Ok(Self {
            identity,
            policies,
            metrics,
            inbound,
            outbound,
            admin,
            mode,
            tracing,
            drain,
            grace: config.shutdown_grace(),
            _watcher: watcher,
            _policy_watcher: policy_watcher,
        })
    }

    /// The inbound listener's bound address, if there is an inbound side.
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound.as_ref().and_then(|i| i.local_addr().ok())
    }

    /// The outbound listener's bound address, if there is an outbound side.
    pub fn outbound_addr(&self) -> Option<SocketAddr> {
        self.outbound.as_ref().and_then(|o| o.local_addr().ok())
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// The identity store, for a reload on SIGHUP.
    pub fn identity(&self) -> Arc<IdentityStore> {
        Arc::clone(&self.identity)
    }

    /// The policy store, for a reload on SIGHUP (none when running identity-only).
    pub fn policies(&self) -> Option<Arc<PolicyStore>> {
        self.policies.clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish within the grace period. Returns whether they all finished in time.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let (trigger, watch) = self.drain;
        // Withdrawn between startup and now only if the Workload API did it in that instant.
        let id = self
            .identity
            .snapshot()
            .map_or_else(|| "<withdrawn>".to_owned(), |s| s.id().to_string());
        match &self.policies {
            Some(policies) if self.mode == PolicyMode::Audit => {
                let snapshot = policies.current();
                tracing::warn!(
                    spiffe.id = %id,
                    policy = "audit",
                    policy.digest = snapshot.digest(),
                    policy.count = snapshot.policy_ids().len(),
                    "hopgate started: Cedar policies in audit mode: a would-be deny is recorded as audit_deny and let through"
                );
            }
            Some(policies) => {
                let snapshot = policies.current();
                tracing::info!(
                    spiffe.id = %id,
                    policy = "enforced",
                    policy.digest = snapshot.digest(),
                    policy.count = snapshot.policy_ids().len(),
                    "hopgate started: Cedar policies enforced, default deny"
                );
            }
            None => tracing::info!(
                spiffe.id = %id,
                policy = "identity_only",
                "hopgate started: no policy section, every verified peer of an allowed trust domain is admitted"
            ),
        }
        if let Some(addr) = self.inbound.as_ref().and_then(|i| i.local_addr().ok()) {
            tracing::info!(listener = "inbound", addr = %addr, "listening");
        }
        if let Some(addr) = self.outbound.as_ref().and_then(|o| o.local_addr().ok()) {
            tracing::info!(listener = "outbound", addr = %addr, "listening");
        }
        if let Ok(addr) = self.admin.local_addr() {
            tracing::info!(listener = "admin", addr = %addr, "listening");
        }
        if let Some(inbound) = self.inbound {
            tokio::spawn(inbound.serve(watch.clone()));
        }
        if let Some(outbound) = self.outbound {
            tokio::spawn(outbound.serve(watch.clone()));
        }
        let export = self.tracing.start();
        let admin = tokio::spawn(self.admin.serve());
        drop(watch);
        shutdown.await;
        tracing::info!(
            grace_ms = self.grace.as_millis(),
            "shutting down: draining in-flight requests"
        );
        let drained = trigger.drain(self.grace).await;
        admin.abort();
        // Wait for the abort to land, so the admin port is closed when `run` returns.
        let _ = admin.await;
        // Spans still queued are sent, within a bound: a collector that is down must not hold
        // the exit.
        self.tracing.shutdown();
        if let Some(export) = export {
            let _ = tokio::time::timeout(Duration::from_secs(2), export).await;
        }
        if drained {
            tracing::info!("drained");
        } else {
            tracing::warn!("grace period ended with requests still in flight");
        }
        drained
    }
}
