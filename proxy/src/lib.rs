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

use hopgate_config::{Config, IdentitySource};
use thiserror::Error;

pub mod admin;
pub mod connection;
pub mod http;
pub mod inbound;
pub mod listener;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

use crate::admin::Admin;
use crate::inbound::Inbound;
use crate::telemetry::metrics::ProxyMetrics;
use crate::tls::{IdentityStore, TlsError, WatcherGuard};

/// A sidecar with its identity loaded and its listeners bound.
#[derive(Debug)]
pub struct Proxy {
    identity: Arc<IdentityStore>,
    metrics: Arc<ProxyMetrics>,
    inbound: Option<Inbound>,
    admin: Admin,
    drain: (shutdown::Trigger, shutdown::Watch),
    grace: Duration,
    _watcher: WatcherGuard,
}

/// Why the sidecar could not start.
#[derive(Debug, Error)]
pub enum StartupError {
    /// The SVID or a bundle could not be loaded; a configuration problem.
    #[error("identity: {0}")]
    Identity(#[from] TlsError),
    /// The configuration asks for something this build cannot do yet.
    #[error("{0}")]
    Unsupported(&'static str),
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

// === impl StartupError ===

impl StartupError {
    /// Whether the failure lies in the configuration (exit 78) rather than the runtime (exit 1).
    pub fn is_config(&self) -> bool {
        match self {
            Self::Identity(_) | Self::Unsupported(_) => true,
            Self::Bind { .. } => false,
        }
    }
}

// === impl Proxy ===

impl Proxy {
    /// Loads the identity, starts watching its files and binds every listener.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`StartupError::Identity`] for unreadable or invalid SVID and bundle files,
    /// [`StartupError::Unsupported`] for sections a later hopgate serves (the Workload API
    /// source, the outbound side), [`StartupError::Bind`] when an address is taken.
    pub async fn build(config: &Config) -> Result<Self, StartupError> {
        let files = match config.identity().source() {
            IdentitySource::Files(files) => files,
            IdentitySource::WorkloadApi(_) => {
                return Err(StartupError::Unsupported(
                    "identity.workload_api: the SPIFFE Workload API source is not supported by this build; use identity.svid and identity.bundles",
                ));
            }
        };
        if config.outbound().is_some() {
            return Err(StartupError::Unsupported(
                "outbound: the outbound side is not supported by this build yet",
            ));
        }
        let metrics = Arc::new(ProxyMetrics::new());
        let allowed = config
            .inbound()
            .map(|inbound| inbound.allowed_trust_domains().to_vec())
            .unwrap_or_else(|| config.identity().trust_domains());
        let identity = IdentityStore::load(files, allowed, Arc::clone(&metrics))?;
        let watcher = identity.spawn_watcher()?;
        let drain = shutdown::channel();
        let inbound = match config.inbound() {
            Some(cfg) => Some(
                Inbound::bind(cfg, Arc::clone(&identity), Arc::clone(&metrics)).map_err(
                    |source| StartupError::Bind {
                        what: "inbound",
                        addr: cfg.listen(),
                        source,
                    },
                )?,
            ),
            None => None,
        };
        let admin_addr = config.admin().listen();
        let admin = Admin::bind(
            admin_addr,
            Arc::clone(&identity),
            Arc::clone(&metrics),
            drain.0.draining(),
        )
        .await
        .map_err(|source| StartupError::Bind {
            what: "admin",
            addr: admin_addr,
            source,
        })?;
        Ok(Self {
            identity,
            metrics,
            inbound,
            admin,
            drain,
            grace: config.shutdown_grace(),
            _watcher: watcher,
        })
    }

    /// The inbound listener's bound address, if there is an inbound side.
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound.as_ref().and_then(|i| i.local_addr().ok())
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// The identity store, for a reload on SIGHUP.
    pub fn identity(&self) -> Arc<IdentityStore> {
        Arc::clone(&self.identity)
    }

    /// The metrics registry.
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests
    /// finish within the grace period. Returns whether they all finished in time.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> bool {
        let (trigger, watch) = self.drain;
        let identity = self.identity.current();
        tracing::info!(
            spiffe.id = %identity.svid().id(),
            policy = "identity_only",
            "hopgate started: no policy section, every verified peer of an allowed trust domain is admitted"
        );
        if let Some(addr) = self.inbound.as_ref().and_then(|i| i.local_addr().ok()) {
            tracing::info!(listener = "inbound", addr = %addr, "listening");
        }
        if let Ok(addr) = self.admin.local_addr() {
            tracing::info!(listener = "admin", addr = %addr, "listening");
        }
        if let Some(inbound) = self.inbound {
            tokio::spawn(inbound.serve(watch.clone()));
        }
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
        if drained {
            tracing::info!("drained");
        } else {
            tracing::warn!("grace period ended with requests still in flight");
        }
        drained
    }
}
