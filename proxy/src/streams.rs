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
//! Most requests end before anything changes, so registering is kept cheap: the request's text
//! is copied into one buffer, the connection's (or route's) parties are shared, no clock is read
//! (deadlines are compared by the sweep), the entry goes into a slab slot under a mutex, and an
//! ended entry is written over by the next request rather than freed. The registry is bounded by
//! the connections and streams the listener admits (`max_connections ×
//! max_concurrent_streams`, the in-flight cap's figure), since every entry is one open HTTP
//! stream.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hopgate_config::StreamsConfig;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::Notify;

use crate::http::BoxError;
use crate::identity::IdentityStore;

mod facts;
mod judge;
mod record;
mod sweep;
#[cfg(test)]
mod tests;

pub(crate) use facts::{OpenFacts, OpenParties, OpenText, OpenToken, PeerChain, Piece};
pub(crate) use judge::revoked;
#[cfg(any(test, feature = "test-util"))]
pub(crate) use sweep::sweep;
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

/// The open requests, each in a slot of its own until it ends. A slab, not a map: requests
/// come and go all the time, and a hash map's deleted entries would have it rehash again and
/// again.
#[derive(Debug, Default)]
struct OpenSlots {
    slots: Vec<Option<Arc<Open>>>,
    /// The empty slots, reused before the slab grows.
    free: Vec<usize>,
    len: usize,
    /// Entries of ended requests, kept to be written over by the next ones: a request's entry
    /// is allocated on one worker thread and often freed on another, which keeps the allocator
    /// off its fast path.
    spare: Vec<Arc<Open>>,
}

/// How many ended entries are kept for reuse.
const SPARE: usize = 64;

impl OpenSlots {
    fn insert(&mut self, open: Arc<Open>) -> usize {
        self.len += 1;
        if let Some(slot) = self.free.pop()
            && let Some(empty) = self.slots.get_mut(slot)
        {
            *empty = Some(open);
            return slot;
        }
        self.slots.push(Some(open));
        self.slots.len() - 1
    }

    fn remove(&mut self, slot: usize) -> Option<Arc<Open>> {
        let taken = self.slots.get_mut(slot)?.take()?;
        self.len -= 1;
        self.free.push(slot);
        Some(taken)
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Open>> {
        self.slots.iter().flatten()
    }
}

/// The registry of one side's open requests.
#[derive(Debug)]
pub(crate) struct Streams {
    reauthorize: bool,
    max_age: Option<Duration>,
    leeway: Duration,
    identity: Arc<IdentityStore>,
    open: Mutex<OpenSlots>,
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
    deadlines: Deadlines,
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

/// Keeps a request in the registry; dropping it takes the request out.
#[derive(Debug)]
pub(crate) struct Registration {
    streams: Arc<Streams>,
    slot: usize,
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
            parked: AtomicBool::new(false),
            wake,
        }
    }

    /// Whether requests are registered at all: with neither re-authorization nor an age limit
    /// there is nothing to cut for, and nothing is kept.
    pub(crate) fn enabled(&self) -> bool {
        self.reauthorize || self.max_age.is_some()
    }

    /// The entry of a request admitted at `admitted`, whose peer's chain (inbound) was last
    /// verified under identity generation `chain_generation`: made where the facts are, so only
    /// a pointer travels on to [`register`](Self::register).
    pub(crate) fn open(
        &self,
        facts: OpenFacts,
        chain_generation: u64,
        admitted: Instant,
    ) -> Arc<Open> {
        let deadlines = self.deadlines(&facts, admitted);
        let open = Open {
            facts,
            admitted,
            deadlines,
            cut: AtomicU8::new(0),
            waker: AtomicWaker::new(),
            status: AtomicU16::new(0),
            chain_generation: AtomicU64::new(chain_generation),
            policy_stale: AtomicBool::new(false),
        };
        let spare = self.lock().spare.pop();
        if let Some(mut spare) = spare
            && let Some(entry) = Arc::get_mut(&mut spare)
        {
            *entry = open;
            return spare;
        }
        Arc::new(open)
    }

    /// Registers `open` until the returned guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, open: Arc<Open>) -> Registration {
        let slot = self.lock().insert(Arc::clone(&open));
        if self.parked.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
        Registration {
            streams: Arc::clone(self),
            slot,
            open,
        }
    }

    /// When `facts` stop passing on their own: the token's `exp` + leeway and the peer SVID's
    /// notAfter (only when re-authorizing), the age limit. No clock is read: the sweep compares.
    fn deadlines(&self, facts: &OpenFacts, admitted: Instant) -> Deadlines {
        let mut wall: Option<(SystemTime, CutReason)> = None;
        if self.reauthorize {
            let token = facts
                .token
                .as_ref()
                .map(|token| (token.expires_at + self.leeway, CutReason::TokenExpired));
            let chain = facts
                .parties
                .peer_chain
                .as_ref()
                .map(|chain| (chain.not_after, CutReason::Trust));
            for deadline in [token, chain].into_iter().flatten() {
                if wall.is_none_or(|(first, _)| deadline.0 < first) {
                    wall = Some(deadline);
                }
            }
        }
        Deadlines {
            wall,
            age: self
                .max_age
                .and_then(|max_age| admitted.checked_add(max_age)),
        }
    }

    /// How many requests are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// The open requests not yet cut that `wanted` picks, for a re-decision outside the lock.
    fn pick(&self, wanted: impl Fn(&Open) -> bool) -> Vec<Arc<Open>> {
        self.lock()
            .iter()
            .filter(|open| open.cut_reason().is_none() && wanted(open))
            .cloned()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, OpenSlots> {
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

/// When an open request stops passing on its own.
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    /// The earliest on the wall clock (the token's `exp` + leeway, the peer SVID's notAfter),
    /// and the reason it would be cut for then.
    wall: Option<(SystemTime, CutReason)>,
    /// `inbound.streams.max_age` past its admission.
    age: Option<Instant>,
}

// === impl Deadlines ===

impl Deadlines {
    /// The reason it is cut for at `now` (`wall` on the wall clock), if a deadline has passed:
    /// the one that passed first, when both have.
    fn due(&self, now: Instant, wall: SystemTime) -> Option<CutReason> {
        let by_wall = self
            .wall
            .and_then(|(at, reason)| Some((wall.duration_since(at).ok()?, reason)));
        let by_age = self
            .age
            .and_then(|at| Some((now.checked_duration_since(at)?, CutReason::MaxAge)));
        match (by_wall, by_age) {
            (Some(wall), Some(age)) => Some(if wall.0 >= age.0 { wall.1 } else { age.1 }),
            (wall, age) => wall.or(age).map(|(_, reason)| reason),
        }
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
        // The waker would keep the request's task alive while the entry waits to be reused.
        drop(self.open.waker.take());
        let mut slots = self.streams.lock();
        drop(slots.remove(self.slot));
        // Kept only when nothing else holds it (a sweep may): the next `open` writes over it.
        if slots.spare.len() < SPARE && Arc::strong_count(&self.open) == 1 {
            slots.spare.push(Arc::clone(&self.open));
        }
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
        let frame = this.inner.poll_frame(cx);
        if frame.is_pending() {
            // Waiting on the app: a cut must wake the body too. Registered only now, so a body
            // whose frames are ready never pays for it; checked again after, so a cut between
            // the two is not missed.
            open.waker.register(cx.waker());
            if open.cut_reason().is_some() {
                return Poll::Ready(Some(Err(cancel())));
            }
        }
        frame.map(|frame| frame.map(|frame| frame.map_err(Into::into)))
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
