//! Hop-by-hop header hygiene (RFC 9110 §7.6.1; docs/security.md, "Hop-by-hop hygiene").
//!
//! A proxy must parse `Connection`, remove every field it nominates, then remove the fixed set of
//! hop-by-hop fields. This runs on requests (client → app) and on responses (app → client).

use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderName, TE, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Method, Uri, Version};

/// Fields that describe one connection, never the message: removed both ways.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    // Connection-specific by RFC 7540 §3.2.1: it only ever asked for an h2c upgrade (SMG-21).
    "http2-settings",
];

/// Fields `Connection` must never nominate: dropping them would change how the message is
/// framed or routed (SMG-22).
const NOT_NOMINABLE: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// Framing fields an app reading `_` as `-` would take a differently spelled field for
/// (SMG-09): such a spelling is refused, never forwarded.
const FRAMING_FOLDS: [&str; 4] = [
    "transfer-encoding",
    "content-length",
    "keep-alive",
    "proxy-connection",
];

/// Why a request's connection-level headers cannot be forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopByHopError {
    /// `Connection` nominates a framing or routing field.
    NominatesFramingField,
    /// `Connection` is not a comma-separated list of header names.
    MalformedConnection,
}

/// Removes every field whose name is not one of `names` but folds into one once `_` is read as
/// `-` (`hop_token`, `X_Forwarded_Client_Cert`; names are lowercase already): CGI, WSGI and
/// nginx-style servers fold them into the same variable, so an app would read a spoofed copy
/// as the real one (HDR rules and CHA-04b in docs/security.md). One pass over the names; the
/// names themselves are the caller's to remove or set.
pub(crate) fn strip_folded_spellings(headers: &mut HeaderMap, names: &[&HeaderName]) {
    let folds = |name: &HeaderName| {
        let name = name.as_str();
        name.contains('_') && names.iter().any(|target| folds_into(name, target.as_str()))
    };
    let spoofs: Vec<HeaderName> = headers.keys().filter(|n| folds(n)).cloned().collect();
    for name in spoofs {
        headers.remove(name);
    }
}

/// Whether `name` (lowercase) is `target` once each `_` in it is read as `-`.
fn folds_into(name: &str, target: &str) -> bool {
    name.len() == target.len()
        && name
            .bytes()
            .zip(target.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// Removes every hop-by-hop field from `headers`.
///
/// `TE: trailers` is kept: it is the one TE value an HTTP/2 or gRPC peer needs end to end.
///
/// # Errors
/// [`HopByHopError`] when `Connection` nominates `Host`, `Content-Length` or
/// `Transfer-Encoding`, or is not a list of header names: a request must then be refused.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Result<(), HopByHopError> {
    // Everything strippable is stripped even when the result is an error, so a caller that
    // forwards anyway (a response from the app) still sends no hop-by-hop field.
    let mut result = Ok(());
    let mut nominated: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else {
            result = Err(HopByHopError::MalformedConnection);
            continue;
        };
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match HeaderName::from_bytes(token.as_bytes()) {
                Ok(name) if NOT_NOMINABLE.contains(&name.as_str()) => {
                    result = Err(HopByHopError::NominatesFramingField);
                }
                Ok(name) => nominated.push(name),
                Err(_) => result = Err(HopByHopError::MalformedConnection),
            }
        }
    }
    for name in &nominated {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let te_trailers_only = headers
        .get_all(TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers_only {
        headers.remove(TE);
    }
    result
}

/// Checks how a request's body is framed (SMG-01..SMG-06, SMG-09, SMG-14 in
/// docs/security.md), before the hop-by-hop fields are stripped, so that the length of the body
/// has exactly one reading:
/// - a `Transfer-Encoding` must be exactly one `chunked`, on one line or across several:
///   chunked applied twice is forbidden (RFC 9112 §7), and any other coding would reach the app
///   still applied once hopgate has removed the field;
/// - not both `Transfer-Encoding` and `Content-Length` (RFC 9112 §6.3 lets a server pick one;
///   hopgate refuses to), and at most one `Content-Length`, even with the same value twice;
/// - no GET or HEAD with a body: an app that does not expect one could read it as its next
///   request on the connection hopgate reuses;
/// - no field that an app reading `_` as `-` would take for a framing field.
///
/// # Errors
/// A short reason for the 400.
pub fn check_framing(method: &Method, headers: &HeaderMap) -> Result<(), &'static str> {
    let mut codings = 0usize;
    for value in headers.get_all(TRANSFER_ENCODING) {
        let value = value
            .to_str()
            .map_err(|_| "transfer-encoding is not visible ASCII")?;
        for coding in value.split(',').map(str::trim) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err("transfer-encoding other than chunked");
            }
            codings += 1;
        }
    }
    if codings > 1 {
        return Err("chunked applied more than once");
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err("more than one content-length");
    }
    if codings > 0 && length.is_some() {
        return Err("both transfer-encoding and content-length");
    }
    let has_body = codings > 0 || length.is_some_and(|length| length.as_bytes() != b"0");
    if has_body && (method == Method::GET || method == Method::HEAD) {
        return Err("a GET or HEAD request with a body");
    }
    // `folds_into` compares lengths first: most names are ruled out without reading them.
    if headers.keys().any(|name| {
        let name = name.as_str();
        FRAMING_FOLDS.iter().any(|target| folds_into(name, target)) && name.contains('_')
    }) {
        return Err("a field name that folds into a framing field");
    }
    Ok(())
}

/// Checks that the request names one authority (SMG-17, PATH-03 in docs/security.md): one
/// `Host` on HTTP/1.1 and at most one otherwise, readable, and equal to the request target's authority when both are present (an
/// absolute-form HTTP/1.1 target, or `:authority` on HTTP/2). Otherwise the policy and the app
/// could each pick a different one.
///
/// # Errors
/// A short reason for the 400.
pub fn check_authority(parts: &Parts) -> Result<(), &'static str> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one host header");
    }
    let Some(host) = host else {
        // RFC 9112 §3.2: an HTTP/1.1 request without `Host` is refused, or the app would be
        // handed an authority the caller never named. HTTP/2 names it in `:authority`.
        if parts.version == Version::HTTP_11 {
            return Err("an HTTP/1.1 request without a host header");
        }
        return Ok(());
    };
    let host = host
        .to_str()
        .map_err(|_| "host header is not visible ASCII")?;
    if !is_host(host) {
        return Err("host header is not a host and port");
    }
    match parts.uri.authority() {
        Some(authority) if !authority.as_str().eq_ignore_ascii_case(host) => {
            Err("host header differs from the request target's authority")
        }
        _ => Ok(()),
    }
}

/// Whether `host` can be a `Host` value (RFC 9110 §7.2: `uri-host [ ":" port ]`): empty, or
/// made of the characters of a registered name, an IP literal and a port. No user info, no
/// space, nothing an app could split differently.
fn is_host(host: &str) -> bool {
    host.bytes().all(|b| {
        matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~'
            | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
            | b'%' | b':' | b'[' | b']')
    })
}

/// The authority a request names: `Host`, else the request target's (absolute-form, or
/// `:authority` on HTTP/2); `None` when neither is there or it is empty. The one place it is
/// worked out: routing, the policy's `context.http.host` and the span's `server.address` all
/// read it. [`check_authority`] has made sure the two agree (ignoring case) when both are sent.
pub(crate) fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(http::uri::Authority::as_str))
        .filter(|a| !a.is_empty())
}

/// A credential header given twice, or not as visible ASCII: which one to believe is ambiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmbiguousHeader;

/// The one value of `name` as text, or `None` when it is absent.
///
/// # Errors
/// [`AmbiguousHeader`] when `name` appears more than once or its value is not visible ASCII:
/// a credential is never picked from several.
pub fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h str>, AmbiguousHeader> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AmbiguousHeader);
    }
    value.to_str().map(Some).map_err(|_| AmbiguousHeader)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn fixed_hop_by_hop_fields_are_removed() {
        // HDR-05
        let mut map = headers(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("transfer-encoding", "chunked"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut map).unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(map["x-app"], "kept");
    }

    #[test]
    fn fields_named_in_connection_are_removed() {
        let mut map = headers(&[
            ("connection", "close, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut map).unwrap();
        assert_eq!(map.len(), 1);
    }

    #[test]
    fn te_trailers_is_kept() {
        let mut map = headers(&[("te", "trailers")]);
        strip_hop_by_hop(&mut map).unwrap();
        assert_eq!(map["te"], "trailers");
    }

    #[test]
    fn connection_nominating_framing_fields_is_rejected() {
        // SMG-22
        for field in ["content-length", "Transfer-Encoding", "host"] {
            let mut map = HeaderMap::new();
            map.insert(CONNECTION, HeaderValue::from_str(field).unwrap());
            assert_eq!(
                strip_hop_by_hop(&mut map),
                Err(HopByHopError::NominatesFramingField)
            );
        }
    }

    #[test]
    fn one_consistent_authority_passes_and_ambiguous_ones_do_not() {
        // SMG-17
        let parts_of = |version: Version, uri: &str, hosts: &[&'static str]| {
            let mut req = http::Request::get(uri).version(version);
            for host in hosts {
                req = req.header(HOST, *host);
            }
            req.body(()).unwrap().into_parts().0
        };
        let parts = |uri: &str, hosts: &[&'static str]| parts_of(Version::HTTP_11, uri, hosts);
        assert_eq!(check_authority(&parts("/", &["a.test"])), Ok(()));
        // HTTP/2 names the authority in `:authority`; HTTP/1.1 must send `Host` even then.
        let h2 = parts_of(Version::HTTP_2, "https://a.test/", &[]);
        assert_eq!(check_authority(&h2), Ok(()));
        assert!(check_authority(&parts("https://a.test/", &[])).is_err());
        assert!(check_authority(&parts("/", &[])).is_err());
        let h10 = parts_of(Version::HTTP_10, "/", &[]);
        assert_eq!(
            check_authority(&h10),
            Ok(()),
            "HTTP/1.0 has no Host to require"
        );
        assert_eq!(
            check_authority(&parts("https://a.test/", &["A.test"])),
            Ok(())
        );
        assert!(check_authority(&parts("/", &["a.test", "b.test"])).is_err());
        assert!(check_authority(&parts("https://a.test/", &["b.test"])).is_err());
    }

    fn check_framing(headers: &HeaderMap) -> Result<(), &'static str> {
        super::check_framing(&Method::POST, headers)
    }

    #[test]
    fn a_body_length_must_have_one_reading_smg_01_to_smg_03() {
        assert_eq!(check_framing(&headers(&[("content-length", "5")])), Ok(()));
        for bad in [
            &[("transfer-encoding", "chunked"), ("content-length", "5")][..],
            &[("content-length", "5"), ("content-length", "5")],
            &[("content-length", "5"), ("content-length", "6")],
        ] {
            assert!(check_framing(&headers(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_get_or_head_with_a_body_is_refused_but_an_empty_length_is_not_smg_14() {
        let get = |pairs| super::check_framing(&Method::GET, &headers(pairs));
        assert_eq!(get(&[("content-length", "0")]), Ok(()));
        assert!(get(&[("content-length", "5")]).is_err());
        assert!(get(&[("transfer-encoding", "chunked")]).is_err());
        let head = super::check_framing(&Method::HEAD, &headers(&[("content-length", "1")]));
        assert!(head.is_err());
        let delete = super::check_framing(&Method::DELETE, &headers(&[("content-length", "1")]));
        assert_eq!(delete, Ok(()));
    }

    #[test]
    fn a_field_that_folds_into_a_framing_field_is_refused_smg_09() {
        for name in [
            "transfer_encoding",
            "content_length",
            "keep_alive",
            "proxy_connection",
        ] {
            assert!(
                check_framing(&headers(&[(name, "chunked")])).is_err(),
                "{name}"
            );
        }
        assert_eq!(check_framing(&headers(&[("x_custom", "1")])), Ok(()));
    }

    #[test]
    fn a_host_that_is_not_a_host_and_port_is_refused_smg_17() {
        for good in ["a.test", "a.test:8080", "[::1]:443", "10.0.0.1", ""] {
            assert!(is_host(good), "{good}");
        }
        for bad in ["a b", "user@a.test", "a.test/x", "a\\b", "a\"b"] {
            assert!(!is_host(bad), "{bad}");
        }
    }

    #[test]
    fn only_one_chunked_coding_frames_a_body_smg_05_smg_06() {
        assert_eq!(check_framing(&headers(&[])), Ok(()));
        assert_eq!(
            check_framing(&headers(&[("transfer-encoding", "chunked")])),
            Ok(())
        );
        assert_eq!(
            check_framing(&headers(&[("transfer-encoding", "Chunked")])),
            Ok(())
        );
        for bad in [
            &[("transfer-encoding", "chunked, chunked")][..],
            &[("transfer-encoding", "chunked,chunked")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "gzip, chunked")],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "chunked, identity")],
            &[("transfer-encoding", "xchunked")],
            &[("transfer-encoding", "gzip")],
            &[("transfer-encoding", "")],
        ] {
            assert!(check_framing(&headers(bad)).is_err(), "{bad:?}");
        }
        let mut opaque = HeaderMap::new();
        opaque.insert(
            TRANSFER_ENCODING,
            HeaderValue::from_bytes(b"chunked\xff").unwrap(),
        );
        assert_eq!(
            check_framing(&opaque),
            Err("transfer-encoding is not visible ASCII")
        );
    }

    #[test]
    fn connection_with_a_non_token_is_rejected() {
        let mut map = headers(&[("connection", "a b")]);
        assert_eq!(
            strip_hop_by_hop(&mut map),
            Err(HopByHopError::MalformedConnection)
        );
    }
}
