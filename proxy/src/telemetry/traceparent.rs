//! W3C Trace Context `traceparent`, read and written by hand.
//!
//! ```text
//! traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
//!              ^^ version  ^^^^ trace-id (32 hex)  ^^^^ parent-id (16) ^^ flags
//! ```
//!
//! The SDK's propagator splits the header into a `Vec`, parses each part through
//! `from_str_radix` and formats the outgoing one with `format!`: about 4,000 instructions each
//! way on every request. Here a header is checked and decoded in one pass over its 55 bytes, and
//! written into one 55-byte buffer.
//!
//! The parser follows the W3C grammar, which is stricter than the SDK's: every field is lowercase
//! hex of its exact length, the version is not `ff`, version `00` is exactly 55 bytes, and a later
//! version may only add fields after a `-`. Neither id may be all zeros. Only the `sampled` flag
//! is kept, as the specification asks of unknown flags.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};

/// The header's name.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A `traceparent` of version `00` is this long; later versions are at least this long.
const LEN: usize = 55;

/// The caller's trace context: trace id, parent span id and flags, or `None` when `value` is not
/// a valid `traceparent`.
pub(super) fn parse(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_ascii();
    let (head, rest) = value.split_at_checked(LEN)?;
    let [v0, v1, b'-', id @ .., b'-', f0, f1] = head else {
        return None;
    };
    let version = hex_byte(*v0, *v1)?;
    match (version, rest) {
        (0xff, _) | (0, [_, ..]) => return None,
        (_, []) | (_, [b'-', ..]) => {}
        _ => return None,
    }
    let (trace, span) = id.split_at_checked(32)?;
    let [b'-', span @ ..] = span else {
        return None;
    };
    let (high, low) = trace.split_at_checked(16)?;
    let trace = u128::from(hex_u64(high)?) << 64 | u128::from(hex_u64(low)?);
    let span = hex_u64(span)?;
    let flags = hex_byte(*f0, *f1)?;
    (trace != 0 && span != 0).then(|| {
        (
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::new(flags) & TraceFlags::SAMPLED,
        )
    })
}

/// The caller's trace context, read once per request from its `traceparent`: the request span's
/// parent, and the audit record's `trace_id` when there is no span to take it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CallerTrace {
    pub(super) trace_id: TraceId,
    pub(super) span_id: SpanId,
    pub(super) flags: TraceFlags,
}

impl CallerTrace {
    /// The context `headers` carry, when their one `traceparent` is valid; a malformed one is
    /// ignored, never an error (TEL-02 in docs/security.md).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let (trace_id, span_id, flags) = parse(headers.get(TRACEPARENT)?.as_bytes())?;
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The trace id's 16 bytes.
    pub(crate) fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id.to_bytes()
    }

    /// The trace id as its 32 hex digits.
    pub(crate) fn trace_id(&self) -> TraceIdHex {
        TraceIdHex::new(self.trace_id)
    }
}

/// The `traceparent` naming `cx` as the parent, version `00`.
pub(super) fn format(cx: &SpanContext) -> HeaderValue {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let flags = (cx.trace_flags() & TraceFlags::SAMPLED).to_u8();
    if let Some(trace) = out.get_mut(3..35) {
        write_hex(trace, &cx.trace_id().to_bytes());
    }
    if let Some(span) = out.get_mut(36..52) {
        write_hex(span, &cx.span_id().to_bytes());
    }
    if let Some(flag_digits) = out.get_mut(53..55) {
        write_hex(flag_digits, &[flags]);
    }
    // Only lowercase hex digits and `-` were written, all valid in a header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A trace id as its 32 lowercase hex digits, kept on the stack: the audit record's `trace_id`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceIdHex([u8; 32]);

impl TraceIdHex {
    pub(super) fn new(trace_id: TraceId) -> Self {
        let mut out = [b'0'; 32];
        write_hex(&mut out, &trace_id.to_bytes());
        Self(out)
    }

    /// The 32 digits.
    pub fn as_str(&self) -> &str {
        // Only hex digits are ever written, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for TraceIdHex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Each byte's two lowercase hex digits.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of range fails the build"
)]
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [DIGITS[byte >> 4], DIGITS[byte & 0xf]];
        byte += 1;
    }
    pairs
};

/// Marks a byte that is not a lowercase hex digit in [`HEX_VALUES`].
const NOT_HEX: u8 = 0x80;

/// Each byte's value as a lowercase hex digit, or [`NOT_HEX`].
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of range fails the build"
)]
const HEX_VALUES: [u8; 256] = {
    let mut values = [NOT_HEX; 256];
    let mut digit = 0;
    while digit < 16 {
        values[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

/// Writes `bytes` as lowercase hex into `out`, two digits a byte, most significant first.
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(HEX_PAIRS.get(usize::from(*byte)).unwrap_or(&[b'0'; 2]));
    }
}

fn hex_byte(high: u8, low: u8) -> Option<u8> {
    u8::try_from(hex_u64(&[high, low])?).ok()
}

/// Up to 16 lowercase hex digits; the caller fixes how many. One table lookup a digit, and one
/// check at the end.
fn hex_u64(digits: &[u8]) -> Option<u64> {
    let mut value = 0;
    let mut seen = 0;
    for &c in digits {
        let digit = HEX_VALUES.get(usize::from(c)).copied().unwrap_or(NOT_HEX);
        seen |= digit;
        value = value << 4 | u64::from(digit & 0xf);
    }
    (seen & NOT_HEX == 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use proptest::prelude::*;

    use http::{HeaderMap, HeaderValue};

    use super::{CallerTrace, TRACEPARENT, TraceIdHex, format, parse};

    /// The trace id the audit record takes from a request carrying `traceparent: value`.
    fn trace_id(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_str(value).ok()?);
        CallerTrace::from_headers(&headers).map(|t| t.trace_id().as_str().to_owned())
    }

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    struct One<'a>(&'a str);

    impl Extractor for One<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }

        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }

    /// What the SDK's propagator makes of `value`.
    fn sdk(value: &str) -> Option<SpanContext> {
        let cx = TraceContextPropagator::new().extract(&One(value));
        let span = cx.span();
        let found = span.span_context();
        found.is_valid().then(|| found.clone())
    }

    fn ours(value: &str) -> Option<SpanContext> {
        parse(value.as_bytes()).map(|(trace, span, flags)| {
            SpanContext::new(trace, span, flags, true, TraceState::default())
        })
    }

    #[test]
    fn a_valid_traceparent_is_read_and_written_back_unchanged() {
        let (trace, span, flags) = parse(VALID.as_bytes()).unwrap();
        assert_eq!(trace.to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span.to_string(), "b7ad6b7169203331");
        assert_eq!(flags, TraceFlags::SAMPLED);
        assert_eq!(
            TraceIdHex::new(trace).as_str(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        let cx = SpanContext::new(trace, span, flags, true, TraceState::default());
        assert_eq!(format(&cx), VALID);
        assert_eq!(ours(VALID), sdk(VALID));
        let unsampled = VALID.replace("-01", "-00");
        assert_eq!(format(&ours(&unsampled).unwrap()), unsampled);
    }

    #[test]
    fn traceparents_outside_the_w3c_grammar_start_a_new_trace() {
        // TEL-02: a malformed traceparent is ignored, never an error.
        let cases = [
            ("empty", String::new()),
            ("short", VALID[..54].to_owned()),
            ("version 00 with more fields", format!("{VALID}-extra")),
            ("version 00 with a trailing byte", format!("{VALID}x")),
            ("version ff", VALID.replacen("00", "ff", 1)),
            ("uppercase version", VALID.replacen("00", "0A", 1)),
            ("uppercase trace id", VALID.replace("0af7", "0AF7")),
            ("uppercase parent id", VALID.replace("b7ad", "B7AD")),
            ("uppercase flags", VALID.replace("-01", "-0A")),
            (
                "zero trace id",
                format!("00-{}-b7ad6b7169203331-01", "0".repeat(32)),
            ),
            (
                "zero parent id",
                format!("00-0af7651916cd43dd8448eb211c80319c-{}-01", "0".repeat(16)),
            ),
            ("non-hex trace id", VALID.replace("0af7", "0ag7")),
            ("signed trace id", VALID.replace("-0af7", "-+af7")),
            (
                "separators moved",
                "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01".to_owned(),
            ),
            ("underscores", VALID.replace('-', "_")),
            (
                "future version, no dash after flags",
                VALID.replacen("00", "01", 1) + "x",
            ),
        ];
        for (what, value) in cases {
            assert_eq!(parse(value.as_bytes()), None, "{what}: {value}");
        }
    }

    #[test]
    fn a_well_formed_traceparent_yields_its_trace_id() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id(tp).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id(&format!(" {tp} ")).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn malformed_traceparents_yield_no_trace_id() {
        // TEL-02
        for tp in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id(tp), None, "{tp}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_version_00_fields() {
        let future = format!("{}-whatever-comes-next", VALID.replacen("00", "cc", 1));
        assert_eq!(ours(&future), ours(VALID));
        assert_eq!(ours(&VALID.replacen("00", "01", 1)), ours(VALID));
        // Surrounding whitespace is optional whitespace, not part of the value.
        assert_eq!(ours(&format!(" {VALID}\t")), ours(VALID));
    }

    #[test]
    fn unknown_flags_are_dropped_and_sampled_is_kept() {
        let (_, _, flags) = parse(VALID.replace("-01", "-ff").as_bytes()).unwrap();
        assert_eq!(flags, TraceFlags::SAMPLED);
        let (_, _, flags) = parse(VALID.replace("-01", "-fe").as_bytes()).unwrap();
        assert_eq!(flags, TraceFlags::default());
    }

    proptest! {
        /// Every well-formed version-00 traceparent means what it means to the SDK.
        #[test]
        fn well_formed_traceparents_mean_what_they_mean_to_the_sdk(
            trace in "[0-9a-f]{32}",
            span in "[0-9a-f]{16}",
            flags in "[0-9a-f]{2}",
        ) {
            let value = format!("00-{trace}-{span}-{flags}");
            prop_assert_eq!(ours(&value), sdk(&value));
            if let Some(cx) = ours(&value) {
                let hex = TraceIdHex::new(cx.trace_id());
                prop_assert_eq!(hex.as_str(), trace.as_str());
                let sampled = u8::from_str_radix(&flags, 16).unwrap() & 1;
                prop_assert_eq!(format(&cx), format!("00-{trace}-{span}-0{sampled}"));
            }
        }

        /// Whatever the bytes, reading them neither panics nor accepts what the SDK refuses.
        #[test]
        fn no_input_is_accepted_that_the_sdk_refuses(value in "[0-9a-fA-F+ -]{0,70}") {
            if ours(&value).is_some() {
                prop_assert_eq!(ours(&value), sdk(&value));
            }
        }

        /// Whatever the bytes, the parser returns; what it reads is the trimmed value's
        /// version-00 fields, with neither id all zeros (the `traceparent` fuzz target's check).
        #[test]
        fn the_traceparent_parser_never_panics_on_arbitrary_bytes(
            value in prop::collection::vec(any::<u8>(), 0..80),
        ) {
            if let Some((trace, span, _)) = parse(&value) {
                let sent = value.trim_ascii();
                prop_assert!(sent.len() >= 55, "{:?}", sent);
                let hex = TraceIdHex::new(trace);
                prop_assert_eq!(Some(hex.as_str().as_bytes()), sent.get(3..35));
                let parent = span.to_string();
                prop_assert_eq!(Some(parent.as_bytes()), sent.get(36..52));
                prop_assert!(trace != TraceId::INVALID && span != SpanId::INVALID);
            }
        }
    }
}
