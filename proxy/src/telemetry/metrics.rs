//! The metrics registry: every instrument is created once here. Labels come from closed enums,
//! or, for the `peer` and `dest` of the request counters, from SPIFFE IDs capped at
//! `telemetry.metrics.max_identities` (no per-path label, nothing a caller can grow without
//! bound). Every family lists its series in label order (`family.rs`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::tls::HandshakeFailureReason;

mod family;
mod labels;
mod process;
mod requests;

use family::SortedFamily;
use labels::{
    BuildLabels, DirectionLabels, ReasonLabels, ResultLabels, StreamCloseLabels, TokenReasonLabels,
    UpdateLabels,
};
pub use labels::{DecisionLabel, Direction, IdentitySourceLabel, ReloadResult, UpdateResult};
use process::ProcessMetrics;
pub use requests::PartyLabels;
use requests::RequestSeries;

/// Why a stream was cut (`reason` of `hopgate_streams_closed_total`); every series is at zero
/// until streams are re-authorized.
const STREAM_CLOSE_REASONS: [&str; 5] = ["revoked", "policy", "trust", "token_expired", "max_age"];

/// Every instrument hopgate exports on `/metrics`.
pub struct ProxyMetrics {
    registry: Registry,
    // The request-path instruments are resolved once: the durations indexed by direction, the
    // counters by an interned key (`requests.rs`), so a request formats no label.
    requests: RequestSeries,
    request_duration: [Histogram; Direction::ALL.len()],
    handshake_failures: SortedFamily<ReasonLabels, Counter>,
    svid_expiry: Gauge,
    identity_reloads: SortedFamily<ResultLabels, Counter>,
    identity_updates: SortedFamily<UpdateLabels, Counter>,
    policy_evaluation: Histogram,
    policy_reloads: SortedFamily<ResultLabels, Counter>,
    token_rejections: SortedFamily<TokenReasonLabels, Counter>,
    tokens_minted: Counter,
    spans_dropped: Counter,
    audit_dropped: Counter,
    streams_closed: SortedFamily<StreamCloseLabels, Counter>,
    revocations_loaded: Gauge,
    process: ProcessMetrics,
}

// === impl ProxyMetrics ===

impl ProxyMetrics {
    /// Creates and registers every instrument, with the default identity cap.
    pub fn new() -> Self {
        Self::with_max_identities(hopgate_config::MetricsConfig::DEFAULT_MAX_IDENTITIES)
    }

    /// Creates and registers every instrument; the request counters' `peer` and `dest` take at
    /// most `max_identities` SPIFFE IDs, then `other`.
    pub fn with_max_identities(max_identities: usize) -> Self {
        let mut registry = Registry::with_prefix("hopgate");
        let requests = RequestSeries::new(max_identities);
        registry.register(
            "requests",
            "Requests handled, by direction, decision, status code sent, peer and destination",
            requests.family(),
        );
        let request_duration =
            SortedFamily::<DirectionLabels, Histogram>::with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by direction",
            request_duration.clone(),
        );
        let handshake_failures = SortedFamily::<ReasonLabels, Counter>::new();
        registry.register(
            "tls_handshake_failures",
            "Inbound TLS handshakes that failed, by reason",
            handshake_failures.clone(),
        );
        let svid_expiry = Gauge::default();
        registry.register(
            "svid_expiry_timestamp_seconds",
            "notAfter of the SVID in use, as a Unix timestamp",
            svid_expiry.clone(),
        );
        let identity_reloads = SortedFamily::<ResultLabels, Counter>::new();
        registry.register(
            "identity_reloads",
            "SVID and bundle reloads, by result",
            identity_reloads.clone(),
        );
        let identity_updates = SortedFamily::<UpdateLabels, Counter>::new();
        registry.register(
            "identity_updates",
            "Identity updates (SVID and bundles), by source and result",
            identity_updates.clone(),
        );
        // 1 µs to about 0.5 s: a decision takes 0.7–20 µs, a memoized one under 1 µs.
        let policy_evaluation = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.000_001, 2.0, 20),
        );
        registry.register(
            "policy_evaluation_seconds",
            "Time to build a Cedar request and evaluate it",
            policy_evaluation.clone(),
        );
        let policy_reloads = SortedFamily::<ResultLabels, Counter>::new();
        registry.register(
            "policy_reloads",
            "Policy set reloads, by result",
            policy_reloads.clone(),
        );
        let token_rejections = SortedFamily::<TokenReasonLabels, Counter>::new();
        registry.register(
            "token_rejections",
            "Hop tokens refused, by reason code",
            token_rejections.clone(),
        );
        let tokens_minted = Counter::default();
        registry.register(
            "tokens_minted",
            "Hop tokens minted on the outbound side (a reused token is not counted again)",
            tokens_minted.clone(),
        );
        let spans_dropped = Counter::default();
        registry.register(
            "telemetry_spans_dropped",
            "Spans not exported: the export queue was full, or the collector failed or timed out",
            spans_dropped.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_records_dropped",
            "Audit records lost because the buffer to stdout was full (stdout not read)",
            audit_dropped.clone(),
        );
        let build_info = SortedFamily::<BuildLabels, Gauge>::new();
        registry.register(
            "build_info",
            "hopgate's version and the commit it was built from (HOPGATE_COMMIT at build time); always 1",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: option_env!("HOPGATE_COMMIT").unwrap_or("unknown"),
            })
            .set(1);
        let streams_closed = SortedFamily::<StreamCloseLabels, Counter>::new();
        registry.register(
            "streams_closed",
            "Open streams cut by re-authorization or their age, by reason",
            streams_closed.clone(),
        );
        for reason in STREAM_CLOSE_REASONS {
            let _ = streams_closed.get_or_create(&StreamCloseLabels { reason });
        }
        let revocations_loaded = Gauge::<i64>::default();
        registry.register(
            "revocations_loaded",
            "Revocation entries in the policy snapshot in use",
            revocations_loaded.clone(),
        );
        // Every series whose labels are known exists from the start at zero, so dashboards and
        // alerts see the metric before the first event (a counter that appears out of nowhere
        // has no rate). The request counters' parties are known only when requests come.
        let durations = Direction::ALL
            .map(|direction| request_duration.get_or_create(&DirectionLabels { direction }));
        for reason in HandshakeFailureReason::ALL {
            let _ = handshake_failures.get_or_create(&ReasonLabels { reason });
        }
        for result in [ReloadResult::Ok, ReloadResult::Error] {
            let _ = identity_reloads.get_or_create(&ResultLabels { result });
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
        }
        Self {
            registry,
            requests,
            request_duration: durations,
            handshake_failures,
            svid_expiry,
            identity_reloads,
            identity_updates,
            policy_evaluation,
            policy_reloads,
            token_rejections,
            tokens_minted,
            spans_dropped,
            audit_dropped,
            streams_closed,
            revocations_loaded,
            process: ProcessMetrics::new(),
        }
    }

    /// A request's `peer` (the caller: the verified peer inbound, this workload outbound) and
    /// `dest` (the destination) as the request counters label them; `None` is `unknown`.
    pub fn parties(&self, peer: Option<&str>, dest: Option<&str>) -> PartyLabels {
        self.requests.parties(peer, dest)
    }

    /// Counts one finished request, by the status `code` it was answered with, and records how
    /// long it took.
    pub fn record_request(
        &self,
        direction: Direction,
        decision: DecisionLabel,
        code: u16,
        parties: PartyLabels,
        elapsed: Duration,
    ) {
        self.requests.count(direction, decision, code, parties);
        if let Some(histogram) = self.request_duration.get(direction as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    /// Counts one failed inbound handshake.
    pub fn record_handshake_failure(&self, reason: HandshakeFailureReason) {
        self.handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one SVID/bundle reload.
    pub fn record_identity_reload(&self, result: ReloadResult) {
        self.identity_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Makes `hopgate_identity_updates_total{source}` exist at zero for every result.
    pub fn register_identity_source(&self, source: IdentitySourceLabel) {
        for result in [
            UpdateResult::Ok,
            UpdateResult::Error,
            UpdateResult::Withdrawn,
        ] {
            let _ = self
                .identity_updates
                .get_or_create(&UpdateLabels { source, result });
        }
    }

    /// Counts one identity update.
    pub fn record_identity_update(&self, source: IdentitySourceLabel, result: UpdateResult) {
        self.identity_updates
            .get_or_create(&UpdateLabels { source, result })
            .inc();
    }

    /// Records how long one policy decision took.
    pub fn record_policy_evaluation(&self, elapsed: Duration) {
        self.policy_evaluation.observe(elapsed.as_secs_f64());
    }

    /// Counts one policy reload.
    pub fn record_policy_reload(&self, result: ReloadResult) {
        self.policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Makes `hopgate_token_rejections_total{reason}` exist at zero for every `reason` the
    /// token code can give, before the first rejection (the token module owns the list).
    pub fn register_token_reasons(&self, reasons: impl IntoIterator<Item = &'static str>) {
        for reason in reasons {
            let _ = self.token_rejections.get_or_create(&TokenReasonLabels {
                reason: reason.to_owned(),
            });
        }
    }

    /// Counts one refused hop token; `reason` is one of the stable codes of docs/tokens.md,
    /// "Receiver checks and reason codes", a closed set.
    pub fn record_token_rejection(&self, reason: &'static str) {
        self.token_rejections
            .get_or_create(&TokenReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one freshly minted hop token.
    pub fn record_token_minted(&self) {
        self.tokens_minted.inc();
    }

    /// Counts spans that were not exported.
    pub fn record_spans_dropped(&self, count: usize) {
        self.spans_dropped
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Counts one audit record that could not be kept.
    pub fn record_audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// Counts a stream cut for `reason` (one of `revoked`, `policy`, `trust`, `token_expired`,
    /// `max_age`; any other is not counted).
    pub fn record_stream_closed(&self, reason: &'static str) {
        if STREAM_CLOSE_REASONS.contains(&reason) {
            self.streams_closed
                .get_or_create(&StreamCloseLabels { reason })
                .inc();
        }
    }

    /// Publishes how many revocation entries the policy snapshot in use holds.
    pub fn set_revocations_loaded(&self, count: usize) {
        self.revocations_loaded
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Publishes the notAfter of the SVID now in use.
    pub fn set_svid_expiry(&self, not_after: SystemTime) {
        let secs = not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.svid_expiry.set(secs);
    }

    /// Renders every instrument in the Prometheus text format.
    ///
    /// # Errors
    /// Only if formatting into the string fails, which `String` never does.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        // The `process_*` set is unprefixed, in a registry of its own: one exposition, one EOF.
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        self.process.encode(&mut out)?;
        Ok(out)
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyMetrics").finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    // 50 µs to ~13 s: a sidecar's own overhead sits at the low end, app time at the high end.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 19,
    ))
}

#[cfg(test)]
mod tests;
