//! `telemetry`: log format, service name and OpenTelemetry export.

use std::fmt;

use serde::Deserialize;

use crate::check::Check;
use crate::raw;

/// Logs and export (`telemetry`).
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    service_name: String,
    log_format: LogFormat,
    otlp: Option<OtlpConfig>,
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

/// OpenTelemetry export (`telemetry.otlp`).
#[derive(Clone, Debug)]
pub struct OtlpConfig {
    endpoint: String,
    protocol: OtlpProtocol,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP over gRPC (usually port 4317).
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (usually port 4318).
    Http,
}

// === impl TelemetryConfig ===

impl TelemetryConfig {
    /// `service.name` of spans and logs. Default `hopgate`.
    pub fn service_name(&self) -> &str {
        &self.service_name
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
        let service_name = raw.service_name.unwrap_or_else(|| "hopgate".to_owned());
        let service_name = if service_name.trim().is_empty() {
            check.error("telemetry.service_name", "is empty");
            None
        } else if service_name.chars().any(char::is_control) {
            let shown = service_name.escape_debug();
            check.error(
                "telemetry.service_name",
                format!("`{shown}` holds a control character"),
            );
            None
        } else {
            Some(service_name)
        };
        let otlp = match raw.otlp {
            None => Some(None),
            Some(otlp) => OtlpConfig::from_raw(otlp, check).map(Some),
        };
        let audit = AuditConfig::from_raw(raw.audit.unwrap_or_default(), check);
        let metrics = MetricsConfig::from_raw(raw.metrics.unwrap_or_default(), check);
        Some(Self {
            service_name: service_name?,
            log_format: raw.log_format.unwrap_or_default(),
            otlp: otlp?,
            audit: audit?,
            metrics: metrics?,
        })
    }
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

// === impl OtlpConfig ===

impl OtlpConfig {
    /// The collector URL, starting with `http://` or `https://`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The transport. Default [`OtlpProtocol::Grpc`].
    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    fn from_raw(raw: raw::Otlp, check: &mut Check) -> Option<Self> {
        let path = "telemetry.otlp.endpoint";
        let endpoint = check.required(raw.endpoint, path)?;
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        let shown = endpoint.escape_debug();
        let problem = match rest {
            None => format!("`{shown}` must start with `http://` or `https://`"),
            Some("") => format!("`{shown}` has no host"),
            Some(rest) if rest.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                format!("`{shown}` holds whitespace or a control character")
            }
            Some(_) => {
                return Some(Self {
                    endpoint,
                    protocol: raw.protocol.unwrap_or_default(),
                });
            }
        };
        check.error(path, problem);
        None
    }
}

// === impl OtlpProtocol ===

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Grpc => "grpc",
            Self::Http => "http",
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{Fixture, MINIMAL};
    use crate::{AuditConfig, LogFormat, MetricsConfig, OtlpProtocol, WhenFull};

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

    #[test]
    fn otlp_protocol_defaults_to_grpc() {
        let fx = Fixture::new();
        let config = fx.load(&format!(
            "{MINIMAL}telemetry:\n  service_name: inference sidecar\n  log_format: text\n  otlp: {{ endpoint: 'http://127.0.0.1:4317' }}\n"
        ));
        let telemetry = config.telemetry();
        assert_eq!(telemetry.service_name(), "inference sidecar");
        assert_eq!(telemetry.log_format(), LogFormat::Text);
        let otlp = telemetry.otlp().unwrap();
        assert_eq!(otlp.endpoint(), "http://127.0.0.1:4317");
        assert_eq!(otlp.protocol(), OtlpProtocol::Grpc);
        let http = fx.load(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'https://c:4318', protocol: http }} }}\n"
        ));
        assert_eq!(
            http.telemetry().otlp().unwrap().protocol(),
            OtlpProtocol::Http
        );
        assert_eq!(OtlpProtocol::Http.to_string(), "http");
        assert_eq!(LogFormat::Text.to_string(), "text");
    }

    #[test]
    fn closed_sets_and_endpoints_are_checked() {
        let fx = Fixture::new();
        let errors = fx.errors(&format!(
            "{MINIMAL}telemetry:\n  service_name: ''\n  log_format: yaml\n  otlp: {{ endpoint: 'grpc://c:4317', protocol: thrift }}\n"
        ));
        assert_eq!(
            errors,
            [
                "telemetry.log_format: `yaml` is not one of `json` or `text`",
                "telemetry.otlp.protocol: `thrift` is not one of `grpc` or `http`",
                "telemetry.service_name: is empty",
                "telemetry.otlp.endpoint: `grpc://c:4317` must start with `http://` or `https://`",
            ]
        );
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'http://' }} }}\n"
            )),
            ["telemetry.otlp.endpoint: `http://` has no host"]
        );
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}telemetry: {{ otlp: {{ protocol: http }} }}\n"
            )),
            ["telemetry.otlp.endpoint: is required"]
        );
    }
}
