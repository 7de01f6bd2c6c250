//! Durations as the config writes them: a whole number and a unit, `500ms`, `60s`, `5m`, `1h`.
//!
//! Deliberately small: no fractions, no signs, no compound forms (`1m30s`), no bare numbers. A
//! bare `60` could mean seconds or milliseconds, and guessing wrong on a timeout or a token
//! lifetime is worse than asking for a unit.

use std::time::Duration;

use thiserror::Error;

const EXPECTED: &str =
    "expected a whole number followed by `ms`, `s`, `m` or `h`, such as `500ms` or `60s`";

/// Why a string is not a duration. Each message names the input.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub(crate) enum DurationError {
    /// Nothing was written.
    #[error("is empty; {EXPECTED}")]
    Empty,
    /// A number without a unit.
    #[error("`{0}` has no unit; {EXPECTED}")]
    NoUnit(String),
    /// A leading `-`.
    #[error("`{0}` is negative; {EXPECTED}")]
    Negative(String),
    /// A `.` in the number.
    #[error("`{0}` has a fraction; use a smaller unit instead, such as `1500ms` for 1.5s")]
    Fraction(String),
    /// The value does not fit in a duration.
    #[error("`{0}` is too large")]
    Overflow(String),
    /// Anything else.
    #[error("`{0}` is not a duration; {EXPECTED}")]
    Malformed(String),
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
pub(crate) fn parse(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits_end = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(digits_end);
    if unit.is_empty() {
        return Err(DurationError::NoUnit(input.to_owned()));
    }
    if number.is_empty() {
        return Err(match unit.chars().next() {
            Some('-') => DurationError::Negative(input.to_owned()),
            _ => DurationError::Malformed(input.to_owned()),
        });
    }
    if unit.starts_with('.') {
        return Err(DurationError::Fraction(input.to_owned()));
    }
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(DurationError::Malformed(input.to_owned())),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::Overflow(input.to_owned()))
}

/// Formats a duration in the largest unit that shows it exactly (`24h`, `5m`, `1500ms`), so
/// that limits in messages read the way the user writes values.
pub(crate) fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0s".to_owned(),
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn each_unit_is_understood() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("007s"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn bare_numbers_are_rejected_with_a_hint() {
        assert_eq!(parse("60"), Err(DurationError::NoUnit("60".into())));
        assert_eq!(
            parse("60").unwrap_err().to_string(),
            "`60` has no unit; expected a whole number followed by `ms`, `s`, `m` or `h`, such as `500ms` or `60s`"
        );
    }

    #[test]
    fn negatives_fractions_and_other_shapes_are_rejected() {
        assert_eq!(parse("-5s"), Err(DurationError::Negative("-5s".into())));
        assert_eq!(parse("1.5s"), Err(DurationError::Fraction("1.5s".into())));
        assert_eq!(parse(""), Err(DurationError::Empty));
        for input in [
            "s", "+5s", "5 s", "5S", "5sec", "1m30s", "5d", "ms", " 5s", "5s ",
        ] {
            assert_eq!(
                parse(input),
                Err(DurationError::Malformed(input.into())),
                "{input}"
            );
        }
    }

    #[test]
    fn values_past_u64_milliseconds_overflow_instead_of_wrapping() {
        assert_eq!(
            parse("18446744073709551615h"),
            Err(DurationError::Overflow("18446744073709551615h".into()))
        );
        assert_eq!(
            parse("99999999999999999999999s"),
            Err(DurationError::Overflow("99999999999999999999999s".into()))
        );
    }

    #[test]
    fn format_picks_the_largest_exact_unit() {
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_secs(86_400)), "24h");
        assert_eq!(format(Duration::from_secs(300)), "5m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
    }

    proptest! {
        #[test]
        fn parse_never_panics(input in any::<String>()) {
            let _ = parse(&input);
        }

        #[test]
        fn format_then_parse_round_trips(millis in 0u64..=u64::MAX / 3_600_000) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
