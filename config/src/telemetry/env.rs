//! The standard OpenTelemetry environment variables hopgate reads, and their list format.
//!
//! A variable fills only what the file leaves unset, and is read only when it would be used:
//! with export off, the `OTEL_EXPORTER_OTLP_*` variables other than the endpoints are never
//! looked at, so a pod-wide environment meant for other containers cannot break a sidecar that
//! does not export. Each problem is reported at the variable's name (`$OTEL_…`), and never
//! shows a header's value.

use crate::check::Check;

/// The collector for traces, used as it is (for HTTP, the full URL, path included).
pub(crate) const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The collector for every signal: for HTTP, `/v1/traces` is appended.
pub(crate) const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub(crate) const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
pub(crate) const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
pub(crate) const TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
pub(crate) const HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
pub(crate) const TRACES_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION";
pub(crate) const COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";
pub(crate) const TRACES_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE";
pub(crate) const CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
/// Client certificate files: hopgate presents its SVID instead, so these are refused.
pub(crate) const CLIENT_FILES: [&str; 4] = [
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];
pub(crate) const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub(crate) const RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// A variable's value with the name it came from: the traces-specific one first, then the
/// generic one.
pub(crate) fn first_of(check: &Check, names: [&'static str; 2]) -> Option<(String, &'static str)> {
    names
        .into_iter()
        .find_map(|name| check.env_var(name).map(|value| (value, name)))
}

/// `$NAME` as an error path.
pub(crate) fn path(name: &str) -> String {
    format!("${name}")
}

/// A `key=value,key2=value2` list (the W3C Baggage format the OTel variables use): entries
/// split at `,`, whitespace around keys and values trimmed, empty entries skipped, values
/// URL-decoded (`%20`, `%2C`). Each problem is reported at `$var`, naming the entry by its
/// position (an entry without `=` may be a secret pasted whole) or its key, never its value.
/// Returns the good entries, and whether every entry was good.
pub(crate) fn list(check: &mut Check, var: &str, value: &str) -> (Vec<(String, String)>, bool) {
    let mut entries = Vec::new();
    let mut ok = true;
    for (i, entry) in value.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let n = i + 1;
        let Some((key, raw)) = entry.split_once('=') else {
            check.error(
                path(var),
                format!("entry {n} is not `key=value` (entries are separated by `,`)"),
            );
            ok = false;
            continue;
        };
        let key = key.trim();
        if key.is_empty() {
            check.error(path(var), format!("entry {n} has an empty key"));
            ok = false;
            continue;
        }
        match percent_decode(raw.trim()) {
            Some(decoded) => entries.push((key.to_owned(), decoded)),
            None => {
                let key = key.escape_debug();
                check.error(
                    path(var),
                    format!(
                        "the value of `{key}` is not URL-encoded UTF-8 (a `%` must start an escape such as `%2C`)"
                    ),
                );
                ok = false;
            }
        }
    }
    (entries, ok)
}

/// `%XX` escapes decoded; `None` for a `%` not followed by two hex digits, or bytes that are
/// not UTF-8. `+` stays `+` (this is not a form body).
fn percent_decode(value: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.bytes();
    while let Some(b) = rest.next() {
        if b == b'%' {
            let hi = hex(rest.next()?)?;
            let lo = hex(rest.next()?)?;
            bytes.push(hi << 4 | lo);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `telemetry.service_name`, else `$OTEL_SERVICE_NAME`, else the `service.name` of
/// `$OTEL_RESOURCE_ATTRIBUTES`; with the path to report a problem at.
pub(crate) fn service_name(
    file: Option<String>,
    attributes: &[(String, String)],
    check: &Check,
) -> Option<(String, String)> {
    if let Some(name) = file {
        return Some((name, "telemetry.service_name".to_owned()));
    }
    if let Some(name) = check.env_var(SERVICE_NAME) {
        return Some((name, path(SERVICE_NAME)));
    }
    attributes
        .iter()
        .find(|(key, _)| key == "service.name")
        .map(|(_, name)| (name.clone(), path(RESOURCE_ATTRIBUTES)))
}

/// `$OTEL_RESOURCE_ATTRIBUTES`, every entry (`service.name` too; the caller picks it out).
pub(crate) fn resource_attributes(check: &mut Check) -> Option<Vec<(String, String)>> {
    let Some(value) = check.env_var(RESOURCE_ATTRIBUTES) else {
        return Some(Vec::new());
    };
    let (entries, ok) = list(check, RESOURCE_ATTRIBUTES, &value);
    ok.then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_are_decoded_and_a_broken_one_is_refused() {
        assert_eq!(percent_decode("a%20b%2Cc").as_deref(), Some("a b,c"));
        assert_eq!(percent_decode("Bearer+x").as_deref(), Some("Bearer+x"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
