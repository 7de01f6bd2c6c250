//! The sweeper: one task per side that decides open requests again when something they were
//! admitted on may have changed, and cuts those that no longer pass.
//!
//! It waits while nothing is open (a registration wakes it), and otherwise wakes on a policy
//! reload (the store's hook notifies it) or every [`TICK`]: deadlines and identity updates are
//! met within a tick, reloads at once. Each sweep picks, under the registry's lock, only the
//! requests that need a look (a deadline passed, a new policy snapshot, a chain verified under an
//! older identity) and decides them outside it, yielding to the runtime every
//! [`BATCH`] requests so a big registry does not hold up new requests.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Instant, SystemTime};

use hopgate_policy::PolicySnapshot;

use super::judge::Judge;
use super::{Open, Streams, TICK, record};
use crate::http::authorize::Authorizer;
use crate::shutdown;
use crate::telemetry::audit::AuditSink;
use crate::telemetry::metrics::ProxyMetrics;

/// What the sweeper needs of the side whose requests it looks after (the hop runner's sides
/// provide it): the decisions, and where cuts are recorded.
pub(crate) trait Owner: Send + Sync {
    /// The side's policy decisions and revocations.
    fn authorizer(&self) -> &Authorizer;
    /// Where a cut is counted and recorded.
    fn records(&self) -> (&ProxyMetrics, &AuditSink);
}

/// How many open requests are decided between two yields to the runtime.
const BATCH: usize = 256;

/// Starts `side`'s sweeper of `streams`, when they are registered at all.
pub(crate) fn watch<S: Owner + 'static>(
    side: &Arc<S>,
    streams: &Arc<Streams>,
    drain: &shutdown::Watch,
) {
    if streams.enabled() {
        tokio::spawn(run(
            Arc::downgrade(side),
            Arc::clone(streams),
            drain.clone(),
        ));
    }
}

/// Runs `side`'s sweeper until shutdown, or until the side is gone.
async fn run<S>(side: Weak<S>, streams: Arc<Streams>, mut drain: shutdown::Watch)
where
    S: Owner + 'static,
{
    // The snapshot the open requests were last decided on: held, so a new one is never taken
    // for it by its address.
    let mut seen = side
        .upgrade()
        .and_then(|side| side.authorizer().policy_snapshot());
    loop {
        if streams.len() == 0 {
            // Registrations take the lock after this store, so they see it and wake the task.
            streams.parked.store(true, Ordering::SeqCst);
            if streams.len() == 0 {
                tokio::select! {
                    () = drain.signaled() => return,
                    () = streams.wake.notified() => {}
                }
            }
            streams.parked.store(false, Ordering::SeqCst);
        } else {
            tokio::select! {
                () = drain.signaled() => return,
                () = streams.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
        let Some(side) = side.upgrade() else {
            return;
        };
        sweep(&*side, &streams, &mut seen).await;
    }
}

/// One look at the open requests: those due are cut for their deadline; with re-authorization,
/// those that may have changed are decided again.
pub(crate) async fn sweep<S: Owner>(
    side: &S,
    streams: &Streams,
    seen: &mut Option<Arc<PolicySnapshot>>,
) {
    let authorizer = side.authorizer();
    let now = Instant::now();
    let policy = authorizer.policy_snapshot();
    let policy_changed = !same(policy.as_ref(), seen.as_ref());
    // The generation first: a chain verified under the snapshot counts for it or a later one.
    let generation = streams.identity.generation();
    let identity = streams.identity.snapshot();
    let reauthorize = streams.reauthorize;
    let wall = SystemTime::now();
    let picked = streams.pick(|open| {
        open.deadlines.due(now, wall).is_some()
            || reauthorize
                && (policy_changed
                    || open.policy_stale.load(Ordering::Acquire)
                    || open.facts.parties.peer_chain.is_some()
                        && open.chain_generation.load(Ordering::Acquire) < generation)
    });
    seen.clone_from(&policy);
    for (n, open) in picked.iter().enumerate() {
        if let Some((reason, decision)) = verdict(open, now, wall, |open| {
            let stale = open.policy_stale.swap(false, Ordering::AcqRel);
            let chain_stale = open.chain_generation.load(Ordering::Acquire) < generation;
            let judge = Judge {
                policy: policy.as_deref().filter(|_| policy_changed || stale),
                cedar: authorizer.has_policies(),
                mode: authorizer.mode(),
                identity: identity.as_deref().filter(|_| chain_stale),
                now: wall,
            };
            let verdict = judge.judge(&open.facts);
            if verdict.is_none() && chain_stale && identity.is_some() {
                open.chain_generation.store(generation, Ordering::Release);
            }
            verdict.map(|v| (v.reason, v.decision))
        }) && open.cut(reason)
        {
            let (metrics, audit) = side.records();
            record::cut(
                open,
                reason,
                decision.as_ref(),
                authorizer.mode(),
                metrics,
                audit,
            );
        }
        if n % BATCH == BATCH - 1 {
            tokio::task::yield_now().await;
        }
    }
}

/// A passed deadline cuts without a decision; otherwise `decide` is asked, when
/// re-authorizing.
fn verdict(
    open: &Open,
    now: Instant,
    wall: SystemTime,
    decide: impl FnOnce(&Open) -> Option<(super::CutReason, Option<hopgate_policy::Decision>)>,
) -> Option<(super::CutReason, Option<hopgate_policy::Decision>)> {
    match open.deadlines.due(now, wall) {
        Some(reason) => Some((reason, None)),
        None => decide(open),
    }
}

/// Whether two optional snapshots are the same one.
fn same(a: Option<&Arc<PolicySnapshot>>, b: Option<&Arc<PolicySnapshot>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}
