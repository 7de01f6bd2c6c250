//! The label values and label sets of the metrics: closed enums, encoded without allocating,
//! and ordered, so a family's series come out in the same order on every scrape.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::tls::HandshakeFailureReason;

/// Which side of the hop a request was handled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// A call from a peer sidecar to the local app.
    Inbound,
    /// A call from the local app to a peer sidecar.
    Outbound,
}

/// What became of a request, as the `decision` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReloadResult {
    /// The new material was valid and is now in use.
    Ok,
    /// The new material was invalid; the last good one stays in use.
    Error,
}

/// Where an identity update came from (`source` of `hopgate_identity_updates_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentitySourceLabel {
    /// SVID and bundle files.
    Files,
    /// The SPIFFE Workload API.
    WorkloadApi,
}

/// How an identity update went (`result` of `hopgate_identity_updates_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UpdateResult {
    /// Applied: the new SVID and bundles are in use.
    Ok,
    /// Refused: the last good identity stays in use.
    Error,
    /// The SVID was withdrawn or has expired: no identity is in use, new handshakes fail.
    Withdrawn,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct UpdateLabels {
    pub(super) source: IdentitySourceLabel,
    pub(super) result: UpdateResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) direction: Direction,
    pub(super) decision: DecisionLabel,
    pub(super) code: u16,
    pub(super) peer: IdentityLabel,
    pub(super) dest: IdentityLabel,
}

/// A `peer` or `dest` label value: a SPIFFE ID, `other` past the cap, or `unknown`. Shared with
/// the interner, so a new series copies no string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct IdentityLabel(pub(super) Arc<str>);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct DirectionLabels {
    pub(super) direction: Direction,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: HandshakeFailureReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub(super) result: ReloadResult,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct TokenReasonLabels {
    pub(super) reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
    pub(super) commit: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(super) struct StreamCloseLabels {
    pub(super) reason: &'static str,
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

impl EncodeLabelValue for IdentityLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        fmt::Write::write_str(encoder, &self.0)
    }
}
