//! The intent headers (`intent-*`, prefix from `intent.header_prefix`): one reader, one set of
//! rules, for the Cedar context (`context.intent`) and the token's `tctx` alike.
//!
//! A value either reader could take differently from the other is refused: an intent header
//! that appears twice, or one that is not visible ASCII, is a 400 before any decision or token
//! reads it (so a duplicate can neither slip past the policy into `tctx` nor be read one way by
//! Cedar and another by the next hop).

use http::HeaderMap;

use crate::http::{Malformed, RequestError};

/// Every intent header as `(name without the prefix, value)`, in header order.
///
/// # Errors
/// [`RequestError::BadRequest`] when an intent header is not visible ASCII or appears twice.
pub(crate) fn entries<'h>(
    headers: &'h HeaderMap,
    prefix: &str,
) -> Result<Vec<(&'h str, &'h str)>, RequestError> {
    let mut intent: Vec<(&'h str, &'h str)> = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(prefix) else {
            continue;
        };
        let value = value.to_str().map_err(|_| {
            RequestError::BadRequest(Malformed::Intent, "intent header is not visible ASCII")
        })?;
        if intent.iter().any(|(k, _)| *k == key) {
            return Err(RequestError::BadRequest(
                Malformed::Intent,
                "intent header appears more than once",
            ));
        }
        intent.push((key, value));
    }
    Ok(intent)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn intent_headers_are_read_without_their_prefix_in_order() {
        let mut headers = HeaderMap::new();
        headers.insert("intent-purpose", HeaderValue::from_static("support"));
        headers.insert("x-other", HeaderValue::from_static("no"));
        headers.insert("intent-action", HeaderValue::from_static("read"));
        let entries = entries(&headers, "intent-").unwrap();
        assert_eq!(entries, [("purpose", "support"), ("action", "read")]);
    }

    #[test]
    fn a_repeated_or_non_ascii_intent_header_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append("intent-purpose", HeaderValue::from_static("support"));
        headers.append("intent-purpose", HeaderValue::from_static("billing"));
        assert!(matches!(
            entries(&headers, "intent-"),
            Err(RequestError::BadRequest(
                _,
                "intent header appears more than once"
            ))
        ));
        let mut headers = HeaderMap::new();
        headers.insert(
            "intent-purpose",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(matches!(
            entries(&headers, "intent-"),
            Err(RequestError::BadRequest(
                _,
                "intent header is not visible ASCII"
            ))
        ));
    }
}
