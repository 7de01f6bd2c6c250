//! `outbound.routes`: which destinations the app may call, where they are, and who they must be.

use std::net::Ipv6Addr;
use std::time::Duration;

use crate::check::{Check, at};
use crate::token::{DEFAULT_TTL, TTL_RANGE};
use crate::{Address, SpiffeId, TokenConfig, duration, raw};

/// One destination (`outbound.routes[i]`).
#[derive(Clone, Debug)]
pub struct Route {
    host: String,
    original_dst: Option<Address>,
    address: Address,
    identity: SpiffeId,
    scopes: Vec<String>,
    /// `token_ttl` as written; `None`: `token.ttl`.
    written_token_ttl: Option<Duration>,
    /// The lifetime of its tokens, set from `written_token_ttl` or `token.ttl` once the `token`
    /// section is known ([`Self::resolve_token_ttl`]).
    token_ttl: Duration,
}

// === impl Route ===

impl Route {
    /// Matched against `:authority` / `Host`: a lowercase host, with `:port` when configured so.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Matched in transparent mode against `SO_ORIGINAL_DST`: an IP address, or a name matched
    /// against every address it resolves to (a Kubernetes Service name gives its cluster IP).
    pub fn original_dst(&self) -> Option<&Address> {
        self.original_dst.as_ref()
    }

    /// The destination sidecar's inbound listener: an IP address, or a name resolved at run
    /// time. Where it resolves says only where to connect: the server must still prove
    /// [`Route::identity`].
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The SPIFFE ID the destination's certificate must carry; never a root ID.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The most a hop token for this destination may carry; unique, in file order.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The lifetime of the hop tokens minted for this destination (capped at the SVID's
    /// notAfter at mint time): its `token_ttl`, at most `token.max_ttl`, or else `token.ttl`.
    /// A stream's authority ends with its token, so a route to long streams asks for more.
    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    /// Sets [`Self::token_ttl`] from `token`: the route's own, which may not exceed
    /// `token.max_ttl`, or `token.ttl`.
    pub(crate) fn resolve_token_ttl(&mut self, path: &str, token: &TokenConfig, check: &mut Check) {
        match self.written_token_ttl {
            None => self.token_ttl = token.ttl(),
            Some(ttl) if ttl > token.max_ttl() => {
                let (ttl, max) = (duration::format(ttl), duration::format(token.max_ttl()));
                let problem = format!("`{ttl}` is longer than `token.max_ttl` (`{max}`)");
                let hint = "raise `token.max_ttl` to allow it";
                check.error(at(path, "token_ttl"), format!("{problem}; {hint}"));
            }
            Some(ttl) => self.token_ttl = ttl,
        }
    }

    /// Builds every route, then rejects a host or original destination used twice.
    pub(crate) fn list_from_raw(
        raw: Vec<Option<raw::Route>>,
        check: &mut Check,
    ) -> Option<Vec<Self>> {
        let mut routes: Vec<(usize, Self)> = Vec::new();
        let mut complete = true;
        for (i, route) in raw.into_iter().enumerate() {
            let path = format!("outbound.routes[{i}]");
            let Some(route) = route.and_then(|r| Self::from_raw(r, &path, check)) else {
                complete = false;
                continue;
            };
            if let Some((j, _)) = routes.iter().find(|(_, r)| r.host == route.host) {
                let message = format!(
                    "`{}` is already routed by `outbound.routes[{j}]`",
                    route.host
                );
                check.error(at(&path, "host"), message);
                complete = false;
            }
            let same_dst =
                |r: &Self| r.original_dst.is_some() && r.original_dst == route.original_dst;
            if let (Some((j, _)), Some(dst)) = (
                routes.iter().find(|(_, r)| same_dst(r)),
                &route.original_dst,
            ) {
                let message = format!(
                    "`{dst}` is already the original destination of `outbound.routes[{j}]`"
                );
                check.error(at(&path, "original_dst"), message);
                complete = false;
            }
            routes.push((i, route));
        }
        complete.then(|| routes.into_iter().map(|(_, r)| r).collect())
    }

    fn from_raw(raw: raw::Route, path: &str, check: &mut Check) -> Option<Self> {
        let host_path = at(path, "host");
        let host = check
            .required(raw.host, &host_path)
            .and_then(|host| match check_host(&host) {
                Ok(()) => Some(host),
                Err(problem) => {
                    check.error(&host_path, problem);
                    None
                }
            });
        let dst_path = at(path, "original_dst");
        let original_dst = match raw.original_dst {
            None => Some(None),
            Some(dst) => check.address(Some(dst), &dst_path).map(Some),
        };
        let address = check.address(raw.address, &at(path, "address"));
        let identity = workload_id(raw.identity, &at(path, "identity"), check);
        let scopes = scopes(raw.scopes.unwrap_or_default(), &at(path, "scopes"), check);
        let token_ttl = match raw.token_ttl {
            None => Some(None),
            Some(ttl) => check
                .duration(Some(ttl), &at(path, "token_ttl"), Duration::ZERO, TTL_RANGE)
                .map(Some),
        };
        Some(Self {
            host: host?,
            original_dst: original_dst?,
            address: address?,
            identity: identity?,
            scopes: scopes?,
            written_token_ttl: token_ttl?,
            // Until resolved: what `token.ttl` is by default.
            token_ttl: DEFAULT_TTL,
        })
    }
}

/// A required SPIFFE ID with a non-root path: a root ID names a trust domain, never a workload.
fn workload_id(raw: Option<String>, path: &str, check: &mut Check) -> Option<SpiffeId> {
    let raw = check.required(raw, path)?;
    match SpiffeId::parse(&raw) {
        Ok(id) if id.is_root() => {
            let example = format!("{id}/ns/default/sa/name");
            check.error(
                path,
                format!(
                    "`{id}` has no path; a workload's SPIFFE ID needs one, such as `{example}`"
                ),
            );
            None
        }
        Ok(id) => Some(id),
        Err(e) => {
            check.error(
                path,
                format!("`{}` is not a SPIFFE ID: {e}", raw.escape_debug()),
            );
            None
        }
    }
}

/// Scopes are RFC 6749 scope tokens: printable ASCII without space, `"` or `\`; no repeats.
fn scopes(raw: Vec<Option<String>>, path: &str, check: &mut Check) -> Option<Vec<String>> {
    let mut scopes: Vec<String> = Vec::new();
    let expected = raw.len();
    for (i, scope) in raw.into_iter().enumerate() {
        let Some(scope) = scope else { continue };
        let item = format!("{path}[{i}]");
        let shown = scope.escape_debug().to_string();
        let bad = scope
            .chars()
            .find(|c| !matches!(c, '!' | '#'..='[' | ']'..='~'));
        if scope.is_empty() {
            check.error(item, "is empty");
        } else if let Some(c) = bad {
            let c = c.escape_debug();
            let rule = "scopes are printable ASCII without spaces, `\"` or `\\`";
            check.error(item, format!("`{shown}` holds `{c}`; {rule}"));
        } else if scopes.contains(&scope) {
            check.error(item, format!("`{shown}` is listed twice"));
        } else {
            scopes.push(scope);
        }
    }
    (scopes.len() == expected).then_some(scopes)
}

/// A lowercase host name or IP, with an optional `:port`; no scheme, path or user info.
fn check_host(host: &str) -> Result<(), String> {
    let shown = host.escape_debug();
    if host.is_empty() {
        return Err("is empty".to_owned());
    }
    if host.contains("://") {
        return Err(format!(
            "`{shown}` must not have a scheme; write the host alone, such as `inference.ml`"
        ));
    }
    if host.contains('/') {
        return Err(format!(
            "`{shown}` must not have a path; write the host alone, such as `inference.ml`"
        ));
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("`{shown}` must be lowercase"));
    }
    let (name, port) = split_port(host)
        .ok_or_else(|| format!("`{shown}` is not a host with an optional `:port`"))?;
    let valid_port =
        |p: &str| p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0);
    if let Some(port) = port.filter(|p| !valid_port(p)) {
        return Err(format!(
            "`{shown}` has port `{}`, which is not 1 to 65535",
            port.escape_debug()
        ));
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return match v6.parse::<Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "`{shown}` holds `[{}]`, which is not an IPv6 address",
                v6.escape_debug()
            )),
        };
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(format!(
            "`{shown}` holds `{}`, which is not allowed in a host name",
            c.escape_debug()
        ));
    }
    if name.is_empty() || name.split('.').any(str::is_empty) {
        return Err(format!("`{shown}` has an empty label"));
    }
    Ok(())
}

/// Splits `name[:port]` and `[v6][:port]`; `None` when the shape is neither.
fn split_port(host: &str) -> Option<(&str, Option<&str>)> {
    if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        return match rest {
            "" => Some((name, None)),
            _ => rest.strip_prefix(':').map(|port| (name, Some(port))),
        };
    }
    match host.split_once(':') {
        None => Some((host, None)),
        Some((name, port)) if !port.contains(':') => Some((name, Some(port))),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::check_host;
    use crate::test_support::{Fixture, IDENTITY};

    fn route(fields: &str) -> String {
        format!("{IDENTITY}outbound:\n  listen: 127.0.0.1:15001\n  routes:\n    - {{ {fields} }}\n")
    }

    const GOOD: &str = "host: inference.ml, address: 127.0.0.1:16006, identity: spiffe://example.org/ns/ml/sa/inference";

    #[test]
    fn a_route_keeps_what_it_was_given() {
        let fx = Fixture::new();
        let config = fx.load(&route(&format!(
            "{GOOD}, original_dst: 10.0.0.5:8080, scopes: [inference.generate, a:b]"
        )));
        let named = fx.load(&route(
            "host: crm.tools, address: crm.tools.svc.cluster.local:15006, identity: spiffe://example.org/ns/tools/sa/crm",
        ));
        let address = named.outbound().unwrap().routes()[0].address();
        assert_eq!(address.to_string(), "crm.tools.svc.cluster.local:15006");
        let route = &config.outbound().unwrap().routes()[0];
        assert_eq!(route.host(), "inference.ml");
        assert_eq!(route.original_dst().unwrap().to_string(), "10.0.0.5:8080");
        assert_eq!(route.address().to_string(), "127.0.0.1:16006");
        assert_eq!(
            route.identity().as_str(),
            "spiffe://example.org/ns/ml/sa/inference"
        );
        assert_eq!(route.scopes(), ["inference.generate", "a:b"]);
    }

    #[test]
    fn hosts_are_lowercase_names_or_ips_with_an_optional_port() {
        for good in [
            "inference.ml",
            "inference.ml:8080",
            "a_b-c.d",
            "10.0.0.5",
            "[::1]",
            "[::1]:443",
            "localhost",
        ] {
            assert_eq!(check_host(good), Ok(()), "{good}");
        }
        for (bad, message) in [
            ("", "is empty"),
            (
                "http://inference.ml",
                "`http://inference.ml` must not have a scheme; write the host alone, such as `inference.ml`",
            ),
            (
                "inference.ml/v1",
                "`inference.ml/v1` must not have a path; write the host alone, such as `inference.ml`",
            ),
            ("Inference.ML", "`Inference.ML` must be lowercase"),
            (
                "inference.ml:0",
                "`inference.ml:0` has port `0`, which is not 1 to 65535",
            ),
            (
                "inference.ml:99999",
                "`inference.ml:99999` has port `99999`, which is not 1 to 65535",
            ),
            (
                "inference.ml:+80",
                "`inference.ml:+80` has port `+80`, which is not 1 to 65535",
            ),
            ("a:b:c", "`a:b:c` is not a host with an optional `:port`"),
            ("[::1", "`[::1` is not a host with an optional `:port`"),
            (
                "[nope]:80",
                "`[nope]:80` holds `[nope]`, which is not an IPv6 address",
            ),
            (
                "user@inference.ml",
                "`user@inference.ml` holds `@`, which is not allowed in a host name",
            ),
            ("inference..ml", "`inference..ml` has an empty label"),
            (":8080", "`:8080` has an empty label"),
        ] {
            assert_eq!(check_host(bad), Err(message.to_owned()), "{bad}");
        }
    }

    #[test]
    fn route_identity_must_be_a_workload_spiffe_id() {
        let fx = Fixture::new();
        let root = fx.errors(&route(
            "host: a, address: 127.0.0.1:1, identity: spiffe://example.org",
        ));
        assert_eq!(
            root,
            [
                "outbound.routes[0].identity: `spiffe://example.org` has no path; a workload's SPIFFE ID needs one, such as `spiffe://example.org/ns/default/sa/name`"
            ]
        );
        let bad = fx.errors(&route(
            "host: a, address: 127.0.0.1:1, identity: 'spiffe://example.org/a/../b'",
        ));
        assert_eq!(
            bad,
            [
                "outbound.routes[0].identity: `spiffe://example.org/a/../b` is not a SPIFFE ID: path has a `.` or `..` segment"
            ]
        );
    }

    #[test]
    fn scopes_are_non_empty_tokens_without_spaces_or_repeats() {
        let fx = Fixture::new();
        let errors = fx.errors(&route(&format!(
            "{GOOD}, scopes: ['', 'read ticket', ok, ok, \"q\\\"\"]"
        )));
        assert_eq!(
            errors,
            [
                "outbound.routes[0].scopes[0]: is empty",
                "outbound.routes[0].scopes[1]: `read ticket` holds ` `; scopes are printable ASCII without spaces, `\"` or `\\`",
                "outbound.routes[0].scopes[3]: `ok` is listed twice",
                "outbound.routes[0].scopes[4]: `q\\\"` holds `\\\"`; scopes are printable ASCII without spaces, `\"` or `\\`",
            ]
        );
    }

    #[test]
    fn a_route_token_ttl_defaults_to_the_token_ttl() {
        let fx = Fixture::new();
        let ttl = |yaml: &str| fx.load(yaml).outbound().unwrap().routes()[0].token_ttl();
        assert_eq!(ttl(&route(GOOD)), Duration::from_secs(60));
        let token = "token: { ttl: 30s, max_ttl: 1h }\n";
        assert_eq!(
            ttl(&format!("{}{token}", route(GOOD))),
            Duration::from_secs(30)
        );
        assert_eq!(
            ttl(&format!(
                "{}{token}",
                route(&format!("{GOOD}, token_ttl: 10m"))
            )),
            Duration::from_secs(600)
        );
        assert_eq!(
            ttl(&format!(
                "{}{token}",
                route(&format!("{GOOD}, token_ttl: 1h"))
            )),
            Duration::from_secs(3600)
        );
        // Shorter than `token.ttl` is allowed too.
        assert_eq!(
            ttl(&route(&format!("{GOOD}, token_ttl: 5s"))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_route_token_ttl_past_the_max_ttl_is_refused_naming_the_route() {
        let fx = Fixture::new();
        let id = "address: 127.0.0.1:1, identity: spiffe://example.org/x";
        let yaml = format!(
            "{IDENTITY}outbound:\n  listen: 127.0.0.1:15001\n  routes:\n    - {{ host: a, {id}, token_ttl: 1h }}\n    - {{ host: b, {id}, token_ttl: 61m }}\n    - {{ host: c, {id}, token_ttl: 0s }}\n    - {{ host: d, {id}, token_ttl: 25h }}\ntoken: {{ max_ttl: 1h }}\n"
        );
        // Checked against `token.max_ttl` once every route is valid: first the ranges.
        assert_eq!(
            fx.errors(&yaml),
            [
                "outbound.routes[2].token_ttl: `0s` is too short; the least allowed is `1s`",
                "outbound.routes[3].token_ttl: `25h` is too long; the most allowed is `24h`",
            ]
        );
        let yaml = format!(
            "{IDENTITY}outbound:\n  listen: 127.0.0.1:15001\n  routes:\n    - {{ host: a, {id}, token_ttl: 1h }}\n    - {{ host: b, {id}, token_ttl: 61m }}\ntoken: {{ max_ttl: 1h }}\n"
        );
        assert_eq!(
            fx.errors(&yaml),
            [
                "outbound.routes[1].token_ttl: `61m` is longer than `token.max_ttl` (`1h`); raise `token.max_ttl` to allow it"
            ]
        );
        // Without `token.max_ttl`, it is `token.ttl`.
        assert_eq!(
            fx.errors(&route(&format!("{GOOD}, token_ttl: 2m"))),
            [
                "outbound.routes[0].token_ttl: `2m` is longer than `token.max_ttl` (`1m`); raise `token.max_ttl` to allow it"
            ]
        );
    }

    #[test]
    fn required_fields_and_bad_addresses_are_all_reported() {
        let fx = Fixture::new();
        let errors = fx.errors(&route("original_dst: nowhere, address: '127.0.0.1:0'"));
        assert_eq!(
            errors,
            [
                "outbound.routes[0].host: is required",
                "outbound.routes[0].original_dst: `nowhere` has no port; expected `host:port` (an IP address or a DNS name)",
                "outbound.routes[0].address: `127.0.0.1:0` has port 0, which cannot be connected to",
                "outbound.routes[0].identity: is required",
            ]
        );
    }

    #[test]
    fn duplicate_hosts_and_original_destinations_are_errors() {
        let fx = Fixture::new();
        let id = "address: 127.0.0.1:1, identity: spiffe://example.org/x";
        let yaml = format!(
            "{IDENTITY}outbound:\n  listen: 127.0.0.1:15001\n  routes:\n    - {{ host: a.ml, original_dst: 10.0.0.5:80, {id} }}\n    - {{ host: 'a.ml:80', original_dst: 10.0.0.5:80, {id} }}\n    - {{ host: a.ml, {id} }}\n"
        );
        assert_eq!(
            fx.errors(&yaml),
            [
                "outbound.routes[1].original_dst: `10.0.0.5:80` is already the original destination of `outbound.routes[0]`",
                "outbound.routes[2].host: `a.ml` is already routed by `outbound.routes[0]`",
            ]
        );
    }

    #[test]
    fn a_route_of_the_wrong_type_keeps_the_indices_of_the_others() {
        let fx = Fixture::new();
        let yaml = format!(
            "{IDENTITY}outbound:\n  listen: 127.0.0.1:15001\n  routes:\n    - inference.ml\n    - {{ host: b, address: 127.0.0.1:1, identity: 'spiffe://example.org' }}\n"
        );
        assert_eq!(
            fx.errors(&yaml),
            [
                "outbound.routes[0]: expected a map, found the string `inference.ml`",
                "outbound.routes[1].identity: `spiffe://example.org` has no path; a workload's SPIFFE ID needs one, such as `spiffe://example.org/ns/default/sa/name`",
            ]
        );
    }
}
