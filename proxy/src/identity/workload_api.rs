//! The Workload API source of an identity (`identity.workload_api`): a client of the SPIFFE
//! Workload API (SPIRE's agent, usually), through the `spiffe` crate.
//!
//! ```text
//!  start: connect ─▶ FetchX509SVID ─▶ first response ─▶ Identity ─▶ IdentityStore
//!         (retried with backoff until `initial_timeout`; then a startup error naming the socket)
//!  follow: every response ─▶ IdentityStore::update   (same SVID and bundle checks as files)
//!          PermissionDenied / no SVID ─▶ withdrawn   (nothing published: fail closed)
//!          stream ends or breaks ─▶ reopened with backoff; the last good SVID keeps serving
//! ```
//!
//! The response's first SVID is this workload's identity; `bundle` is its own trust domain's
//! bundle and `federated_bundles` the others, each kept apart so a trust domain is verified
//! only against its own bundle.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hopgate_config::{TrustDomain, WorkloadApi};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use spiffe::{WorkloadApiClient, WorkloadApiError, X509Context};
use tokio::time::Instant;

use crate::identity::{Derived, IdentityError, IdentitySnapshot, IdentityStore};
use crate::telemetry::metrics::ProxyMetrics;
use crate::tls::{Identity, Svid, TrustBundles};

/// The updates of one `FetchX509SVID` stream.
type Updates = Pin<Box<dyn Stream<Item = Result<X509Context, WorkloadApiError>> + Send>>;

/// The task following the Workload API's stream; dropping it stops following.
#[derive(Debug)]
pub struct WorkloadApiTask(tokio::task::JoinHandle<()>);

impl Drop for WorkloadApiTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The first wait between two attempts, doubled after each failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Waits for the Workload API at `api.socket()` to give a usable identity (at most
/// `api.initial_timeout()`), publishes it in a new store, and follows the stream from then on.
/// Must be called inside a tokio runtime.
///
/// # Errors
/// [`IdentityError::WorkloadApi`] naming the socket and the last problem when no usable SVID
/// came in time; for `PermissionDenied`, it tells the operator to check the registration entry.
pub(crate) async fn start(
    api: &WorkloadApi,
    derived: Derived,
    metrics: Arc<ProxyMetrics>,
) -> Result<(Arc<IdentityStore>, WorkloadApiTask), IdentityError> {
    let socket = api.socket().to_owned();
    let timeout = api.initial_timeout();
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let attempt = async {
            let mut updates = open(&socket).await.map_err(Problem::Api)?;
            let first = match updates.next().await {
                Some(Ok(first)) => first,
                Some(Err(error)) => return Err(Problem::Api(error)),
                None => return Err(Problem::Ended),
            };
            let identity = identity_of(&first, &socket).map_err(Problem::Unusable)?;
            let snapshot =
                IdentitySnapshot::build(identity, &derived).map_err(Problem::Unusable)?;
            Ok((updates, snapshot))
        };
        let problem = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok((updates, snapshot))) => {
                tracing::info!(identity.source = "workload_api", identity.socket = %socket, svid.id = %snapshot.id(), "identity from the Workload API");
                let store =
                    IdentityStore::from_workload_api(socket.clone(), snapshot, derived, metrics);
                let task = tokio::spawn(follow(Arc::clone(&store), socket, updates));
                return Ok((store, WorkloadApiTask(task)));
            }
            Ok(Err(problem)) => problem,
            Err(_) => Problem::TimedOut,
        };
        if Instant::now() + backoff >= deadline {
            return Err(problem.at_startup(&socket, timeout));
        }
        tracing::debug!(identity.socket = %socket, problem = %problem.describe(), "no identity from the Workload API yet; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies every update of `updates`, and reopens the stream whenever it ends.
async fn follow(store: Arc<IdentityStore>, socket: String, mut updates: Updates) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        while let Some(update) = updates.next().await {
            match update {
                Ok(context) => {
                    store.update(identity_of(&context, &socket));
                    backoff = FIRST_BACKOFF;
                }
                Err(error) if withdraws(&error) => store.withdraw(&format!(
                    "`{socket}` withdrew this workload's SVID: {error}"
                )),
                Err(WorkloadApiError::Transport(error)) => {
                    tracing::warn!(identity.socket = %socket, %error, "the Workload API stream broke; reopening it, the last good identity keeps serving");
                    break;
                }
                Err(error) => store.update(Err(IdentityError::WorkloadApi(format!(
                    "`{socket}` sent an unusable update: {error}"
                )))),
            }
        }
        updates = loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match open(&socket).await {
                Ok(updates) => break updates,
                Err(error) if withdraws(&error) => store.withdraw(&format!(
                    "`{socket}` withdrew this workload's SVID: {error}"
                )),
                Err(error) => {
                    tracing::warn!(identity.socket = %socket, %error, retry_in = ?backoff, "cannot reopen the Workload API stream; the last good identity keeps serving");
                }
            }
        };
    }
}

/// Connects to `socket` and opens a `FetchX509SVID` stream.
async fn open(socket: &str) -> Result<Updates, WorkloadApiError> {
    let client = WorkloadApiClient::connect_to(socket).await?;
    let updates = client.stream_x509_contexts().await?;
    Ok(Box::pin(updates))
}

/// Whether the Workload API says this workload has no identity (any more): no registration
/// entry selects it, or the response holds no SVID.
fn withdraws(error: &WorkloadApiError) -> bool {
    matches!(
        error,
        WorkloadApiError::PermissionDenied(_)
            | WorkloadApiError::NoIdentityIssued
            | WorkloadApiError::EmptyResponse
            | WorkloadApiError::MissingRequiredField {
                field: "X509SVIDResponse.svids"
            }
    )
}

/// The identity in a response: its first SVID and every bundle, with hopgate's own checks
/// (the same as for files); errors name where in the response the material was.
fn identity_of(context: &X509Context, socket: &str) -> Result<Identity, IdentityError> {
    let svid = context.default_svid().ok_or_else(|| {
        IdentityError::WorkloadApi(format!("`{socket}` sent a response without an SVID"))
    })?;
    let chain = owned_der(svid.cert_chain());
    let key = PrivatePkcs8KeyDer::from(svid.private_key().as_bytes().to_vec());
    let svid = Svid::from_der(
        chain,
        &origin(socket, "svids[0].x509_svid"),
        || Ok(key),
        &origin(socket, "svids[0].x509_svid_key"),
    )?;
    let bundles = context
        .bundle_set()
        .iter()
        .map(|(td, bundle)| {
            let name = td.to_string();
            let td = TrustDomain::parse(&name).map_err(|error| {
                IdentityError::WorkloadApi(format!(
                    "`{socket}` sent a bundle for `{}`, not a trust domain hopgate accepts: {error}",
                    name.escape_debug()
                ))
            })?;
            let certs = owned_der(bundle.authorities());
            Ok((td, certs, origin(socket, &format!("bundle of {name}"))))
        })
        .collect::<Result<Vec<_>, IdentityError>>()?;
    Ok(Identity::new(svid, TrustBundles::from_der(bundles)?))
}

/// The certificates as rustls holds them.
fn owned_der(certs: &[spiffe::Certificate]) -> Vec<CertificateDer<'static>> {
    certs
        .iter()
        .map(|cert| CertificateDer::from(cert.as_bytes().to_vec()))
        .collect()
}

/// Where in a response from `socket` a piece came from, for errors.
fn origin(socket: &str, part: &str) -> PathBuf {
    PathBuf::from(format!("{socket} ({part})"))
}

/// Why an attempt at startup gave no identity.
enum Problem {
    Api(WorkloadApiError),
    Ended,
    Unusable(IdentityError),
    TimedOut,
}

impl Problem {
    fn describe(&self) -> String {
        match self {
            Self::Api(error) => error.to_string(),
            Self::Ended => "the stream ended before its first response".to_owned(),
            Self::Unusable(error) => error.to_string(),
            Self::TimedOut => "no answer".to_owned(),
        }
    }

    fn at_startup(self, socket: &str, timeout: Duration) -> IdentityError {
        let within = format!("{timeout:?}");
        let message = match &self {
            Self::Api(error) if withdraws(error) => format!(
                "`{socket}` issued no SVID to this workload within {within} ({error}); check that a registration entry selects this workload (for SPIRE: `spire-server entry show`, and this process's selectors such as unix:uid or k8s:sa)"
            ),
            Self::Api(WorkloadApiError::Transport(error)) => {
                format!("cannot reach the Workload API at `{socket}` within {within}: {error}")
            }
            Self::Unusable(error) => {
                format!("the SVID from `{socket}` is unusable: {error}")
            }
            _ => format!(
                "no SVID from the Workload API at `{socket}` within {within}: {}",
                self.describe()
            ),
        };
        IdentityError::WorkloadApi(message)
    }
}
