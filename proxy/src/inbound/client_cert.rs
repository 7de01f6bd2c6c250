//! The identity header the local app receives: `x-forwarded-client-cert` (XFCC).
//!
//! SECURITY-SENSITIVE. The app trusts this header to say who called, so a caller must never be
//! able to set it: every client-supplied copy is removed, under any spelling the app might fold
//! into the same name (`x_forwarded_client_cert`), and then one value is set from the verified
//! TLS connection, in Envoy's `SANITIZE_SET` format: `By=<own ID>;Hash=<hex SHA-256 of the peer
//! certificate>;URI=<peer ID>` (HDR-01, HDR-02 in docs/security.md).

use hopgate_config::SpiffeId;
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::http::headers::strip_folded_spellings;
use crate::tls::PeerIdentity;

/// The header name, as Envoy and Istio spell it.
pub(crate) const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The XFCC value for calls on a connection from `peer` to `own`: computed once per connection.
///
/// `None` only if the value cannot be a header value, which a canonical SPIFFE ID and a hex hash
/// never produce; the caller must then refuse the connection's requests rather than forward.
pub(crate) fn client_cert_value(own: &SpiffeId, peer: &PeerIdentity) -> Option<HeaderValue> {
    let value = format!(
        "By={own};Hash={hash};URI={peer}",
        hash = peer.cert_sha256_hex(),
        peer = peer.id(),
    );
    HeaderValue::try_from(value).ok()
}

/// Removes every caller-supplied XFCC, and every spelling that folds into it or into
/// `token_header` (`hop_token`: the verified token itself stays), then sets `value`, the
/// verified XFCC.
pub(crate) fn set_client_cert_header(
    headers: &mut HeaderMap,
    value: &HeaderValue,
    token_header: &HeaderName,
) {
    headers.remove(&XFCC);
    strip_folded_spellings(headers, &[&XFCC, token_header]);
    headers.insert(XFCC, value.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_spoofed_header_is_removed_and_one_verified_value_set() {
        // HDR-01, HDR-02, CHA-04b
        let mut map = HeaderMap::new();
        map.append(
            "X-Forwarded-Client-Cert",
            HeaderValue::from_static("URI=spiffe://evil/x"),
        );
        map.append(
            "x-forwarded-client-cert",
            HeaderValue::from_static("URI=spiffe://evil/y"),
        );
        map.append(
            "x_forwarded_client_cert",
            HeaderValue::from_static("URI=spiffe://evil/z"),
        );
        map.append("hop_token", HeaderValue::from_static("unverified"));
        map.append("hop-token", HeaderValue::from_static("verified"));
        map.append("x-app", HeaderValue::from_static("kept"));
        let verified = HeaderValue::from_static("By=spiffe://td/b;URI=spiffe://td/a");
        set_client_cert_header(&mut map, &verified, &HeaderName::from_static("hop-token"));
        assert_eq!(map.len(), 3, "{map:?}");
        assert_eq!(map.get_all(XFCC).iter().collect::<Vec<_>>(), [&verified]);
        assert_eq!(map["hop-token"], "verified");
        assert!(map.contains_key("x-app"));
    }
}
