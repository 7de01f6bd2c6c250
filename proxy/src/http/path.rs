//! Request-path hygiene (PATH-01, PATH-02 in docs/security.md).
//!
//! A policy reads `context.http.path` as bytes, while the app behind the sidecar may normalise
//! it first: resolve `..`, merge `//`, decode `%2e` or `%61`, cut `;params`. Any path the app
//! could read as a different path than its bytes say is refused here with 400, rather than
//! normalised: what the policy decided on is then exactly what the app serves.

/// Why a path is refused.
pub type PathError = &'static str;

/// Checks that `path` means what its bytes say.
///
/// # Errors
/// A short reason when the path is not origin-form (`/...`), has an empty, `.` or `..`
/// segment, a `;` or `\`, a malformed percent-escape, or a percent-escape of an unreserved
/// character, `/`, `\` or NUL (all of which an app may decode into a different path).
pub fn check(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err("path is not origin-form");
    }
    if path.contains(['\\', ';']) {
        return Err("path has a `\\` or `;`");
    }
    let segments = path.split('/').skip(1);
    let count = path.split('/').count();
    for (i, segment) in segments.enumerate() {
        // The last segment may be empty: `/` and `/dir/` are ordinary paths.
        let last = i + 2 == count;
        if segment.is_empty() && !last {
            return Err("path has an empty segment");
        }
        if segment == "." || segment == ".." {
            return Err("path has a dot segment");
        }
    }
    check_escapes(path.as_bytes())
}

fn check_escapes(bytes: &[u8]) -> Result<(), PathError> {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|b| *b == b'%') {
        let (Some(hi), Some(lo)) = (rest.get(at + 1), rest.get(at + 2)) else {
            return Err("path has a malformed percent-escape");
        };
        let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) else {
            return Err("path has a malformed percent-escape");
        };
        let decoded = hi << 4 | lo;
        if decoded.is_ascii_alphanumeric()
            || matches!(decoded, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | 0)
        {
            return Err("path percent-encodes a character an app would decode");
        }
        rest = rest.get(at + 3..).unwrap_or_default();
    }
    Ok(())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "/",
            "/a",
            "/a/b/",
            "/v1/models:generate",
            "/caf%C3%A9",
            "/a%20b",
            "/.well-known/x",
            "/a..b",
            "/pkg.Service/Method",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn paths_an_app_could_read_differently_are_refused() {
        // PATH-02
        for path in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "//admin",
            "/a//b",
            "/./admin",
            "/admin/.",
            "/admin;x=1",
            "/admin%00",
            "/%61dmin",
            "/admin%",
            "/admin%4",
            "/admin%zz",
            "*",
            "admin",
        ] {
            assert!(check(path).is_err(), "{path}");
        }
    }

    /// Decodes every `%XX` once, as an app might; `None` for a `%` that does not start a
    /// complete escape (the `request_path` fuzz target's oracle).
    fn decode_once(path: &str) -> Option<Vec<u8>> {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == b'%' {
                let digits = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(digits, 16).ok()?);
                i += 3;
            } else {
                out.push(b);
                i += 1;
            }
        }
        Some(out)
    }

    /// Whether `path` has an empty segment before its last, or a `.` or `..` segment.
    fn has_a_segment_that_resolves(path: &[u8]) -> bool {
        let segments: Vec<&[u8]> = path.split(|b| *b == b'/').skip(1).collect();
        segments.iter().enumerate().any(|(i, segment)| {
            (segment.is_empty() && i + 1 != segments.len()) || *segment == b"." || *segment == b".."
        })
    }

    /// What the `request_path` fuzz target asserts of a path the check lets through: it means
    /// what its bytes say, before and after decoding every escape once.
    fn assert_passed_path_is_plain(path: &str) -> Result<(), TestCaseError> {
        if check(path).is_err() {
            return Ok(());
        }
        prop_assert!(path.starts_with('/'), "not origin-form: {:?}", path);
        prop_assert!(!path.contains(['\\', ';']), "{:?}", path);
        prop_assert!(
            !has_a_segment_that_resolves(path.as_bytes()),
            "as sent: {:?}",
            path
        );
        let decoded = decode_once(path);
        prop_assert!(decoded.is_some(), "an incomplete escape passed: {:?}", path);
        let decoded = decoded.unwrap_or_default();
        for byte in [b'/', b'\\', 0] {
            prop_assert_eq!(
                decoded.iter().filter(|b| **b == byte).count(),
                path.bytes().filter(|b| *b == byte).count(),
                "decoding adds a {:?}: {:?}",
                char::from(byte),
                path
            );
        }
        prop_assert!(
            !has_a_segment_that_resolves(&decoded),
            "decoded: {:?}",
            path
        );
        Ok(())
    }

    /// Path-shaped input: segments of the bytes that matter to the check, and escapes of
    /// every byte, well-formed or cut short.
    fn near_valid_path() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => "[a-zA-Z0-9~_.-]{1,4}",
            2 => Just("/".to_owned()),
            1 => prop::sample::select(vec![".", "..", ";", "\\", "%", "//", ":", "é"])
                .prop_map(str::to_owned),
            3 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
            2 => any::<u8>().prop_map(|b| format!("%{b:02x}")),
            1 => "%[0-9a-zA-Z]?",
        ];
        (any::<bool>(), prop::collection::vec(piece, 0..12)).prop_map(|(slash, pieces)| {
            let path = pieces.concat();
            if slash { format!("/{path}") } else { path }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_request_path_check_never_panics_on_arbitrary_strings(path in any::<String>()) {
            assert_passed_path_is_plain(&path)?;
        }

        #[test]
        fn the_request_path_check_never_panics_on_path_shaped_strings_and_passes_only_plain_paths(
            path in near_valid_path(),
        ) {
            assert_passed_path_is_plain(&path)?;
        }
    }
}
