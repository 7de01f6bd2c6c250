//! The config file as written: a serde mirror of the YAML, with no logic.
//!
//! Every field is optional here. Required keys, defaults and value checks are applied once,
//! when each section is validated into its public type. The field docs are the user docs: they
//! give units and defaults. Durations are strings of a whole number and a unit: `500ms`, `60s`,
//! `5m`, `1h`. Relative paths resolve against the folder of the config file.
//!
//! List items are `Option`: an item dropped for a shape problem (a string where a map belongs)
//! reads as `None`, so the items after it keep the index they have in the file, and so in
//! their error paths.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{InboundMode, LogFormat, OtlpCompression, OtlpProtocol, WhenFull};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    /// This workload's SVID and trust bundles. Required.
    pub(crate) identity: Option<Identity>,
    /// The mTLS listener in front of the local app. At least one of `inbound` and `outbound`
    /// is required.
    pub(crate) inbound: Option<Inbound>,
    /// The listener the local app sends its outgoing calls to.
    pub(crate) outbound: Option<Outbound>,
    /// Cedar policies. Absent: identity-only mode, every verified peer of an allowed trust
    /// domain is admitted.
    pub(crate) policy: Option<Policy>,
    /// How intent headers map to the Cedar action and context.
    pub(crate) intent: Option<Intent>,
    /// Model Context Protocol awareness. Absent: no request is read as MCP.
    pub(crate) mcp: Option<Mcp>,
    /// Hop tokens: header, lifetime, chain depth, origin issuers.
    pub(crate) token: Option<Token>,
    /// Logs and OpenTelemetry export.
    pub(crate) telemetry: Option<Telemetry>,
    /// The admin listener (`/live`, `/ready`, `/metrics`, ...).
    pub(crate) admin: Option<Admin>,
    /// How long a stop waits for in-flight requests before closing them. Duration, `0s` to
    /// `1h`; default `30s`.
    pub(crate) shutdown_grace: Option<String>,
}

/// `identity`: either `svid` with `bundles`, or `workload_api`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Identity {
    /// This workload's X.509-SVID as files; reloaded when they change. Needs `bundles`.
    pub(crate) svid: Option<Svid>,
    /// Trust domain name → CA bundle PEM file. At least one; several mean federation. A peer
    /// is verified only against the bundle of its own trust domain.
    pub(crate) bundles: Option<BTreeMap<String, PathBuf>>,
    /// Take SVID and bundles from the SPIFFE Workload API instead of files.
    pub(crate) workload_api: Option<WorkloadApi>,
}

/// `identity.svid`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Svid {
    /// The certificate chain PEM, leaf first. Required.
    pub(crate) cert: Option<PathBuf>,
    /// The leaf's private key, PKCS#8 PEM. Required.
    pub(crate) key: Option<PathBuf>,
}

/// `identity.workload_api`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkloadApi {
    /// The agent's address: `unix:///absolute/path` or `tcp://ip:port`. Default
    /// `$SPIFFE_ENDPOINT_SOCKET`.
    pub(crate) socket: Option<String>,
    /// How long startup waits for a first usable SVID. Duration, `1s` to `10m`; default `30s`.
    pub(crate) initial_timeout: Option<String>,
}

/// `inbound`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inbound {
    /// Where peers connect over mTLS, `ip:port`. Required.
    pub(crate) listen: Option<String>,
    /// The local workload, `host:port` (an IP or a DNS name). Required.
    pub(crate) app: Option<String>,
    /// `enforce` (deny what policy denies) or `audit` (log a would-be deny and allow).
    /// Default `enforce`.
    pub(crate) mode: Option<InboundMode>,
    /// When true, a call without a hop token is answered 401. Default `false`.
    pub(crate) require_token: Option<bool>,
    /// The trust domains whose workloads may connect. Default: every trust domain in
    /// `identity.bundles` (with the Workload API: every one it delivers a bundle for).
    pub(crate) allowed_trust_domains: Option<Vec<Option<String>>>,
    /// Connection and request timeouts.
    pub(crate) timeouts: Option<InboundTimeouts>,
    /// Resource limits.
    pub(crate) limits: Option<InboundLimits>,
    /// Long-lived responses (SSE, gRPC streams, chunked bodies).
    pub(crate) streams: Option<InboundStreams>,
}

/// `inbound.timeouts`. Each is a duration from `1ms` to `24h`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboundTimeouts {
    /// From accept until the request headers are in (TLS handshake included). Default `10s`.
    pub(crate) header_read: Option<String>,
    /// A connection without requests is closed after this. Default `60s`.
    pub(crate) idle: Option<String>,
    /// Connecting to the local app. Default `1s`.
    pub(crate) app_connect: Option<String>,
    /// Waiting for the local app's response headers. Default `30s`.
    pub(crate) app_response: Option<String>,
}

/// `inbound.limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboundLimits {
    /// Open connections at once; more wait in the accept queue. 1 to 1000000, default 10000.
    pub(crate) max_connections: Option<u64>,
    /// HTTP/2 streams per connection at once. 1 to 10000, default 100.
    pub(crate) max_concurrent_streams: Option<u64>,
    /// Size of a request's headers, in bytes. 8192 to 16777216, default 65536.
    pub(crate) max_header_bytes: Option<u64>,
    /// HTTP/2 streams reset by the client but not yet handled (rapid-reset guard).
    /// 1 to 10000, default 20.
    pub(crate) max_pending_resets: Option<u64>,
}

/// `inbound.streams`: long-lived responses (SSE, gRPC streams, chunked bodies).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InboundStreams {
    /// Decide open streams again on a policy, trust bundle or revocation change, and cut them
    /// when their hop token expires. Default `true`.
    pub(crate) reauthorize: Option<bool>,
    /// The longest a stream may stay open. Duration, `0s` (no limit) to `720h`; default `0s`.
    pub(crate) max_age: Option<String>,
}

/// `outbound`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Outbound {
    /// Where the local app sends its calls (or uses as HTTP proxy), `ip:port`. Required.
    pub(crate) listen: Option<String>,
    /// When true, connections arrive by iptables REDIRECT and the destination is taken from
    /// `SO_ORIGINAL_DST`. Default `false`.
    pub(crate) transparent: Option<bool>,
    /// How often DNS names in addresses are resolved again, a duration. Default `5s`.
    pub(crate) dns_refresh: Option<String>,
    /// The destinations the app may call. Default: none (every call is `no_route`).
    pub(crate) routes: Option<Vec<Option<Route>>>,
}

/// `outbound.routes[i]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    /// Matched against `:authority` / `Host`: a lowercase host with an optional `:port`, no
    /// scheme or path. Required; unique across routes.
    pub(crate) host: Option<String>,
    /// Matched in transparent mode against the original destination, `host:port` (an IP, or a
    /// name matched against every address it resolves to). Optional.
    pub(crate) original_dst: Option<String>,
    /// The destination sidecar's inbound listener, `host:port` (an IP or a DNS name). Required.
    pub(crate) address: Option<String>,
    /// The SPIFFE ID the destination's certificate must carry, with a non-root path. Required.
    pub(crate) identity: Option<String>,
    /// The most a hop token for this destination may carry. Default: none.
    pub(crate) scopes: Option<Vec<Option<String>>>,
    /// Lifetime of the tokens minted for this destination, capped at the SVID's notAfter.
    /// Duration, `1s` to `token.max_ttl`; default `token.ttl`.
    pub(crate) token_ttl: Option<String>,
}

/// `policy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Policy {
    /// Folder of `*.cedar`, `schema.cedarschema` and optional `entities.json`; reloaded on
    /// change. Required.
    pub(crate) dir: Option<PathBuf>,
    /// When true, calls are also checked on the caller's side before they leave. Default
    /// `false`.
    pub(crate) outbound: Option<bool>,
}

/// `intent`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Intent {
    /// Headers starting with this become `context.intent.*` (`intent-purpose` → `purpose`);
    /// `<prefix>action` names the Cedar action. Lowercase header-name characters. Default
    /// `intent-`.
    pub(crate) header_prefix: Option<String>,
    /// The Cedar action when a call has no `<prefix>action` header. Default `call`.
    pub(crate) default_action: Option<String>,
}

/// `mcp`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mcp {
    /// Request paths that carry MCP over streamable HTTP, exact matches. Default `[/mcp]`.
    pub(crate) paths: Option<Vec<String>>,
    /// The largest MCP request body, a size such as `1MiB`. Default `1MiB`.
    pub(crate) max_body: Option<String>,
    /// Drop from `tools/list` results the tools the caller may not call. Default `true`.
    pub(crate) filter_tools_list: Option<bool>,
}

/// `token`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Token {
    /// The header carrying the hop token; a lowercase header name. Default `hop-token`.
    pub(crate) header: Option<String>,
    /// Lifetime of a minted token unless its route sets `token_ttl`, capped at the SVID's
    /// notAfter. Duration, `1s` to `24h`; default `60s`.
    pub(crate) ttl: Option<String>,
    /// The longest lifetime accepted inbound (`exp - iat`, plus `leeway`) and the longest a
    /// route's `token_ttl` may be. Duration, `token.ttl` to `24h`; default `token.ttl`.
    pub(crate) max_ttl: Option<String>,
    /// The most actors a chain may hold. 1 to 64, default 8.
    pub(crate) max_depth: Option<u64>,
    /// Clock skew allowed when checking `exp` and `nbf`. Duration, `0s` to `5m`; default `5s`.
    pub(crate) leeway: Option<String>,
    /// Tokens the inbound side accepted, kept for relaying. 1 to 16777216, default 65536.
    pub(crate) relay_cache: Option<u64>,
    /// Who may start a chain on behalf of an end user.
    pub(crate) origin: Option<Origin>,
}

/// `token.origin`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Origin {
    /// Trusted issuers of origin tokens (`Authorization: Bearer`). Default: none.
    pub(crate) issuers: Option<Vec<Option<OriginIssuer>>>,
}

/// `token.origin.issuers[i]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginIssuer {
    /// The `iss` claim, exactly. Required; unique.
    pub(crate) issuer: Option<String>,
    /// The issuer's JWKS (JSON) file. Required.
    pub(crate) jwks_file: Option<PathBuf>,
    /// The `aud` claim an origin token must carry. Required.
    pub(crate) audience: Option<String>,
}

/// `telemetry`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Telemetry {
    /// `service.name` of spans and logs. Default `hopgate`.
    pub(crate) service_name: Option<String>,
    /// `json` or `text`. Default `json`.
    pub(crate) log_format: Option<LogFormat>,
    /// OpenTelemetry export. Absent: no export.
    pub(crate) otlp: Option<Otlp>,
    /// How audit records reach stdout.
    pub(crate) audit: Option<Audit>,
    /// The `/metrics` exposition.
    pub(crate) metrics: Option<Metrics>,
}

/// `telemetry.metrics`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metrics {
    /// How many distinct SPIFFE IDs the `peer` and `dest` labels take before `other`. Default 200.
    pub(crate) max_identities: Option<usize>,
}

/// `telemetry.audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Audit {
    /// Seal the audit log in signed batches (docs/telemetry.md, "Signed audit logs").
    pub(crate) sign: Option<bool>,
    /// `refuse` or `drop`: what a full audit buffer does. Default `refuse`.
    pub(crate) when_full: Option<WhenFull>,
    /// The buffer between the request path and stdout, a size such as `1MiB`. Default `1MiB`.
    pub(crate) buffer: Option<String>,
}

/// `telemetry.otlp`. Each key left unset is taken from its `OTEL_EXPORTER_OTLP_*` variable, if
/// set (docs/telemetry.md, "OTLP export").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Otlp {
    /// The collector, `http://…` or `https://…`. Required (here or in
    /// `$OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`).
    pub(crate) endpoint: Option<String>,
    /// `grpc` or `http`. Default `grpc`.
    pub(crate) protocol: Option<OtlpProtocol>,
    /// TLS to an `https://` collector.
    pub(crate) tls: Option<OtlpTls>,
    /// Header name → value, sent with every export (gRPC: as metadata). Values may be secrets.
    pub(crate) headers: Option<BTreeMap<String, String>>,
    /// `none` or `gzip`. Default `none`.
    pub(crate) compression: Option<OtlpCompression>,
}

/// `telemetry.otlp.tls`: only for an `https://` endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtlpTls {
    /// The PEM file of the CA(s) the collector's certificate must chain to. Required for
    /// `https://` (here or in `$OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`).
    pub(crate) ca: Option<PathBuf>,
    /// Present this sidecar's current X.509-SVID to the collector (mTLS). Default `false`.
    pub(crate) client_svid: Option<bool>,
}

/// `admin`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    /// The admin listener, `ip:port`. Default `127.0.0.1:15000`.
    pub(crate) listen: Option<String>,
}
