//! The `audit_verify` fuzz target's properties, as proptests: `hopgate audit verify` reads files
//! anyone may hand it, so no bytes make it panic, and a log it finds intact without bundles is
//! never reported as trusted.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// What the `audit_verify` fuzz target asserts of any file: reading it never panics, and a log
/// found intact without a trust check is never reported as trusted.
fn assert_untrusted_without_bundles(contents: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(report) = verify(contents, None) {
        prop_assert!(!report.trusted, "nothing vouched for the signer");
    }
    let _ = first_signer(contents);
    Ok(())
}

/// An intact log's lines (records, seals, a log line between), and the checker of its bundle.
static INTACT: LazyLock<(Vec<String>, SpiffeClientVerifier)> = LazyLock::new(|| {
    let pki = Pki::new();
    let mut log = Log::new(pki.identity(ID));
    log.records(2)
        .seal()
        .log_line("2026-12-03T06:45:02Z INFO hopgate: reloaded")
        .records(1)
        .seal();
    (lines(&log), pki.checker)
});

/// One change to a log.
#[derive(Clone, Debug)]
enum Edit {
    /// Removes a line.
    Delete(Index),
    /// Swaps two lines.
    Swap(Index, Index),
    /// Repeats a line after itself.
    Repeat(Index),
    /// XORs one byte of a line.
    Flip(Index, Index, u8),
    /// Cuts a line short.
    Truncate(Index, Index),
    /// Replaces the value after one of a line's `":` with this JSON.
    Value(Index, Index, &'static str),
    /// Puts this text before a line's first `{`.
    Prefix(Index, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let json = prop::sample::select(vec![
        "null",
        "0",
        "-1",
        "18446744073709551616",
        "1e400",
        r#""""#,
        r#""%""#,
        "[]",
        "{}",
        r#"["AAAA"]"#,
        r#""ES256""#,
        r#""HS256""#,
        r#""hopgate::audit""#,
        r#""hopgate::audit.seal""#,
        r#""2026-12-03T06:45:01Z""#,
        r#""not a time""#,
        r#""\ud800""#,
        "true",
    ]);
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::Delete),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        1 => any::<Index>().prop_map(Edit::Repeat),
        3 => (any::<Index>(), any::<Index>(), 1..=255u8).prop_map(|(l, at, b)| Edit::Flip(l, at, b)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(l, at)| Edit::Truncate(l, at)),
        3 => (any::<Index>(), any::<Index>(), json).prop_map(|(l, at, v)| Edit::Value(l, at, v)),
        1 => (any::<Index>(), "[ -~]{0,8}").prop_map(|(l, text)| Edit::Prefix(l, text)),
    ]
}

/// The intact log with a few edits, as bytes (a flip may leave a line that is not UTF-8).
fn near_valid_log() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(edit(), 1..4).prop_map(|edits| {
        let mut lines: Vec<Vec<u8>> = INTACT.0.iter().map(|l| l.clone().into_bytes()).collect();
        for edit in edits {
            let count = lines.len();
            if count == 0 {
                break;
            }
            match edit {
                Edit::Delete(l) => {
                    lines.remove(l.index(count));
                }
                Edit::Swap(a, b) => lines.swap(a.index(count), b.index(count)),
                Edit::Repeat(l) => {
                    let l = l.index(count);
                    lines.insert(l, lines[l].clone());
                }
                Edit::Flip(l, at, bits) => {
                    let line = &mut lines[l.index(count)];
                    if !line.is_empty() {
                        let at = at.index(line.len());
                        line[at] ^= bits;
                    }
                }
                Edit::Truncate(l, at) => {
                    let line = &mut lines[l.index(count)];
                    line.truncate(at.index(line.len() + 1));
                }
                Edit::Value(l, at, json) => {
                    let line = &mut lines[l.index(count)];
                    let values: Vec<usize> = line
                        .windows(2)
                        .enumerate()
                        .filter(|(_, w)| *w == b"\":")
                        .map(|(i, _)| i + 2)
                        .collect();
                    if values.is_empty() {
                        continue;
                    }
                    let start = values[at.index(values.len())];
                    // The old value ends at the next `,` or `}` outside a string, near enough.
                    let mut end = start;
                    let mut quoted = false;
                    while let Some(&b) = line.get(end) {
                        match b {
                            b'"' if line.get(end.wrapping_sub(1)) != Some(&b'\\') => {
                                quoted = !quoted;
                            }
                            b',' | b'}' if !quoted => break,
                            _ => {}
                        }
                        end += 1;
                    }
                    line.splice(start..end, json.bytes());
                }
                Edit::Prefix(l, text) => {
                    let line = &mut lines[l.index(count)];
                    let at = line.iter().position(|&b| b == b'{').unwrap_or(0);
                    line.splice(at..at, text.into_bytes());
                }
            }
        }
        lines.join(&b'\n').into_iter().chain([b'\n']).collect()
    })
}

#[test]
fn the_intact_log_the_proptests_perturb_verifies() {
    let contents = joined(&INTACT.0);
    assert!(
        verify(contents.as_bytes(), Some(&INTACT.1))
            .unwrap()
            .trusted
    );
    assert!(!verify(contents.as_bytes(), None).unwrap().trusted);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_audit_log_verifier_never_panics_on_arbitrary_bytes(
        contents in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        assert_untrusted_without_bundles(&contents)?;
    }

    #[test]
    fn the_audit_log_verifier_never_panics_on_audit_shaped_lines(
        lines in prop::collection::vec(
            prop_oneof![
                Just(r#"{"target":"hopgate::audit"}"#.to_owned()),
                Just(r#"{"target":"hopgate::audit.seal","seq":0}"#.to_owned()),
                r#"[ -~]{0,4}\{"target":"hopgate::audit(\.seal)?"[ -~]{0,60}\}?"#,
                "[ -~]{0,40}",
            ],
            0..8,
        ),
    ) {
        assert_untrusted_without_bundles(lines.join("\n").as_bytes())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn the_audit_log_verifier_never_panics_on_a_perturbed_sealed_log(contents in near_valid_log()) {
        assert_untrusted_without_bundles(&contents)?;
        // With bundles, the chain check runs on whatever `x5c` the edits left.
        let _ = verify(&contents, Some(&INTACT.1));
    }
}
