//! `telemetry`: log format, service name and OpenTelemetry export.

use std::fmt;

use serde::Deserialize;

use crate::check::Check;
use crate::raw;

mod env;
mod otlp;

pub use otlp::{OtlpCompression, OtlpConfig, OtlpProtocol, OtlpTls};

/// Logs and export (`telemetry`).
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    service_name: String,
    log_format: LogFormat,
    otlp: Option<OtlpConfig>,
    resource_attributes: Vec<(String, String)>,
    audit: AuditConfig,
    metrics: MetricsConfig,
}

/// The `/metrics` exposition (`telemetry.metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    max_identities: usize,
}

/// How audit records reach stdout (`telemetry.audit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    sign: bool,
    when_full: WhenFull,
    buffer: usize,
}

/// What a full audit buffer does (`telemetry.audit.when_full`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    /// Answer new requests 503 `audit_unavailable` until the buffer drains: nothing is served
    /// that is not recorded.
    #[default]
    Refuse,
    /// Serve them, and count the records that could not be kept.
    Drop,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object a line.
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

// === impl TelemetryConfig ===

impl TelemetryConfig {
    /// `service.name` of spans and logs: the file's, else `$OTEL_SERVICE_NAME`, else the
    /// `service.name` of `$OTEL_RESOURCE_ATTRIBUTES`, else `hopgate`.
    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    /// The other attributes of `$OTEL_RESOURCE_ATTRIBUTES` (`service.name` and
    /// `service.version` excepted: hopgate sets those), in the order given, each key once.
    pub fn resource_attributes(&self) -> &[(String, String)] {
        &self.resource_attributes
    }

    /// How log lines are written. Default [`LogFormat::Json`].
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// Where spans are exported; `None` for no export.
    pub fn otlp(&self) -> Option<&OtlpConfig> {
        self.otlp.as_ref()
    }

    /// How audit records reach stdout.
    pub fn audit(&self) -> &AuditConfig {
        &self.audit
    }

    /// The `/metrics` exposition.
    pub fn metrics(&self) -> MetricsConfig {
        self.metrics
    }

    pub(crate) fn from_raw(raw: raw::Telemetry, check: &mut Check) -> Option<Self> {
        let attributes = env::resource_attributes(check);
        let (service_name, path) = env::service_name(
            raw.service_name,
            attributes.as_deref().unwrap_or_default(),
            check,
        )
        .unwrap_or_else(|| ("hopgate".to_owned(), "telemetry.service_name".to_owned()));
        let service_name = if service_name.trim().is_empty() {
            check.error(path, "is empty");
            None
        } else if service_name.chars().any(char::is_control) {
            let shown = service_name.escape_debug();
            check.error(path, format!("`{shown}` holds a control character"));
            None
        } else {
            Some(service_name)
        };
        let otlp = OtlpConfig::from_raw(raw.otlp, check);
        let audit = AuditConfig::from_raw(raw.audit.unwrap_or_default(), check);
        let metrics = MetricsConfig::from_raw(raw.metrics.unwrap_or_default(), check);
        Some(Self {
            service_name: service_name?,
            log_format: raw.log_format.unwrap_or_default(),
            otlp: otlp?,
            resource_attributes: own_attributes(attributes?),
            audit: audit?,
            metrics: metrics?,
        })
    }
}

/// The resource attributes hopgate does not set itself, each key once (the last wins).
fn own_attributes(attributes: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut own: Vec<(String, String)> = Vec::new();
    for (key, value) in attributes {
        if key == "service.name" || key == "service.version" {
            continue;
        }
        own.retain(|(k, _)| *k != key);
        own.push((key, value));
    }
    own
}

// === impl AuditConfig ===

impl AuditConfig {
    /// The default buffer: about 1,700 records of 600 bytes.
    pub const DEFAULT_BUFFER: usize = 1 << 20;

    /// The smallest buffer: a few records.
    pub const MIN_BUFFER: usize = 4 << 10;

    /// Whether the audit log is sealed in signed batches. Default `false`.
    pub fn sign(&self) -> bool {
        self.sign
    }

    /// What a full buffer does. Default [`WhenFull::Refuse`].
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// The bytes of records and log lines that may wait for stdout. Default 1 MiB.
    pub fn buffer(&self) -> usize {
        self.buffer
    }

    fn from_raw(raw: raw::Audit, check: &mut Check) -> Option<Self> {
        let path = "telemetry.audit.buffer";
        let buffer = match raw.buffer.as_deref().map(crate::size::parse) {
            None => Some(Self::DEFAULT_BUFFER),
            Some(Ok(size)) if size >= Self::MIN_BUFFER => Some(size),
            Some(Ok(_)) => {
                check.error(path, "must be at least `4KiB`");
                None
            }
            Some(Err(e)) => {
                check.error(path, e.to_string());
                None
            }
        };
        Some(Self {
            sign: raw.sign.unwrap_or(false),
            when_full: raw.when_full.unwrap_or_default(),
            buffer: buffer?,
        })
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sign: false,
            when_full: WhenFull::Refuse,
            buffer: Self::DEFAULT_BUFFER,
        }
    }
}

// === impl MetricsConfig ===

impl MetricsConfig {
    /// The default cap on distinct `peer`/`dest` label values.
    pub const DEFAULT_MAX_IDENTITIES: usize = 200;

    /// The largest cap: past it a scrape grows without bound in practice.
    pub const MAX_IDENTITIES_LIMIT: usize = 10_000;

    /// How many distinct SPIFFE IDs the `peer` and `dest` labels of `hopgate_requests_total`
    /// take; the rest are counted as `other`. Default 200; 0 counts every identity as `other`.
    pub fn max_identities(&self) -> usize {
        self.max_identities
    }

    fn from_raw(raw: raw::Metrics, check: &mut Check) -> Option<Self> {
        match raw.max_identities {
            None => Some(Self::default()),
            Some(n) if n <= Self::MAX_IDENTITIES_LIMIT => Some(Self { max_identities: n }),
            Some(n) => {
                check.error(
                    "telemetry.metrics.max_identities",
                    format!("`{n}` is over the limit of {}", Self::MAX_IDENTITIES_LIMIT),
                );
                None
            }
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_identities: Self::DEFAULT_MAX_IDENTITIES,
        }
    }
}

// === impl WhenFull ===

impl fmt::Display for WhenFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Refuse => "refuse",
            Self::Drop => "drop",
        })
    }
}

// === impl LogFormat ===

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Json => "json",
            Self::Text => "text",
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{Fixture, MINIMAL};
    use crate::{AuditConfig, LogFormat, MetricsConfig, WhenFull};

    #[test]
    fn audit_defaults_to_refusing_when_a_one_mebibyte_buffer_is_full() {
        let config = Fixture::new().load(MINIMAL);
        assert_eq!(config.telemetry().audit(), &AuditConfig::default());
        assert_eq!(config.telemetry().audit().when_full(), WhenFull::Refuse);
        assert_eq!(config.telemetry().audit().buffer(), 1 << 20);
        assert!(!config.telemetry().audit().sign());
    }

    #[test]
    fn audit_buffer_and_when_full_are_read_and_checked() {
        let fx = Fixture::new();
        let config = fx.load(&format!(
            "{MINIMAL}telemetry:\n  audit: {{ when_full: drop, buffer: 64KiB }}\n"
        ));
        assert_eq!(config.telemetry().audit().when_full(), WhenFull::Drop);
        assert_eq!(config.telemetry().audit().buffer(), 65_536);
        assert_eq!(WhenFull::Drop.to_string(), "drop");
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}telemetry:\n  audit: {{ when_full: block, buffer: 1MB }}\n"
            )),
            [
                "telemetry.audit.when_full: `block` is not one of `refuse` or `drop`",
                "telemetry.audit.buffer: `1MB` is not a size; expected a whole number followed by `B`, `KiB`, `MiB` or `GiB`, such as `64KiB` or `1MiB`",
            ]
        );
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}telemetry: {{ audit: {{ buffer: 1KiB }} }}\n"
            )),
            ["telemetry.audit.buffer: must be at least `4KiB`"]
        );
    }

    #[test]
    fn metrics_identity_cap_defaults_to_two_hundred_and_is_bounded() {
        let fx = Fixture::new();
        let config = fx.load(MINIMAL);
        assert_eq!(config.telemetry().metrics(), MetricsConfig::default());
        assert_eq!(config.telemetry().metrics().max_identities(), 200);
        let config = fx.load(&format!(
            "{MINIMAL}telemetry: {{ metrics: {{ max_identities: 0 }} }}\n"
        ));
        assert_eq!(config.telemetry().metrics().max_identities(), 0);
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}telemetry: {{ metrics: {{ max_identities: 10001 }} }}\n"
            )),
            ["telemetry.metrics.max_identities: `10001` is over the limit of 10000"]
        );
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}telemetry: {{ metrics: {{ max_identities: -1 }} }}\n"
            ))
            .len(),
            1
        );
    }

    #[test]
    fn telemetry_defaults_to_json_logs_and_no_export() {
        let config = Fixture::new().load(MINIMAL);
        assert_eq!(config.telemetry().service_name(), "hopgate");
        assert_eq!(config.telemetry().log_format(), LogFormat::Json);
        assert!(config.telemetry().otlp().is_none());
    }
}
