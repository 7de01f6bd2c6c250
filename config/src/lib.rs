//! hopgate's configuration: the YAML file format, validated once into typed sections.
//!
//! ```text
//!  YAML text ──parse──▶ document tree ──serde──▶ raw::File ──validate──▶ Config
//!            syntax,                   wrong types,          values, files, cross-checks
//!            duplicate keys            unknown keys
//!                      └──────────── every problem, with its path ────────────┘
//! ```
//!
//! The private `raw` module mirrors the file with `Option` fields and no logic. Each section then
//! becomes its validated type (`InboundConfig`, `TokenConfig`, ...) in exactly one place, where
//! defaults are applied, strings are parsed into addresses, durations and [`SpiffeId`]s,
//! relative paths are resolved against the config file's folder and referenced files are
//! checked to be readable. Validated types have private fields, so runtime code only ever sees
//! checked values.
//!
//! Loading never stops at the first problem: [`ConfigError::Invalid`] holds all of them, each
//! with its dotted path (`outbound.routes[2].identity: ...`), so `hopgate check-config` can
//! show a broken file in one pass.

use std::path::{Path, PathBuf};
use std::time::Duration;
use std::{fs, path};

mod address;
mod admin;
mod check;
mod duration;
mod error;
mod identity;
mod listener;
mod mcp;
mod policy;
mod raw;
mod revocations;
mod size;
pub mod spiffe;
mod streams;
mod telemetry;
#[cfg(test)]
mod test_support;
mod token;
mod yaml;

pub use address::{Address, DnsName, Host, MAX_DNS_NAME_LEN};
pub use admin::AdminConfig;
pub use error::{ConfigError, FieldError};
pub use identity::{
    FileIdentity, IdentityConfig, IdentitySource, SPIFFE_ENDPOINT_SOCKET, WorkloadApi,
};
pub use listener::{
    DEFAULT_DNS_REFRESH, InboundConfig, InboundLimits, InboundMode, InboundTimeouts,
    OutboundConfig, Route,
};
pub use mcp::McpConfig;
pub use policy::{IntentConfig, PolicyConfig};
pub use revocations::{
    MAX_REVOCATIONS, Revocation, RevocationFacts, RevocationKey, Revocations, RevocationsError,
};
pub use spiffe::{MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, SpiffeIdError, TrustDomain};
pub use streams::StreamsConfig;
pub use telemetry::{
    AuditConfig, LogFormat, MetricsConfig, OtlpCompression, OtlpConfig, OtlpProtocol, OtlpTls,
    TelemetryConfig, WhenFull,
};
pub use token::{OriginIssuer, TokenConfig};

use crate::check::Check;

/// A validated hopgate config. Built only by [`load`] and [`from_yaml`].
#[derive(Clone, Debug)]
pub struct Config {
    identity: IdentityConfig,
    inbound: Option<InboundConfig>,
    outbound: Option<OutboundConfig>,
    policy: Option<PolicyConfig>,
    intent: IntentConfig,
    mcp: Option<McpConfig>,
    token: TokenConfig,
    telemetry: TelemetryConfig,
    admin: AdminConfig,
    shutdown_grace: Duration,
}

/// Reads and validates the config file at `path`; relative paths in it resolve against the
/// file's folder.
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Invalid`] with every
/// problem found otherwise (see [`from_yaml`]).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    read(path, from_yaml)
}

/// [`load`], with the environment variables (`$SPIFFE_ENDPOINT_SOCKET`, `$OTEL_*`) read from
/// `env` instead of the process: `|name| std::env::var(name).ok()` is what [`load`] does, and
/// `|_| None` a config that only the file decides.
///
/// # Errors
/// As [`load`].
pub fn load_with_env(
    path: &Path,
    env: impl Fn(&str) -> Option<String> + 'static,
) -> Result<Config, ConfigError> {
    read(path, |text, base_dir| {
        from_yaml_with_env(text, base_dir, env)
    })
}

/// Reads the file at `path` and validates it with `validate`, relative paths against its folder.
fn read(
    path: &Path,
    validate: impl FnOnce(&str, &Path) -> Result<Config, ConfigError>,
) -> Result<Config, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let file = path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = file.parent().unwrap_or(Path::new("/"));
    validate(&text, base_dir)
}

/// [`from_yaml`], with the environment variables read from `env` (see [`load_with_env`]).
///
/// # Errors
/// As [`from_yaml`].
pub fn from_yaml_with_env(
    yaml: &str,
    base_dir: &Path,
    env: impl Fn(&str) -> Option<String> + 'static,
) -> Result<Config, ConfigError> {
    let env = check::Env::Lookup(Box::new(env));
    from_yaml_with(yaml, Check::with_env(absolute_dir(base_dir), env))
}

/// Validates config text; relative paths in it resolve against `base_dir` (made absolute
/// against the current directory when relative).
///
/// # Errors
/// [`ConfigError::Invalid`] with every problem found: YAML syntax (one error with line and
/// column), unknown keys, wrong types, bad values, unreadable files, missing sections.
pub fn from_yaml(yaml: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    from_yaml_with(yaml, Check::new(absolute_dir(base_dir)))
}

/// [`from_yaml`] with the environment `check` reads.
pub(crate) fn from_yaml_with(yaml: &str, mut check: Check) -> Result<Config, ConfigError> {
    let config = yaml::from_str::<raw::File>(yaml, &mut check)
        .and_then(|raw| Config::from_raw(raw, &mut check));
    let mut errors = check.into_errors();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            if errors.is_empty() {
                // INVARIANT: every builder that returns `None` reports why; this is a safety net.
                errors.push(FieldError::new("", "the config could not be built"));
            }
            Err(ConfigError::Invalid(errors))
        }
    }
}

fn absolute_dir(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// Builds an optional section: `Some(None)` when absent, `None` when present but invalid.
fn optional<R, T>(raw: Option<R>, build: impl FnOnce(R) -> Option<T>) -> Option<Option<T>> {
    match raw {
        None => Some(None),
        Some(raw) => build(raw).map(Some),
    }
}

// === impl Config ===

impl Config {
    /// Where this workload's SVID and bundles come from.
    pub fn identity(&self) -> &IdentityConfig {
        &self.identity
    }

    /// The inbound listener, when configured.
    pub fn inbound(&self) -> Option<&InboundConfig> {
        self.inbound.as_ref()
    }

    /// The outbound listener, when configured.
    pub fn outbound(&self) -> Option<&OutboundConfig> {
        self.outbound.as_ref()
    }

    /// Cedar policies; `None` means identity-only mode.
    pub fn policy(&self) -> Option<&PolicyConfig> {
        self.policy.as_ref()
    }

    /// Intent headers → Cedar action and context.
    pub fn intent(&self) -> &IntentConfig {
        &self.intent
    }

    /// Model Context Protocol awareness; `None`: no request is read as MCP.
    pub fn mcp(&self) -> Option<&McpConfig> {
        self.mcp.as_ref()
    }

    /// Hop token settings.
    pub fn token(&self) -> &TokenConfig {
        &self.token
    }

    /// Logs and export.
    pub fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    /// The admin listener.
    pub fn admin(&self) -> &AdminConfig {
        &self.admin
    }

    /// How long a stop waits for in-flight requests (`shutdown_grace`). Default 30s.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }

    fn from_raw(raw: raw::File, check: &mut Check) -> Option<Self> {
        let identity = check
            .required(raw.identity, "identity")
            .and_then(|raw| IdentityConfig::from_raw(raw, check));
        if raw.inbound.is_none()
            && raw.outbound.is_none()
            && !check.dropped_within("inbound")
            && !check.dropped_within("outbound")
        {
            check.error(
                "inbound",
                "at least one of `inbound` and `outbound` is required",
            );
        }
        let inbound = optional(raw.inbound, |raw| {
            InboundConfig::from_raw(raw, identity.as_ref(), check)
        });
        let outbound = optional(raw.outbound, |raw| OutboundConfig::from_raw(raw, check));
        let policy = optional(raw.policy, |raw| PolicyConfig::from_raw(raw, check));
        let intent = IntentConfig::from_raw(raw.intent.unwrap_or_default(), check);
        let mcp = optional(raw.mcp, |raw| McpConfig::from_raw(raw, check));
        let token = TokenConfig::from_raw(raw.token.unwrap_or_default(), intent.as_ref(), check);
        let telemetry = TelemetryConfig::from_raw(raw.telemetry.unwrap_or_default(), check);
        let admin = AdminConfig::from_raw(raw.admin.unwrap_or_default(), check);
        let shutdown_grace = check.duration(
            raw.shutdown_grace,
            "shutdown_grace",
            Duration::from_secs(30),
            Duration::ZERO..=Duration::from_secs(3600),
        );
        let mut config = Self {
            identity: identity?,
            inbound: inbound?,
            outbound: outbound?,
            policy: policy?,
            intent: intent?,
            mcp: mcp?,
            token: token?,
            telemetry: telemetry?,
            admin: admin?,
            shutdown_grace: shutdown_grace?,
        };
        config.check_listeners(check);
        if let Some(outbound) = &mut config.outbound {
            outbound.resolve_token_ttls(&config.token, check);
        }
        Some(config)
    }

    /// Two listeners on one address would fail at bind time, the second one after the first
    /// had started; say so now, naming both. A wildcard address (`0.0.0.0`, `[::]`) takes its
    /// port on every address. Port 0 asks the kernel for a free port, so it never clashes.
    fn check_listeners(&self, check: &mut Check) {
        let listeners = [
            self.inbound
                .as_ref()
                .map(|l| ("inbound.listen", l.listen())),
            self.outbound
                .as_ref()
                .map(|l| ("outbound.listen", l.listen())),
            Some(("admin.listen", self.admin.listen())),
        ];
        let listeners: Vec<_> = listeners.into_iter().flatten().collect();
        for (i, (path, addr)) in listeners.iter().enumerate() {
            let clash = listeners.iter().take(i).find(|(_, earlier)| {
                addr.port() != 0
                    && addr.port() == earlier.port()
                    && (addr.ip() == earlier.ip()
                        || addr.ip().is_unspecified()
                        || earlier.ip().is_unspecified())
            });
            if let Some((earlier_path, earlier)) = clash {
                check.error(
                    *path,
                    format!(
                        "`{addr}` clashes with `{earlier_path}` (`{earlier}`): each listener \
                         needs a port of its own"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
