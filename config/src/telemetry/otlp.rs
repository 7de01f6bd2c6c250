//! `telemetry.otlp`: where spans are exported, how, and with what. Each key the file leaves
//! unset is taken from its standard `OTEL_EXPORTER_OTLP_*` variable (`env.rs`); the file wins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::env;
use crate::check::Check;
use crate::raw;

/// OpenTelemetry export (`telemetry.otlp`, and the `OTEL_EXPORTER_OTLP_*` variables).
///
/// `Debug` shows header names, never their values: they may be credentials.
#[derive(Clone)]
pub struct OtlpConfig {
    endpoint: String,
    /// The endpoint came from `$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: over HTTP it is the full
    /// URL, no `/v1/traces` appended.
    full_url: bool,
    protocol: OtlpProtocol,
    tls: Option<OtlpTls>,
    headers: Vec<(String, String)>,
    compression: OtlpCompression,
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

/// TLS to an `https://` collector (`telemetry.otlp.tls`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpTls {
    ca: PathBuf,
    client_svid: bool,
}

/// How export bodies are compressed (`telemetry.otlp.compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// As they are.
    #[default]
    None,
    /// gzip: HTTP `Content-Encoding: gzip`, gRPC `grpc-encoding: gzip`.
    Gzip,
}

/// Headers hopgate sets itself on an export, which the configuration may not replace.
const RESERVED_HEADERS: [&str; 12] = [
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "grpc-encoding",
    "grpc-timeout",
];

// === impl OtlpConfig ===

impl OtlpConfig {
    /// The collector URL, starting with `http://` or `https://`, as configured.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where OTLP/HTTP posts spans: `{endpoint}/v1/traces`, or the endpoint as it is when it
    /// came from `$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (which names the full URL).
    pub fn http_url(&self) -> String {
        if self.full_url {
            self.endpoint.clone()
        } else {
            format!("{}/v1/traces", self.endpoint.trim_end_matches('/'))
        }
    }

    /// The transport. Default [`OtlpProtocol::Grpc`].
    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    /// TLS settings; `Some` exactly when the endpoint is `https://`.
    pub fn tls(&self) -> Option<&OtlpTls> {
        self.tls.as_ref()
    }

    /// Extra headers for every export (gRPC: metadata): lowercase names, in name order, each
    /// once. Values may be credentials: never log them.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Body compression. Default [`OtlpCompression::None`].
    pub fn compression(&self) -> OtlpCompression {
        self.compression
    }

    /// `Some(None)` for no export (no section and no endpoint variable), `None` when invalid.
    pub(crate) fn from_raw(raw: Option<raw::Otlp>, check: &mut Check) -> Option<Option<Self>> {
        let in_file = raw.is_some();
        let raw = raw.unwrap_or_default();
        let (endpoint, path, full_url) = match raw.endpoint {
            Some(endpoint) => (endpoint, "telemetry.otlp.endpoint".to_owned(), false),
            None => match env::first_of(check, [env::TRACES_ENDPOINT, env::ENDPOINT]) {
                Some((endpoint, var)) => (endpoint, env::path(var), var == env::TRACES_ENDPOINT),
                None if in_file => {
                    check.error(
                        "telemetry.otlp.endpoint",
                        format!(
                            "is required (or set ${} or ${})",
                            env::ENDPOINT,
                            env::TRACES_ENDPOINT
                        ),
                    );
                    return None;
                }
                None => return Some(None),
            },
        };
        let endpoint = checked_endpoint(endpoint, &path, check);
        let protocol = protocol(raw.protocol, check);
        let compression = compression(raw.compression, check);
        let headers = headers(raw.headers, check);
        let tls = match &endpoint {
            Some(endpoint) => tls(raw.tls, endpoint, check),
            None => None,
        };
        Some(Some(Self {
            endpoint: endpoint?,
            full_url,
            protocol: protocol?,
            tls: tls?,
            headers: headers?,
            compression: compression?,
        }))
    }
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("full_url", &self.full_url)
            .field("protocol", &self.protocol)
            .field("tls", &self.tls)
            .field("headers", &headers)
            .field("compression", &self.compression)
            .finish()
    }
}

/// An `http://` or `https://` URL with a host, that parses as a URI.
fn checked_endpoint(endpoint: String, path: &str, check: &mut Check) -> Option<String> {
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
        Some(_) => match endpoint.parse::<http::Uri>() {
            Ok(uri) if uri.host().is_some_and(|h| !h.is_empty()) => return Some(endpoint),
            Ok(_) => format!("`{shown}` has no host"),
            Err(e) => format!("`{shown}` is not a URL: {e}"),
        },
    };
    check.error(path, problem);
    None
}

fn protocol(file: Option<OtlpProtocol>, check: &mut Check) -> Option<OtlpProtocol> {
    if let Some(protocol) = file {
        return Some(protocol);
    }
    let Some((value, var)) = env::first_of(check, [env::TRACES_PROTOCOL, env::PROTOCOL]) else {
        return Some(OtlpProtocol::default());
    };
    let shown = value.escape_debug();
    match value.as_str() {
        "grpc" => Some(OtlpProtocol::Grpc),
        "http/protobuf" => Some(OtlpProtocol::Http),
        "http/json" => {
            check.error(
                env::path(var),
                "`http/json` is not supported: hopgate exports protobuf; use `http/protobuf` or `grpc`",
            );
            None
        }
        _ => {
            check.error(
                env::path(var),
                format!("`{shown}` is not one of `grpc` or `http/protobuf`"),
            );
            None
        }
    }
}

fn compression(file: Option<OtlpCompression>, check: &mut Check) -> Option<OtlpCompression> {
    if let Some(compression) = file {
        return Some(compression);
    }
    let Some((value, var)) = env::first_of(check, [env::TRACES_COMPRESSION, env::COMPRESSION])
    else {
        return Some(OtlpCompression::default());
    };
    match value.as_str() {
        "none" => Some(OtlpCompression::None),
        "gzip" => Some(OtlpCompression::Gzip),
        _ => {
            let shown = value.escape_debug();
            check.error(
                env::path(var),
                format!("`{shown}` is not one of `none` or `gzip`"),
            );
            None
        }
    }
}

/// The file's headers, then those of `$OTEL_EXPORTER_OTLP_TRACES_HEADERS`, then those of
/// `$OTEL_EXPORTER_OTLP_HEADERS`: per name, the first to set it wins.
fn headers(
    file: Option<BTreeMap<String, String>>,
    check: &mut Check,
) -> Option<Vec<(String, String)>> {
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    let mut ok = true;
    for (name, value) in file.unwrap_or_default() {
        let path = format!("telemetry.otlp.headers.{name}");
        match header(&name, &value) {
            Ok(name) if merged.contains_key(&name) => {
                check.error(path, format!("repeats `{name}` (header names ignore case)"));
                ok = false;
            }
            Ok(name) => {
                merged.insert(name, value);
            }
            Err(problem) => {
                check.error(path, problem);
                ok = false;
            }
        }
    }
    for var in [env::TRACES_HEADERS, env::HEADERS] {
        let Some(list) = check.env_var(var) else {
            continue;
        };
        let (entries, all_good) = env::list(check, var, &list);
        ok &= all_good;
        for (name, value) in entries {
            match header(&name, &value) {
                Ok(name) => {
                    merged.entry(name).or_insert(value);
                }
                Err(problem) => {
                    check.error(
                        env::path(var),
                        format!("header `{}`: {problem}", name.escape_debug()),
                    );
                    ok = false;
                }
            }
        }
    }
    ok.then(|| merged.into_iter().collect())
}

/// A header's name, lowercased, if it and its value may be sent. The value is never shown.
fn header(name: &str, value: &str) -> Result<String, String> {
    let shown = name.escape_debug();
    let parsed = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{shown}` is not a header name"))?;
    let lower = parsed.as_str();
    if RESERVED_HEADERS.contains(&lower) || lower.starts_with(':') {
        return Err(format!("`{shown}` is set by hopgate itself"));
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err(
            "the value holds a character a header value cannot (a control character or non-ASCII)"
                .to_owned(),
        );
    }
    Ok(lower.to_owned())
}

/// `telemetry.otlp.tls`, which only an `https://` endpoint has (and must have a CA for).
fn tls(raw: Option<raw::OtlpTls>, endpoint: &str, check: &mut Check) -> Option<Option<OtlpTls>> {
    let https = endpoint.starts_with("https://");
    if !https {
        if raw.is_some() {
            check.error(
                "telemetry.otlp.tls",
                format!(
                    "is for an `https://` endpoint; `{}` is plain `http://`",
                    endpoint.escape_debug()
                ),
            );
            return None;
        }
        // `$OTEL_EXPORTER_OTLP_CERTIFICATE` concerns secure connections only.
        return Some(None);
    }
    for var in env::CLIENT_FILES {
        if check.env_var(var).is_some() {
            check.error(
                env::path(var),
                "is not read: hopgate presents its own SVID to the collector with `telemetry.otlp.tls.client_svid: true`; unset it",
            );
        }
    }
    let raw = raw.unwrap_or_default();
    let ca = match raw.ca {
        Some(ca) => check.readable_file(&ca, "telemetry.otlp.tls.ca"),
        None => match env::first_of(check, [env::TRACES_CERTIFICATE, env::CERTIFICATE]) {
            Some((ca, var)) => {
                // Not from the file: relative to the working directory.
                let ca = std::path::absolute(&ca).unwrap_or_else(|_| PathBuf::from(&ca));
                check.readable_file(&ca, &env::path(var))
            }
            None => {
                check.error(
                    "telemetry.otlp.tls.ca",
                    format!(
                        "is required for an `https://` endpoint (or set ${}): the collector's certificate is checked against this CA, hopgate does not use the system's roots",
                        env::CERTIFICATE
                    ),
                );
                None
            }
        },
    };
    Some(Some(OtlpTls {
        ca: ca?,
        client_svid: raw.client_svid.unwrap_or(false),
    }))
}

// === impl OtlpTls ===

impl OtlpTls {
    /// The PEM file of the CA(s) the collector's certificate must chain to, resolved.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// Whether this sidecar presents its current X.509-SVID to the collector (mTLS). Default
    /// `false`.
    pub fn client_svid(&self) -> bool {
        self.client_svid
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

// === impl OtlpCompression ===

impl fmt::Display for OtlpCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gzip => "gzip",
        })
    }
}

#[cfg(test)]
mod tests;
