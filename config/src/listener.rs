//! `inbound` and `outbound`: the two listeners, in the order a call meets them on its way from
//! the app out (`outbound`) and from a peer in (`inbound`). Routes live in [`route`].

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::check::{Check, at};
use crate::{
    Address, IdentityConfig, IdentitySource, StreamsConfig, TokenConfig, TrustDomain, raw,
};

mod route;

pub use self::route::Route;

/// The mTLS listener in front of the local app (`inbound`).
#[derive(Clone, Debug)]
pub struct InboundConfig {
    listen: SocketAddr,
    app: Address,
    mode: InboundMode,
    require_token: bool,
    allowed_trust_domains: Vec<TrustDomain>,
    timeouts: InboundTimeouts,
    limits: InboundLimits,
    streams: StreamsConfig,
}

/// What the inbound side does with a policy deny.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundMode {
    /// Deny what policy denies.
    #[default]
    Enforce,
    /// Log a would-be deny (`audit_deny`) and let the call through.
    Audit,
}

/// Inbound timeouts (`inbound.timeouts`).
#[derive(Clone, Debug)]
pub struct InboundTimeouts {
    header_read: Duration,
    idle: Duration,
    app_connect: Duration,
    app_response: Duration,
}

/// Inbound resource limits (`inbound.limits`).
#[derive(Clone, Debug)]
pub struct InboundLimits {
    max_connections: usize,
    max_concurrent_streams: u32,
    max_header_bytes: usize,
    max_pending_resets: usize,
}

/// The listener the local app sends its outgoing calls to (`outbound`).
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    listen: SocketAddr,
    transparent: bool,
    dns_refresh: Duration,
    routes: Vec<Route>,
}

/// How often names are resolved again when `outbound.dns_refresh` is not set, or there is no
/// `outbound` section.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);

const DNS_REFRESH_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);

const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(24 * 3600);

// === impl InboundConfig ===

impl InboundConfig {
    /// Where peers connect over mTLS.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The local workload: an IP address, or a name resolved at run time.
    pub fn app(&self) -> &Address {
        &self.app
    }

    /// Enforce or audit policy denies. Default [`InboundMode::Enforce`].
    pub fn mode(&self) -> InboundMode {
        self.mode
    }

    /// Whether a call without a hop token is answered 401. Default `false`.
    pub fn require_token(&self) -> bool {
        self.require_token
    }

    /// The trust domains whose workloads may connect. Defaults to the `identity.bundles` trust
    /// domains; with files, each has a bundle. Empty only with the Workload API and no list
    /// configured, meaning every trust domain the Workload API delivers a bundle for.
    pub fn allowed_trust_domains(&self) -> &[TrustDomain] {
        &self.allowed_trust_domains
    }

    /// Connection and request timeouts.
    pub fn timeouts(&self) -> &InboundTimeouts {
        &self.timeouts
    }

    /// Resource limits.
    pub fn limits(&self) -> &InboundLimits {
        &self.limits
    }

    /// Long-lived responses: re-authorization and age limit (`inbound.streams`).
    pub fn streams(&self) -> &StreamsConfig {
        &self.streams
    }

    pub(crate) fn from_raw(
        raw: raw::Inbound,
        identity: Option<&IdentityConfig>,
        check: &mut Check,
    ) -> Option<Self> {
        let listen = check.socket_addr(raw.listen, "inbound.listen");
        let app = check.address(raw.app, "inbound.app");
        let allowed = allowed_trust_domains(raw.allowed_trust_domains, identity, check);
        let timeouts = InboundTimeouts::from_raw(raw.timeouts.unwrap_or_default(), check);
        let limits = InboundLimits::from_raw(raw.limits.unwrap_or_default(), check);
        let streams = StreamsConfig::from_raw(raw.streams.unwrap_or_default(), check);
        Some(Self {
            listen: listen?,
            app: app?,
            mode: raw.mode.unwrap_or_default(),
            require_token: raw.require_token.unwrap_or(false),
            allowed_trust_domains: allowed?,
            timeouts: timeouts?,
            limits: limits?,
            streams: streams?,
        })
    }
}

/// A list given explicitly must be non-empty, canonical and, with bundle files, covered by them.
fn allowed_trust_domains(
    raw: Option<Vec<Option<String>>>,
    identity: Option<&IdentityConfig>,
    check: &mut Check,
) -> Option<Vec<TrustDomain>> {
    let path = "inbound.allowed_trust_domains";
    let Some(names) = raw else {
        return Some(
            identity
                .map(IdentityConfig::trust_domains)
                .unwrap_or_default(),
        );
    };
    if names.is_empty() {
        let hint = "leave it out to allow every trust domain in `identity.bundles`";
        check.error(path, format!("must name at least one trust domain; {hint}"));
        return None;
    }
    let bundles = match identity.map(IdentityConfig::source) {
        Some(IdentitySource::Files(files)) => Some(files.bundles()),
        _ => None,
    };
    let mut allowed: Vec<TrustDomain> = Vec::new();
    // Items dropped for a shape problem were reported already and read as `None`.
    for (i, name) in names.iter().enumerate() {
        let Some(name) = name else { continue };
        let item = format!("{path}[{i}]");
        match TrustDomain::parse(name) {
            Err(e) => {
                let shown = name.escape_debug();
                check.error(item, format!("`{shown}` is not a valid trust domain: {e}"));
            }
            Ok(td) if allowed.contains(&td) => check.error(item, format!("`{td}` is listed twice")),
            Ok(td) if bundles.is_some_and(|b| !b.contains_key(&td)) => {
                check.error(item, format!("`{td}` has no bundle in `identity.bundles`"));
            }
            Ok(td) => allowed.push(td),
        }
    }
    (allowed.len() == names.len()).then_some(allowed)
}

// === impl InboundMode ===

impl fmt::Display for InboundMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        })
    }
}

// === impl InboundTimeouts ===

impl InboundTimeouts {
    /// From accept until the request headers are in, TLS handshake included. Default 10s.
    pub fn header_read(&self) -> Duration {
        self.header_read
    }

    /// A connection without requests is closed after this. Default 60s.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Connecting to the local app. Default 1s.
    pub fn app_connect(&self) -> Duration {
        self.app_connect
    }

    /// Waiting for the local app's response headers. Default 30s.
    pub fn app_response(&self) -> Duration {
        self.app_response
    }

    fn from_raw(raw: raw::InboundTimeouts, check: &mut Check) -> Option<Self> {
        let mut timeout = |value: Option<String>, key: &str, default: Duration| {
            let path = at("inbound.timeouts", key);
            check.duration(value, &path, default, TIMEOUT_RANGE)
        };
        let defaults = Self::default();
        let header_read = timeout(raw.header_read, "header_read", defaults.header_read);
        let idle = timeout(raw.idle, "idle", defaults.idle);
        let app_connect = timeout(raw.app_connect, "app_connect", defaults.app_connect);
        let app_response = timeout(raw.app_response, "app_response", defaults.app_response);
        Some(Self {
            header_read: header_read?,
            idle: idle?,
            app_connect: app_connect?,
            app_response: app_response?,
        })
    }
}

impl Default for InboundTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            app_connect: Duration::from_secs(1),
            app_response: Duration::from_secs(30),
        }
    }
}

// === impl InboundLimits ===

impl InboundLimits {
    /// Open connections at once; more wait in the accept queue. Default 10000.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// HTTP/2 streams per connection at once. Default 100.
    pub fn max_concurrent_streams(&self) -> u32 {
        self.max_concurrent_streams
    }

    /// Size of a request's headers, in bytes; at least 8192 (hyper's HTTP/1 buffer floor).
    /// Default 65536.
    pub fn max_header_bytes(&self) -> usize {
        self.max_header_bytes
    }

    /// HTTP/2 streams reset by the client but not yet handled (rapid-reset guard). Default 20.
    pub fn max_pending_resets(&self) -> usize {
        self.max_pending_resets
    }

    fn from_raw(raw: raw::InboundLimits, check: &mut Check) -> Option<Self> {
        let path = |key| at("inbound.limits", key);
        let defaults = Self::default();
        let max_connections = check.number(
            raw.max_connections,
            &path("max_connections"),
            defaults.max_connections,
            1..=1_000_000,
        );
        let max_concurrent_streams = check.number(
            raw.max_concurrent_streams,
            &path("max_concurrent_streams"),
            defaults.max_concurrent_streams,
            1..=10_000,
        );
        let max_header_bytes = check.number(
            raw.max_header_bytes,
            &path("max_header_bytes"),
            defaults.max_header_bytes,
            8_192..=16_777_216,
        );
        let max_pending_resets = check.number(
            raw.max_pending_resets,
            &path("max_pending_resets"),
            defaults.max_pending_resets,
            1..=10_000,
        );
        Some(Self {
            max_connections: max_connections?,
            max_concurrent_streams: max_concurrent_streams?,
            max_header_bytes: max_header_bytes?,
            max_pending_resets: max_pending_resets?,
        })
    }
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_concurrent_streams: 100,
            max_header_bytes: 65_536,
            max_pending_resets: 100,
        }
    }
}

// === impl OutboundConfig ===

impl OutboundConfig {
    /// Where the local app sends its calls.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Whether connections arrive by iptables REDIRECT (destination from `SO_ORIGINAL_DST`).
    /// Default `false`.
    pub fn transparent(&self) -> bool {
        self.transparent
    }

    /// How often the DNS names in addresses are resolved again (they also are after a failed
    /// connect). It applies to every name the sidecar connects to, `inbound.app` included.
    /// Default 5s.
    pub fn dns_refresh(&self) -> Duration {
        self.dns_refresh
    }

    /// The destinations, in file order; hosts are unique.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub(crate) fn from_raw(raw: raw::Outbound, check: &mut Check) -> Option<Self> {
        let listen = check.socket_addr(raw.listen, "outbound.listen");
        let dns_refresh = check.duration(
            raw.dns_refresh,
            "outbound.dns_refresh",
            DEFAULT_DNS_REFRESH,
            DNS_REFRESH_RANGE,
        );
        let routes = Route::list_from_raw(raw.routes.unwrap_or_default(), check);
        Some(Self {
            listen: listen?,
            transparent: raw.transparent.unwrap_or(false),
            dns_refresh: dns_refresh?,
            routes: routes?,
        })
    }

    /// Gives each route its token lifetime once `token` is known: its own `token_ttl`, which
    /// may not exceed `token.max_ttl`, or `token.ttl`.
    pub(crate) fn resolve_token_ttls(&mut self, token: &TokenConfig, check: &mut Check) {
        for (i, route) in self.routes.iter_mut().enumerate() {
            route.resolve_token_ttl(&format!("outbound.routes[{i}]"), token, check);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::InboundMode;
    use crate::test_support::{Fixture, IDENTITY, OUTBOUND};

    fn inbound(fields: &str) -> String {
        format!("{IDENTITY}inbound:\n  listen: 0.0.0.0:15006\n  app: 127.0.0.1:8080\n{fields}")
    }

    #[test]
    fn inbound_defaults() {
        let config = Fixture::new().load(&inbound(""));
        let inbound = config.inbound().unwrap();
        assert_eq!(inbound.listen(), "0.0.0.0:15006".parse().unwrap());
        assert_eq!(inbound.app().to_string(), "127.0.0.1:8080");
        assert_eq!(inbound.mode(), InboundMode::Enforce);
        assert!(!inbound.require_token());
        assert_eq!(inbound.allowed_trust_domains()[0].as_str(), "example.org");
        let t = inbound.timeouts();
        assert_eq!(
            [t.header_read(), t.idle(), t.app_connect(), t.app_response()],
            [10, 60, 1, 30].map(Duration::from_secs)
        );
        let l = inbound.limits();
        assert_eq!(
            (
                l.max_connections(),
                l.max_concurrent_streams(),
                l.max_header_bytes(),
                l.max_pending_resets()
            ),
            (10_000, 100, 65_536, 100)
        );
        assert!(config.outbound().is_none());
    }

    #[test]
    fn inbound_takes_every_setting() {
        let config = Fixture::new().load(&inbound(
            "  mode: audit\n  require_token: true\n  allowed_trust_domains: [example.org]\n  timeouts: { header_read: 500ms, idle: 5m, app_connect: 2s, app_response: 1h }\n  limits: { max_connections: 5, max_concurrent_streams: 7, max_header_bytes: 8192, max_pending_resets: 1 }\n",
        ));
        let inbound = config.inbound().unwrap();
        assert_eq!(inbound.mode(), InboundMode::Audit);
        assert_eq!(inbound.mode().to_string(), "audit");
        assert_eq!(InboundMode::Enforce.to_string(), "enforce");
        assert!(inbound.require_token());
        let t = inbound.timeouts();
        assert_eq!(t.header_read(), Duration::from_millis(500));
        assert_eq!(t.idle(), Duration::from_secs(300));
        assert_eq!(t.app_connect(), Duration::from_secs(2));
        assert_eq!(t.app_response(), Duration::from_secs(3600));
        let l = inbound.limits();
        assert_eq!(
            (
                l.max_connections(),
                l.max_concurrent_streams(),
                l.max_header_bytes(),
                l.max_pending_resets()
            ),
            (5, 7, 8192, 1)
        );
    }

    #[test]
    fn inbound_addresses_are_checked() {
        let fx = Fixture::new();
        let errors = fx.errors(&format!(
            "{IDENTITY}inbound:\n  listen: '0.0.0.0:99999'\n  app: 127.0.0.1:0\n"
        ));
        assert_eq!(
            errors,
            [
                "inbound.listen: `0.0.0.0:99999` is not a socket address; expected `ip:port`",
                "inbound.app: `127.0.0.1:0` has port 0, which cannot be connected to",
            ]
        );
        assert_eq!(
            fx.errors(&format!("{IDENTITY}inbound: {{ listen: 15006 }}\n")),
            [
                "inbound.listen: `15006` is not a socket address; expected `ip:port`",
                "inbound.app: is required",
            ]
        );
    }

    #[test]
    fn allowed_trust_domains_need_a_bundle_each() {
        let fx = Fixture::new();
        let errors = fx.errors(&inbound(
            "  allowed_trust_domains: [example.org, other.org, Bad, example.org]\n",
        ));
        assert_eq!(
            errors,
            [
                "inbound.allowed_trust_domains[1]: `other.org` has no bundle in `identity.bundles`",
                "inbound.allowed_trust_domains[2]: `Bad` is not a valid trust domain: trust domain character `B` is not allowed; only lowercase letters, digits, `.`, `-` and `_` are",
                "inbound.allowed_trust_domains[3]: `example.org` is listed twice",
            ]
        );
        assert_eq!(
            fx.errors(&inbound("  allowed_trust_domains: []\n")),
            [
                "inbound.allowed_trust_domains: must name at least one trust domain; leave it out to allow every trust domain in `identity.bundles`"
            ]
        );
    }

    #[test]
    fn with_the_workload_api_allowed_trust_domains_default_to_empty() {
        let fx = Fixture::new();
        let api = "identity:\n  workload_api: { socket: 'unix:///agent.sock' }\n";
        let fields = "inbound:\n  listen: 0.0.0.0:15006\n  app: 127.0.0.1:8080\n";
        let config = fx.load(&format!("{api}{fields}"));
        assert!(config.inbound().unwrap().allowed_trust_domains().is_empty());
        let config = fx.load(&format!(
            "{api}{fields}  allowed_trust_domains: [other.org]\n"
        ));
        assert_eq!(
            config.inbound().unwrap().allowed_trust_domains()[0].as_str(),
            "other.org"
        );
    }

    #[test]
    fn timeouts_must_be_positive_durations_with_a_unit() {
        let errors = Fixture::new().errors(&inbound(
            "  timeouts: { header_read: 0s, idle: 60, app_connect: -1s, app_response: 1.5s }\n",
        ));
        assert_eq!(
            errors,
            [
                "inbound.timeouts.header_read: `0s` is too short; the least allowed is `1ms`",
                "inbound.timeouts.idle: `60` has no unit; expected a whole number followed by `ms`, `s`, `m` or `h`, such as `500ms` or `60s`",
                "inbound.timeouts.app_connect: `-1s` is negative; expected a whole number followed by `ms`, `s`, `m` or `h`, such as `500ms` or `60s`",
                "inbound.timeouts.app_response: `1.5s` has a fraction; use a smaller unit instead, such as `1500ms` for 1.5s",
            ]
        );
    }

    #[test]
    fn limits_must_be_within_their_ranges() {
        let errors = Fixture::new().errors(&inbound(
            "  limits: { max_connections: 0, max_concurrent_streams: 4294967296, max_header_bytes: 1024, max_pending_resets: -1 }\n",
        ));
        assert_eq!(
            errors,
            [
                "inbound.limits.max_pending_resets: expected a whole number of 0 or more, found the number `-1`",
                "inbound.limits.max_connections: `0` is out of range; allowed are 1 to 1000000",
                "inbound.limits.max_concurrent_streams: `4294967296` is out of range; allowed are 1 to 10000",
                "inbound.limits.max_header_bytes: `1024` is out of range; allowed are 8192 to 16777216",
            ]
        );
    }

    #[test]
    fn mode_is_enforce_or_audit() {
        assert_eq!(
            Fixture::new().errors(&inbound("  mode: enforcing\n")),
            ["inbound.mode: `enforcing` is not one of `enforce` or `audit`"]
        );
    }

    #[test]
    fn outbound_defaults_to_explicit_mode_without_routes() {
        let config = Fixture::new().load(&format!("{IDENTITY}{OUTBOUND}"));
        let outbound = config.outbound().unwrap();
        assert_eq!(outbound.listen(), "127.0.0.1:15001".parse().unwrap());
        assert!(!outbound.transparent());
        assert!(outbound.routes().is_empty());
        assert_eq!(outbound.dns_refresh(), Duration::from_secs(5));
        assert!(config.inbound().is_none());
        let transparent =
            Fixture::new().load(&format!("{IDENTITY}{OUTBOUND}  transparent: true\n"));
        assert!(transparent.outbound().unwrap().transparent());
    }

    #[test]
    fn inbound_app_may_be_a_dns_name() {
        let config = Fixture::new().load(&format!(
            "{IDENTITY}inbound:\n  listen: 0.0.0.0:15006\n  app: App.Local:8080\n"
        ));
        let app = config.inbound().unwrap().app();
        assert_eq!(app.to_string(), "app.local:8080");
        assert_eq!(app.socket_addr(), None);
        assert_eq!(
            Fixture::new().errors(&format!(
                "{IDENTITY}inbound:\n  listen: 0.0.0.0:15006\n  app: 'app local:8080'\n"
            )),
            [
                "inbound.app: `app local:8080`: the host `app local` is not a host name: only letters, digits, `-`, `_` and `.` may appear"
            ]
        );
    }

    #[test]
    fn dns_refresh_is_a_duration_from_100ms_to_an_hour() {
        let load = |value: &str| {
            Fixture::new().load(&format!("{IDENTITY}{OUTBOUND}  dns_refresh: {value}\n"))
        };
        assert_eq!(
            load("250ms").outbound().unwrap().dns_refresh(),
            Duration::from_millis(250)
        );
        assert_eq!(
            Fixture::new().errors(&format!("{IDENTITY}{OUTBOUND}  dns_refresh: 10ms\n")),
            ["outbound.dns_refresh: `10ms` is too short; the least allowed is `100ms`"]
        );
    }
}
