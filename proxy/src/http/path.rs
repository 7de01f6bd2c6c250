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
}
