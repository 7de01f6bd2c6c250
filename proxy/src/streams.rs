//! Open requests, and how they are cut when what admitted them no longer holds.
//!
//! ```text
//!  admitted request ─▶ Streams::register ─▶ Registration (in the response body) ─▶ dropped: gone
//!                              │
//!  policy reload, revocations, identity update, a deadline ─▶ sweep ─▶ re-decide each open one
//!                                                                   ─▶ cut: RST_STREAM (CANCEL)
//!                                                                      or HTTP/1.1 close
//! ```
//!
//! A request is decided once, when it arrives; a response can stream for minutes. The registry
//! keeps, for every admitted request until its response body ends, the facts it was admitted on
//! (owned copies of the parties, the request facts, the hop token's facts), so it can be decided
//! again whenever one of those facts may have changed:
//! - a new policy snapshot (a policy or `revocations.yaml` change): revocations, then Cedar;
//! - a new identity snapshot (bundles, trust): the peer's chain against the new bundles;
//! - a deadline: the hop token's `exp` (+ `token.leeway`), the peer SVID's notAfter, and
//!   `inbound.streams.max_age`.
//!
//! One sweeper task per side does the re-deciding, off the request path, woken by the policy
//! store's reload hook and otherwise every [`TICK`] while anything is open. A request that no
//! longer passes is cut, and only it: its body yields an error carrying `CANCEL`, which hyper
//! turns into `RST_STREAM(CANCEL)` on HTTP/2 (other streams on the connection go on) and into a
//! connection close mid-body on HTTP/1.1, so the client never takes a cut body for a whole one.
//!
//! Registering costs one map insert under a mutex and the copies of the facts; the registry is
//! bounded by the connections and streams the listener admits
//! (`max_connections × max_concurrent_streams`, the in-flight cap's figure), since every entry
//! is one open HTTP stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hopgate_config::{SpiffeId, StreamsConfig};
use hopgate_policy::{Direction, TokenFacts};
use http::Method;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use rustls_pki_types::CertificateDer;
use tokio::sync::Notify;

use crate::http::BoxError;
use crate::identity::IdentityStore;
use crate::telemetry::traceparent::TraceIdHex;

mod judge;
mod record;
mod sweep;
#[cfg(test)]
mod tests;

pub(crate) use judge::revoked;
pub(crate) use sweep::{Owner, watch};

/// How often open requests are looked at while any is open: deadlines are met within this, and
/// an identity update is noticed within this.
pub(crate) const TICK: Duration = Duration::from_millis(200);

/// Why an open request was cut: the `reason` of its audit record and of
/// `hopgate_streams_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CutReason {
    /// A revocation matches it.
    Revoked = 1,
    /// The policy now denies it.
    Policy = 2,
    /// The peer's SVID no longer verifies: its trust domain or bundle changed, or it expired.
    Trust = 3,
    /// Its hop token's `exp` (+ leeway) passed.
    TokenExpired = 4,
    /// It reached `inbound.streams.max_age`.
    MaxAge = 5,
}

// === impl CutReason ===

impl CutReason {
    /// The reason code.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Revoked => "revoked",
            Self::Policy => "policy",
            Self::Trust => "trust",
            Self::TokenExpired => "token_expired",
            Self::MaxAge => "max_age",
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Revoked),
            2 => Some(Self::Policy),
            3 => Some(Self::Trust),
            4 => Some(Self::TokenExpired),
            5 => Some(Self::MaxAge),
            _ => None,
        }
    }
}

/// The open requests by registration number.
type OpenMap = HashMap<u64, Arc<Open>, foldhash::fast::FixedState>;

/// The registry of one side's open requests.
#[derive(Debug)]
pub(crate) struct Streams {
    reauthorize: bool,
    max_age: Option<Duration>,
    leeway: Duration,
    identity: Arc<IdentityStore>,
    open: Mutex<OpenMap>,
    next_id: AtomicU64,
    /// Set while the sweeper waits for the first registration; a registration then wakes it.
    parked: AtomicBool,
    /// Wakes the sweeper: a registration while it is parked, or a policy reload.
    wake: Arc<Notify>,
}

/// One open request: what it was admitted on, and whether it has been cut.
#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) facts: OpenFacts,
    admitted: Instant,
    /// The earliest of its deadlines, and the reason it would be cut for then.
    deadline: Option<(Instant, CutReason)>,
    cut: AtomicU8,
    waker: AtomicWaker,
    /// The response's status once its head went out; 0 before.
    status: AtomicU16,
    /// The identity generation its peer's chain was last verified under.
    chain_generation: AtomicU64,
    /// Set when it was decided on a policy snapshot older than the one in use once it was
    /// registered: the sweeper decides it again.
    policy_stale: AtomicBool,
}

/// The facts a request was admitted on, owned, so it can be decided again.
#[derive(Debug)]
pub(crate) struct OpenFacts {
    pub(crate) direction: Direction,
    /// The mTLS peer (inbound); `None` outbound, where the caller is this workload.
    pub(crate) peer: Option<SpiffeId>,
    pub(crate) own: SpiffeId,
    pub(crate) dest: SpiffeId,
    pub(crate) method: Method,
    pub(crate) path: Box<str>,
    pub(crate) host: Option<Box<str>>,
    pub(crate) action: Option<Box<str>>,
    pub(crate) intent: Vec<(Box<str>, Box<str>)>,
    pub(crate) mcp: Option<OpenMcp>,
    pub(crate) token: Option<OpenToken>,
    pub(crate) route: Option<Box<str>>,
    pub(crate) client_addr: Option<SocketAddr>,
    pub(crate) trace_id: Option<TraceIdHex>,
    /// The request's decision id: the cut's audit record names the request it ends.
    pub(crate) decision_id: Arc<str>,
    /// The peer's certificate chain, leaf first (inbound), re-verified when bundles change.
    pub(crate) peer_chain: Option<PeerChain>,
}

/// The MCP call of a request on an MCP path.
#[derive(Debug)]
pub(crate) struct OpenMcp {
    pub(crate) method: Box<str>,
    pub(crate) name: Option<Box<str>>,
    pub(crate) protocol_version: Box<str>,
}

/// The hop token a request was admitted with (inbound) or sent with (outbound).
#[derive(Debug)]
pub(crate) struct OpenToken {
    pub(crate) facts: TokenFacts,
    pub(crate) jti: Box<str>,
    pub(crate) hash: [u8; 32],
    pub(crate) prv: Option<Box<str>>,
    pub(crate) depth: usize,
    pub(crate) expires_at: SystemTime,
}

/// An inbound connection's verified chain and its leaf's notAfter.
#[derive(Clone, Debug)]
pub(crate) struct PeerChain {
    pub(crate) certs: Arc<[CertificateDer<'static>]>,
    pub(crate) not_after: SystemTime,
    /// The identity generation it was verified under (see `IdentityStore::generation`).
    pub(crate) generation: u64,
}

/// Keeps a request in the registry; dropping it takes the request out.
#[derive(Debug)]
pub(crate) struct Registration {
    streams: Arc<Streams>,
    id: u64,
    open: Arc<Open>,
}

// === impl Streams ===

impl Streams {
    /// The registry of a side configured by `config` (`inbound.streams`), whose tokens are
    /// given `leeway` past their `exp`. `wake` is notified by the policy store on a reload.
    pub(crate) fn new(
        config: &StreamsConfig,
        leeway: Duration,
        identity: Arc<IdentityStore>,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            reauthorize: config.reauthorize(),
            max_age: config.max_age(),
            leeway,
            identity,
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            wake,
        }
    }

    /// Whether requests are registered at all: with neither re-authorization nor an age limit
    /// there is nothing to cut for, and nothing is kept.
    pub(crate) fn enabled(&self) -> bool {
        self.reauthorize || self.max_age.is_some()
    }

    /// Registers an admitted request until the returned guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, facts: OpenFacts) -> Registration {
        let admitted = Instant::now();
        let deadline = self.deadline(&facts, admitted);
        let chain_generation = facts.peer_chain.as_ref().map_or(0, |c| c.generation);
        let open = Arc::new(Open {
            facts,
            admitted,
            deadline,
            cut: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            status: AtomicU16::new(0),
            chain_generation: AtomicU64::new(chain_generation),
            policy_stale: AtomicBool::new(false),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Arc::clone(&open));
        if self.parked.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
        Registration {
            streams: Arc::clone(self),
            id,
            open,
        }
    }

    /// The earliest moment `facts` stop passing on their own: the token's `exp` + leeway, the
    /// peer SVID's notAfter (both only when re-authorizing), the age limit.
    fn deadline(&self, facts: &OpenFacts, admitted: Instant) -> Option<(Instant, CutReason)> {
        let now = SystemTime::now();
        let after = |at: SystemTime| admitted + at.duration_since(now).unwrap_or(Duration::ZERO);
        let mut earliest: Option<(Instant, CutReason)> = None;
        let mut consider = |at: Instant, reason: CutReason| {
            if earliest.is_none_or(|(first, _)| at < first) {
                earliest = Some((at, reason));
            }
        };
        if self.reauthorize {
            if let Some(token) = &facts.token {
                consider(
                    after(token.expires_at + self.leeway),
                    CutReason::TokenExpired,
                );
            }
            if let Some(chain) = &facts.peer_chain {
                consider(after(chain.not_after), CutReason::Trust);
            }
        }
        if let Some(max_age) = self.max_age {
            consider(admitted + max_age, CutReason::MaxAge);
        }
        earliest
    }

    /// How many requests are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// The open requests not yet cut that `wanted` picks, for a re-decision outside the lock.
    fn pick(&self, wanted: impl Fn(&Open) -> bool) -> Vec<Arc<Open>> {
        self.lock()
            .values()
            .filter(|open| open.cut_reason().is_none() && wanted(open))
            .cloned()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, OpenMap> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Open ===

impl Open {
    /// Why it was cut, once it has been.
    pub(crate) fn cut_reason(&self) -> Option<CutReason> {
        CutReason::from_u8(self.cut.load(Ordering::Acquire))
    }

    /// Cuts it for `reason`, unless it was cut already; wakes its body. Returns whether this
    /// call cut it.
    pub(crate) fn cut(&self, reason: CutReason) -> bool {
        let first = self
            .cut
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.waker.wake();
        }
        first
    }

    /// The response's status, or 0 when it was cut before its head went out.
    pub(crate) fn status(&self) -> u16 {
        self.status.load(Ordering::Relaxed)
    }

    /// How long it has been open.
    pub(crate) fn age(&self) -> Duration {
        self.admitted.elapsed()
    }

    /// Resolves once it is cut: for the wait on a response head.
    pub(crate) fn cut_signal(&self) -> CutSignal<'_> {
        CutSignal { open: self }
    }
}

/// See [`Open::cut_signal`].
#[derive(Debug)]
pub(crate) struct CutSignal<'a> {
    open: &'a Open,
}

impl Future for CutSignal<'_> {
    type Output = CutReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CutReason> {
        if let Some(reason) = self.open.cut_reason() {
            return Poll::Ready(reason);
        }
        self.open.waker.register(cx.waker());
        match self.open.cut_reason() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

// === impl Registration ===

impl Registration {
    /// The open request.
    pub(crate) fn open(&self) -> &Open {
        &self.open
    }

    /// Marks it as decided on a policy snapshot that was replaced before it was registered,
    /// and wakes the sweeper to decide it again.
    pub(crate) fn decided_on_stale_policy(&self) {
        self.open.policy_stale.store(true, Ordering::Release);
        self.streams.wake.notify_one();
    }

    /// Notes the status its response head went out with, for the record of a later cut.
    pub(crate) fn set_status(&self, status: u16) {
        self.open.status.store(status, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.streams.lock().remove(&self.id);
    }
}

pin_project! {
    /// A response body that ends in `RST_STREAM(CANCEL)` (HTTP/2) or a closed connection
    /// (HTTP/1.1) once its request is cut, and takes the request out of the registry when it
    /// is dropped.
    pub(crate) struct Guarded<B> {
        #[pin]
        inner: B,
        registration: Registration,
    }
}

impl<B> Guarded<B> {
    pub(crate) fn new(inner: B, registration: Registration) -> Self {
        Self {
            inner,
            registration,
        }
    }
}

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let open = &this.registration.open;
        if open.cut_reason().is_some() {
            return Poll::Ready(Some(Err(cancel())));
        }
        open.waker.register(cx.waker());
        if open.cut_reason().is_some() {
            return Poll::Ready(Some(Err(cancel())));
        }
        this.inner
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a cut body ends with: hyper resets an HTTP/2 stream with the reason it finds in
/// a body error's causes, here `CANCEL`; an HTTP/1.1 connection is closed mid-body.
fn cancel() -> BoxError {
    Box::new(h2::Error::from(h2::Reason::CANCEL))
}
