//! The metrics registry: every instrument is created once here, with labels from closed enums,
//! so no label can take an unbounded set of values (no per-path or per-peer labels).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::tls::HandshakeFailureReason;

mod process;

use process::ProcessMetrics;

/// Why a stream was cut (`reason` of `hopgate_streams_closed_total`); every series is at zero
/// until streams are re-authorized.
const STREAM_CLOSE_REASONS: [&str; 5] = ["revoked", "policy", "trust", "token_expired", "max_age"];

/// Which side of the hop a request was handled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A call from a peer sidecar to the local app.
    Inbound,
    /// A call from the local app to a peer sidecar.
    Outbound,
}

/// What became of a request, as the `decision` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecisionLabel {
    /// Admitted and forwarded.
    Allow,
    /// Refused by policy.
    Deny,
    /// Refused by policy but let through because the listener runs in audit mode.
    AuditDeny,
    /// Refused before policy: a missing or invalid hop token.
    Unauthenticated,
}

/// Whether a reload applied or was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadResult {
    /// The new material was valid and is now in use.
    Ok,
    /// The new material was invalid; the last good one stays in use.
    Error,
}

/// Where an identity update came from (`source` of `hopgate_identity_updates_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentitySourceLabel {
    /// SVID and bundle files.
    Files,
    /// The SPIFFE Workload API.
    WorkloadApi,
}

/// How an identity update went (`result` of `hopgate_identity_updates_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpdateResult {
    /// Applied: the new SVID and bundles are in use.
    Ok,
    /// Refused: the last good identity stays in use.
    Error,
    /// The SVID was withdrawn or has expired: no identity is in use, new handshakes fail.
    Withdrawn,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpdateLabels {
    source: IdentitySourceLabel,
    result: UpdateResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    decision: DecisionLabel,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: HandshakeFailureReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: ReloadResult,
}

/// Every instrument hopgate exports on `/metrics`.
pub struct ProxyMetrics {
    registry: Registry,
    // The request-path instruments are resolved once, indexed by their closed label enums, so a
    // request never hashes a label set or takes the family's lock.
    requests: [[Counter; DecisionLabel::ALL.len()]; Direction::ALL.len()],
    request_duration: [Histogram; Direction::ALL.len()],
    handshake_failures: Family<ReasonLabels, Counter>,
    svid_expiry: Gauge,
    identity_reloads: Family<ResultLabels, Counter>,
    identity_updates: Family<UpdateLabels, Counter>,
    policy_evaluation: Histogram,
    policy_reloads: Family<ResultLabels, Counter>,
    token_rejections: Family<TokenReasonLabels, Counter>,
    tokens_minted: Counter,
    spans_dropped: Counter,
    audit_dropped: Counter,
    streams_closed: Family<StreamCloseLabels, Counter>,
    revocations_loaded: Gauge,
    process: ProcessMetrics,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamCloseLabels {
    reason: &'static str,
}

// === impl Direction ===

impl Direction {
    /// Every value, in discriminant order.
    pub const ALL: [Self; 2] = [Self::Inbound, Self::Outbound];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

// === impl DecisionLabel ===

impl DecisionLabel {
    /// Every value, in discriminant order.
    pub const ALL: [Self; 4] = [
        Self::Allow,
        Self::Deny,
        Self::AuditDeny,
        Self::Unauthenticated,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::AuditDeny => "audit_deny",
            Self::Unauthenticated => "unauthenticated",
        }
    }
}

impl EncodeLabelValue for DecisionLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

// === impl HandshakeFailureReason ===

impl EncodeLabelValue for HandshakeFailureReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

// === impl ReloadResult ===

impl ReloadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

impl EncodeLabelValue for ReloadResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

impl IdentitySourceLabel {
    /// The label value, as `/identity` shows it too.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::WorkloadApi => "workload_api",
        }
    }
}

impl EncodeLabelValue for IdentitySourceLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

impl UpdateResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Withdrawn => "withdrawn",
        }
    }
}

impl EncodeLabelValue for UpdateResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

// === impl ProxyMetrics ===

impl ProxyMetrics {
    /// Creates and registers every instrument.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hopgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests handled, by direction and decision",
            requests.clone(),
        );
        let request_duration =
            Family::<DirectionLabels, Histogram>::new_with_constructor(duration_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by direction",
            request_duration.clone(),
        );
        let handshake_failures = Family::<ReasonLabels, Counter>::default();
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
        let identity_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "identity_reloads",
            "SVID and bundle reloads, by result",
            identity_reloads.clone(),
        );
        let identity_updates = Family::<UpdateLabels, Counter>::default();
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
        let policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy set reloads, by result",
            policy_reloads.clone(),
        );
        let token_rejections = Family::<TokenReasonLabels, Counter>::default();
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
        let build_info = Family::<BuildLabels, Gauge>::default();
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
        let streams_closed = Family::<StreamCloseLabels, Counter>::default();
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
        // Every series exists from the start at zero, so dashboards and alerts see the metric
        // before the first event (a counter that appears out of nowhere has no rate).
        let request_counters = Direction::ALL.map(|direction| {
            DecisionLabel::ALL.map(|decision| {
                requests
                    .get_or_create(&RequestLabels {
                        direction,
                        decision,
                    })
                    .clone()
            })
        });
        let durations = Direction::ALL.map(|direction| {
            request_duration
                .get_or_create(&DirectionLabels { direction })
                .clone()
        });
        for reason in HandshakeFailureReason::ALL {
            let _ = handshake_failures.get_or_create(&ReasonLabels { reason });
        }
        for result in [ReloadResult::Ok, ReloadResult::Error] {
            let _ = identity_reloads.get_or_create(&ResultLabels { result });
            let _ = policy_reloads.get_or_create(&ResultLabels { result });
        }
        Self {
            registry,
            requests: request_counters,
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

    /// Counts one finished request and records how long it took.
    pub fn record_request(&self, direction: Direction, decision: DecisionLabel, elapsed: Duration) {
        let d = direction as usize;
        if let Some(counter) = self
            .requests
            .get(d)
            .and_then(|row| row.get(decision as usize))
        {
            counter.inc();
        }
        if let Some(histogram) = self.request_duration.get(d) {
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
