//! Byte sizes as the config writes them: a whole number and a unit, `512B`, `64KiB`, `1MiB`.
//!
//! Binary units only, and a unit always: `1MB` could mean 10^6 or 2^20 bytes, and a buffer
//! limit that is off by 5% should not depend on which the reader assumed.

use thiserror::Error;

const EXPECTED: &str =
    "expected a whole number followed by `B`, `KiB`, `MiB` or `GiB`, such as `64KiB` or `1MiB`";

/// Why a string is not a byte size. Each message names the input.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub(crate) enum SizeError {
    /// Anything that is not `<digits><unit>`.
    #[error("`{0}` is not a size; {EXPECTED}")]
    Malformed(String),
    /// The value does not fit in memory's address range.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses `<digits><unit>` with unit `B`, `KiB`, `MiB` or `GiB`.
pub(crate) fn parse(input: &str) -> Result<usize, SizeError> {
    let malformed = || SizeError::Malformed(input.to_owned());
    let digits_end = input
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(digits_end);
    let shift = match unit {
        "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(malformed()),
    };
    if number.is_empty() {
        return Err(malformed());
    }
    let overflow = || SizeError::Overflow(input.to_owned());
    let number: usize = number.parse().map_err(|_| overflow())?;
    number.checked_mul(1 << shift).ok_or_else(overflow)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse("512B"), Ok(512));
        assert_eq!(parse("64KiB"), Ok(65_536));
        assert_eq!(parse("1MiB"), Ok(1_048_576));
        assert_eq!(parse("2GiB"), Ok(2 << 30));
    }

    #[test]
    fn sizes_without_a_binary_unit_are_refused_with_the_input_named() {
        for input in ["", "1", "1MB", "1 MiB", "MiB", "-1KiB", "1.5MiB", "1mib"] {
            let err = parse(input).unwrap_err();
            assert_eq!(err, SizeError::Malformed(input.to_owned()), "{input}");
            assert!(err.to_string().contains(&format!("`{input}`")));
        }
        assert!(matches!(
            parse("99999999999999999999999GiB"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse("17179869184GiB"),
            Err(SizeError::Overflow(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_does_not_panic(input in "\\PC{0,24}") {
            let _ = parse(&input);
        }
    }
}
