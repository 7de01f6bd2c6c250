//! `token`: the hop token's header, lifetime and chain depth, and the issuers trusted to start a
//! chain on behalf of an end user.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use crate::check::{Check, at, header_name};
use crate::{IntentConfig, duration, raw};

/// Hop token settings (`token`).
#[derive(Clone, Debug)]
pub struct TokenConfig {
    header: HeaderName,
    ttl: Duration,
    max_ttl: Duration,
    max_depth: usize,
    leeway: Duration,
    relay_cache: usize,
    origin_issuers: Vec<OriginIssuer>,
}

/// An issuer of origin tokens (`token.origin.issuers[i]`).
#[derive(Clone, Debug)]
pub struct OriginIssuer {
    issuer: String,
    jwks_file: PathBuf,
    audience: String,
}

/// `token.ttl` when not set.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// What `token.ttl`, `token.max_ttl` and `outbound.routes[].token_ttl` may be.
pub(crate) const TTL_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 3600);

/// Headers the proxy strips, rewrites or reads for something else; a hop token there would be
/// lost or confused with it.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "traceparent",
    "tracestate",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-client-cert",
];

// === impl TokenConfig ===

impl TokenConfig {
    /// The header carrying the hop token. Default `hop-token`. Parsed once, here.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Lifetime of a minted token unless its route sets another ([`crate::Route::token_ttl`]),
    /// capped at the SVID's notAfter at mint time. Default 60s.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The longest lifetime (`exp - iat`, plus [`Self::leeway`]) a token may have to be
    /// accepted inbound, and the longest a route's `token_ttl` may be; at least [`Self::ttl`],
    /// at most 24h. Default: [`Self::ttl`].
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The most actors a chain may hold, 1 to 64. Default 8.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Clock skew allowed on `exp` and `nbf`, at most 5m. Default 5s.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// How many tokens the inbound side accepted are kept, until each expires, for the local
    /// app to relay: a relay of a token not among them is refused (`relay`). 1 to 16777216.
    /// Default 65536.
    pub fn relay_cache(&self) -> usize {
        self.relay_cache
    }

    /// Trusted origin token issuers, in file order; issuers are unique. Default none.
    pub fn origin_issuers(&self) -> &[OriginIssuer] {
        &self.origin_issuers
    }

    /// `intent` is needed to keep the token header out of the intent headers; `None` when that
    /// section had problems of its own.
    pub(crate) fn from_raw(
        raw: raw::Token,
        intent: Option<&IntentConfig>,
        check: &mut Check,
    ) -> Option<Self> {
        let header = Self::header_from_raw(raw.header, intent, check);
        let ttl = check.duration(raw.ttl, "token.ttl", DEFAULT_TTL, TTL_RANGE);
        let max_ttl = Self::max_ttl_from_raw(raw.max_ttl, ttl, check);
        let max_depth = check.number(raw.max_depth, "token.max_depth", 8, 1..=64);
        let leeway = check.duration(
            raw.leeway,
            "token.leeway",
            Duration::from_secs(5),
            Duration::ZERO..=Duration::from_secs(300),
        );
        let relay_cache =
            check.number(raw.relay_cache, "token.relay_cache", 65_536, 1..=16_777_216);
        let issuers = raw.origin.and_then(|o| o.issuers).unwrap_or_default();
        let origin_issuers = OriginIssuer::list_from_raw(issuers, check);
        Some(Self {
            header: header?,
            ttl: ttl?,
            max_ttl: max_ttl?,
            max_depth: max_depth?,
            leeway: leeway?,
            relay_cache: relay_cache?,
            origin_issuers: origin_issuers?,
        })
    }

    /// `token.max_ttl`: within [`TTL_RANGE`], and not below `token.ttl` (when that is valid);
    /// absent, `token.ttl`.
    fn max_ttl_from_raw(
        raw: Option<String>,
        ttl: Option<Duration>,
        check: &mut Check,
    ) -> Option<Duration> {
        let path = "token.max_ttl";
        let Some(value) = raw else { return ttl };
        let shown = value.escape_debug().to_string();
        let max_ttl = check.duration(Some(value), path, DEFAULT_TTL, TTL_RANGE)?;
        match ttl.filter(|ttl| max_ttl < *ttl) {
            None => Some(max_ttl),
            Some(ttl) => {
                let ttl = duration::format(ttl);
                let problem = format!("`{shown}` is shorter than `token.ttl` (`{ttl}`)");
                check.error(path, format!("{problem}; it must be at least that"));
                None
            }
        }
    }

    fn header_from_raw(
        raw: Option<String>,
        intent: Option<&IntentConfig>,
        check: &mut Check,
    ) -> Option<HeaderName> {
        let path = "token.header";
        let header = raw.unwrap_or_else(|| "hop-token".to_owned());
        let problem = if let Err(problem) = header_name(&header) {
            problem
        } else if RESERVED_HEADERS.contains(&header.as_str()) {
            format!("`{header}` is a header the proxy strips or sets itself; choose another")
        } else if let Some(prefix) = intent
            .map(IntentConfig::header_prefix)
            .filter(|p| header.starts_with(p))
        {
            format!("`{header}` starts with the intent header prefix `{prefix}`; choose another")
        } else {
            match HeaderName::from_bytes(header.as_bytes()) {
                Ok(name) => return Some(name),
                Err(_) => format!("`{header}` is not a header name"),
            }
        };
        check.error(path, problem);
        None
    }
}

// === impl OriginIssuer ===

impl OriginIssuer {
    /// The `iss` claim, exactly.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The issuer's JWKS file; absolute, and readable when the config loaded.
    pub fn jwks_file(&self) -> &Path {
        &self.jwks_file
    }

    /// The `aud` claim an origin token must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    fn list_from_raw(raw: Vec<Option<raw::OriginIssuer>>, check: &mut Check) -> Option<Vec<Self>> {
        let mut issuers: Vec<Self> = Vec::new();
        let expected = raw.len();
        for (i, issuer) in raw.into_iter().enumerate() {
            let path = format!("token.origin.issuers[{i}]");
            let Some(issuer) = issuer.and_then(|raw| Self::from_raw(raw, &path, check)) else {
                continue;
            };
            if issuers.iter().any(|other| other.issuer == issuer.issuer) {
                check.error(
                    at(&path, "issuer"),
                    format!("`{}` is listed twice", issuer.issuer),
                );
            } else {
                issuers.push(issuer);
            }
        }
        (issuers.len() == expected).then_some(issuers)
    }

    fn from_raw(raw: raw::OriginIssuer, path: &str, check: &mut Check) -> Option<Self> {
        let issuer_path = at(path, "issuer");
        let issuer = check
            .required(raw.issuer, &issuer_path)
            .and_then(|issuer| check.parse_word(issuer, &issuer_path));
        let jwks_file = check.file(raw.jwks_file, &at(path, "jwks_file"));
        let audience_path = at(path, "audience");
        let audience = check
            .required(raw.audience, &audience_path)
            .and_then(|audience| check.parse_word(audience, &audience_path));
        Some(Self {
            issuer: issuer?,
            jwks_file: jwks_file?,
            audience: audience?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::test_support::{Fixture, MINIMAL};

    #[test]
    fn token_defaults() {
        let config = Fixture::new().load(MINIMAL);
        let token = config.token();
        assert_eq!(token.header(), "hop-token");
        assert_eq!(token.ttl(), Duration::from_secs(60));
        assert_eq!(token.max_ttl(), Duration::from_secs(60));
        assert_eq!(token.max_depth(), 8);
        assert_eq!(token.leeway(), Duration::from_secs(5));
        assert_eq!(token.relay_cache(), 65_536);
        assert!(token.origin_issuers().is_empty());
    }

    #[test]
    fn origin_issuers_resolve_their_jwks_file() {
        let fx = Fixture::new();
        let config = fx.load(&format!(
            "{MINIMAL}token:\n  origin:\n    issuers:\n      - {{ issuer: https://idp.example, jwks_file: idp-jwks.json, audience: agents }}\n"
        ));
        let issuer = &config.token().origin_issuers()[0];
        assert_eq!(issuer.issuer(), "https://idp.example");
        assert_eq!(issuer.jwks_file(), fx.dir().join("idp-jwks.json"));
        assert_eq!(issuer.audience(), "agents");
    }

    #[test]
    fn origin_issuer_problems_are_reported_per_item() {
        let fx = Fixture::new();
        let errors = fx.errors(&format!(
            "{MINIMAL}token:\n  origin:\n    issuers:\n      - {{ issuer: a, jwks_file: idp-jwks.json, audience: x }}\n      - {{ issuer: a, jwks_file: idp-jwks.json, audience: x }}\n      - {{ jwks_file: missing.json, audience: '' }}\n"
        ));
        let dir = fx.dir().display();
        assert_eq!(
            errors,
            [
                "token.origin.issuers[1].issuer: `a` is listed twice".to_owned(),
                "token.origin.issuers[2].issuer: is required".to_owned(),
                format!(
                    "token.origin.issuers[2].jwks_file: cannot read `{dir}/missing.json`: No such file or directory (os error 2)"
                ),
                "token.origin.issuers[2].audience: is empty".to_owned(),
            ]
        );
    }

    #[test]
    fn absurd_lifetimes_depths_and_leeways_are_rejected() {
        let fx = Fixture::new();
        let errors = fx.errors(&format!(
            "{MINIMAL}token: {{ ttl: 0s, max_depth: 65, leeway: 6m, relay_cache: 0 }}\n"
        ));
        assert_eq!(
            errors,
            [
                "token.ttl: `0s` is too short; the least allowed is `1s`",
                "token.max_depth: `65` is out of range; allowed are 1 to 64",
                "token.leeway: `6m` is too long; the most allowed is `5m`",
                "token.relay_cache: `0` is out of range; allowed are 1 to 16777216",
            ]
        );
        let errors = fx.errors(&format!(
            "{MINIMAL}token: {{ ttl: 25h, max_depth: 0, leeway: 0s }}\n"
        ));
        assert_eq!(
            errors,
            [
                "token.ttl: `25h` is too long; the most allowed is `24h`",
                "token.max_depth: `0` is out of range; allowed are 1 to 64",
            ]
        );
    }

    #[test]
    fn max_ttl_defaults_to_the_ttl_and_may_be_longer() {
        let fx = Fixture::new();
        let token = |fields: &str| fx.load(&format!("{MINIMAL}token: {{ {fields} }}\n"));
        let config = token("ttl: 30s");
        assert_eq!(config.token().max_ttl(), Duration::from_secs(30));
        let config = token("max_ttl: 1h");
        assert_eq!(config.token().ttl(), Duration::from_secs(60));
        assert_eq!(config.token().max_ttl(), Duration::from_secs(3600));
        let config = token("ttl: 2m, max_ttl: 120s");
        assert_eq!(config.token().max_ttl(), Duration::from_secs(120));
        assert_eq!(
            token("max_ttl: 24h").token().max_ttl(),
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn a_max_ttl_below_the_ttl_or_outside_1s_to_24h_is_refused() {
        let fx = Fixture::new();
        let errors = |fields: &str| fx.errors(&format!("{MINIMAL}token: {{ {fields} }}\n"));
        assert_eq!(
            errors("ttl: 2m, max_ttl: 90s"),
            ["token.max_ttl: `90s` is shorter than `token.ttl` (`2m`); it must be at least that"]
        );
        assert_eq!(
            errors("max_ttl: 30s"),
            ["token.max_ttl: `30s` is shorter than `token.ttl` (`1m`); it must be at least that"]
        );
        assert_eq!(
            errors("max_ttl: 25h"),
            ["token.max_ttl: `25h` is too long; the most allowed is `24h`"]
        );
        assert_eq!(
            errors("max_ttl: 0s"),
            ["token.max_ttl: `0s` is too short; the least allowed is `1s`"]
        );
        // A bad ttl is reported once; max_ttl is then checked against its range alone.
        assert_eq!(
            errors("ttl: 0s, max_ttl: 1s"),
            ["token.ttl: `0s` is too short; the least allowed is `1s`"]
        );
    }

    #[test]
    fn token_header_must_be_a_free_lowercase_header_name() {
        let fx = Fixture::new();
        for (header, message) in [
            ("Hop-Token", "`Hop-Token` must be lowercase"),
            (
                "hop token",
                "`hop token` holds ` `, which is not allowed in a header name",
            ),
            (
                "authorization",
                "`authorization` is a header the proxy strips or sets itself; choose another",
            ),
            (
                "intent-token",
                "`intent-token` starts with the intent header prefix `intent-`; choose another",
            ),
        ] {
            let errors = fx.errors(&format!("{MINIMAL}token: {{ header: '{header}' }}\n"));
            assert_eq!(errors, [format!("token.header: {message}")]);
        }
        assert_eq!(
            fx.load(&format!("{MINIMAL}token: {{ header: x-hop }}\n"))
                .token()
                .header(),
            "x-hop"
        );
    }
}
