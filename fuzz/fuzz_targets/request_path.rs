//! Fuzzes the request-path check (PATH-01, PATH-02 in docs/security.md), which every request's
//! path passes before the policy reads its bytes: it must never panic, and a path it lets
//! through means what its bytes say, checked here independently of it: origin-form, no `\` or
//! `;`, no empty segment but the last, no `.` or `..` segment, every `%` a complete escape; and
//! decoding every escape once (as an app might) adds no `/`, `\` or NUL and yields no dot
//! segment. (A raw NUL or other control byte is hyper's to refuse: it never parses into a
//! request target, so the check is not asked about it.)
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run request_path

#![no_main]

use hopgate_proxy::http::path::check;
use libfuzzer_sys::fuzz_target;

/// Decodes every `%XX` once; `None` for a `%` that does not start a complete escape.
fn decode_once(path: &str) -> Option<Vec<u8>> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let digits = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(
                u8::from_str_radix(digits, 16)
                    .ok()
                    .filter(|_| digits.bytes().all(|d| d.is_ascii_hexdigit()))?,
            );
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// The checks of segments that make a path mean something else once resolved.
fn assert_plain_segments(path: &[u8], what: &str) {
    let segments: Vec<&[u8]> = path.split(|b| *b == b'/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            !segment.is_empty() || i + 1 == segments.len(),
            "{what}: an empty segment in {path:?}"
        );
        assert!(
            *segment != b"." && *segment != b"..",
            "{what}: a dot segment in {path:?}"
        );
    }
}

fuzz_target!(|path: &str| {
    if check(path).is_err() {
        return;
    }
    assert!(path.starts_with('/'), "not origin-form: {path:?}");
    assert!(!path.contains(['\\', ';']), "{path:?}");
    assert_plain_segments(path.as_bytes(), "as sent");
    let decoded = decode_once(path).expect("every `%` starts a complete escape");
    for byte in [b'/', b'\\', 0] {
        assert_eq!(
            decoded.iter().filter(|b| **b == byte).count(),
            path.bytes().filter(|b| *b == byte).count(),
            "decoding adds a {:?}: {path:?}",
            char::from(byte)
        );
    }
    assert_plain_segments(&decoded, "decoded");
});
