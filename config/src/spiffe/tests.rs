//! The SPIFFE ID rules of docs/security.md ("SPIFFE IDs"), one test per row, named after its ID
//! (`svid_s13_...`).

use super::*;

fn valid(input: &str) {
    let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("`{input}` rejected: {e}"));
    assert_eq!(id.to_string(), input, "Display must give back the input");
}

fn invalid(input: &str) -> SpiffeIdError {
    match SpiffeId::parse(input) {
        Ok(id) => panic!("`{input}` accepted as {id:?}"),
        Err(e) => e,
    }
}

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

#[test]
fn svid_s01_path_is_optional_but_a_root_id_is_no_leaf() {
    let id = SpiffeId::parse("spiffe://trustdomain").unwrap();
    assert!(id.is_root());
    assert_eq!(id.path(), "");
    assert_eq!(id.trust_domain_name(), "trustdomain");
    assert!(
        !SpiffeId::parse("spiffe://trustdomain/path")
            .unwrap()
            .is_root()
    );
}

#[test]
fn svid_s02_trust_domain_and_path_are_split() {
    valid("spiffe://trustdomain/path");
    let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/api").unwrap();
    assert_eq!(id.trust_domain(), td("example.org"));
    assert_eq!(id.path(), "/ns/prod/sa/api");
    assert_eq!(id.as_str(), "spiffe://example.org/ns/prod/sa/api");
}

#[test]
fn svid_s03_segments_that_only_start_with_dots_are_valid() {
    for input in [
        "spiffe://trustdomain/.path",
        "spiffe://trustdomain/..path",
        "spiffe://trustdomain/...",
        "spiffe://trustdomain/a/.hidden/..x",
    ] {
        valid(input);
    }
}

#[test]
fn svid_s04_underscores_and_ipv4_names_are_plain_trust_domains() {
    valid("spiffe://a_b.example/foo");
    valid("spiffe://1.2.3.4/service");
}

#[test]
fn svid_s05_path_case_matters() {
    let upper = SpiffeId::parse("spiffe://td/PATH1/PATH2").unwrap();
    let lower = SpiffeId::parse("spiffe://td/path1/path2").unwrap();
    assert_ne!(upper, lower);
}

#[test]
fn svid_s06_empty_input_is_rejected() {
    assert_eq!(invalid(""), SpiffeIdError::Empty);
    assert_eq!(
        TrustDomain::parse(""),
        Err(SpiffeIdError::MissingTrustDomain)
    );
}

#[test]
fn svid_s07_other_schemes_are_rejected() {
    for input in [
        "s",
        "spiffe:/",
        "spiffe:path/element",
        "spiffe:/path/element",
        "192.168.2.2:6688",
        "http://domain.test/p",
        "xspiffe://td/p",
        "://domain.test",
    ] {
        assert_eq!(invalid(input), SpiffeIdError::Scheme, "{input}");
    }
}

#[test]
fn svid_s08_mixed_case_scheme_is_rejected_not_normalised() {
    // PROFILE: reject, as go-spiffe does.
    assert_eq!(invalid("Spiffe://td"), SpiffeIdError::Scheme);
    assert_eq!(invalid("SPIFFE://td/path"), SpiffeIdError::Scheme);
}

#[test]
fn svid_s09_upper_case_trust_domain_is_rejected_not_normalised() {
    // PROFILE: reject, as go-spiffe does.
    assert_eq!(
        invalid("spiffe://TRUSTDOMAIN/x"),
        SpiffeIdError::TrustDomainChar('T')
    );
    assert_eq!(
        TrustDomain::parse("Example.org"),
        Err(SpiffeIdError::TrustDomainChar('E'))
    );
}

#[test]
fn svid_s10_missing_trust_domain_is_rejected() {
    for input in ["spiffe://", "spiffe:///", "spiffe:///path"] {
        assert_eq!(invalid(input), SpiffeIdError::MissingTrustDomain, "{input}");
    }
}

#[test]
fn svid_s11_trailing_slash_is_rejected() {
    for input in ["spiffe://td/", "spiffe://td/path/"] {
        assert_eq!(invalid(input), SpiffeIdError::EmptySegment, "{input}");
    }
}

#[test]
fn svid_s12_empty_segments_are_rejected() {
    for input in ["spiffe://td//", "spiffe://td//path", "spiffe://td/path//"] {
        assert_eq!(invalid(input), SpiffeIdError::EmptySegment, "{input}");
    }
}

#[test]
fn svid_s13_dot_segments_are_rejected() {
    for path in [
        "/.",
        "/./path",
        "/path/./other",
        "/path/..",
        "/..",
        "/../path",
        "/path/../other",
    ] {
        let input = format!("spiffe://td{path}");
        assert_eq!(invalid(&input), SpiffeIdError::DotSegment, "{input}");
    }
}

#[test]
fn svid_s14_percent_encoded_trust_domains_are_rejected() {
    for input in ["spiffe://%F0%9F%A4%AF/path", "spiffe://%62%61%64/path"] {
        assert_eq!(
            invalid(input),
            SpiffeIdError::TrustDomainChar('%'),
            "{input}"
        );
    }
}

#[test]
fn svid_s15_percent_encoded_paths_are_rejected() {
    for input in [
        "spiffe://td/%F0%9F%A4%AF",
        "spiffe://td/%62%61%64",
        "spiffe://domain.test/path/elem%5uent",
    ] {
        assert_eq!(invalid(input), SpiffeIdError::PathChar('%'), "{input}");
    }
}

#[test]
fn svid_s16_query_and_fragment_are_rejected() {
    assert_eq!(
        invalid("spiffe://domain.test/path/element?query=1"),
        SpiffeIdError::PathChar('?')
    );
    assert_eq!(
        invalid("spiffe://domain.test/path/element?#fragment-1"),
        SpiffeIdError::PathChar('?')
    );
    assert_eq!(
        invalid("spiffe://domain.test/path/element#fragment-1"),
        SpiffeIdError::PathChar('#')
    );
    assert_eq!(
        invalid("spiffe://domain.test?query=1"),
        SpiffeIdError::TrustDomainChar('?')
    );
}

#[test]
fn svid_s17_port_is_rejected() {
    assert_eq!(
        invalid("spiffe://domain.test:8080/p"),
        SpiffeIdError::TrustDomainChar(':')
    );
}

#[test]
fn svid_s18_userinfo_is_rejected() {
    assert_eq!(
        invalid("spiffe://user:password@test.org/p"),
        SpiffeIdError::TrustDomainChar(':')
    );
    assert_eq!(
        invalid("spiffe://user@test.org/p"),
        SpiffeIdError::TrustDomainChar('@')
    );
}

#[test]
fn svid_s19_ipv6_trust_domains_are_rejected() {
    for input in ["spiffe://[::1]/service", "spiffe://[2001:db8::1]/service"] {
        assert_eq!(
            invalid(input),
            SpiffeIdError::TrustDomainChar('['),
            "{input}"
        );
    }
}

#[test]
fn svid_s20_characters_outside_the_charset_are_rejected() {
    assert_eq!(invalid("spiffe://td/ /"), SpiffeIdError::PathChar(' '));
    assert_eq!(
        invalid("spiffe:// domain.test "),
        SpiffeIdError::TrustDomainChar(' ')
    );
    assert_eq!(invalid("spiffe://td/path$"), SpiffeIdError::PathChar('$'));
    assert_eq!(
        invalid("spiffe://trust$domain"),
        SpiffeIdError::TrustDomainChar('$')
    );
}

#[test]
fn svid_s21_rfc3986_characters_spiffe_forbids_are_rejected() {
    assert_eq!(invalid("spiffe://td/~x"), SpiffeIdError::PathChar('~'));
    assert_eq!(invalid("spiffe://td/a:b"), SpiffeIdError::PathChar(':'));
    assert_eq!(invalid("spiffe://td/a@b"), SpiffeIdError::PathChar('@'));
}

#[test]
fn svid_s22_an_id_nested_in_a_path_is_rejected() {
    assert_eq!(
        invalid("spiffe://domain.test/spiffe://domain.test/path/element"),
        SpiffeIdError::PathChar(':')
    );
}

#[test]
fn svid_s23_every_byte_in_trust_domain_position_is_valid_iff_in_charset() {
    for byte in 0u8..=0xff {
        // Bytes 0x80..=0xff alone are not UTF-8 and cannot reach a `&str` parser; the
        // loop feeds their code points U+0080..U+00FF instead (two UTF-8 bytes each).
        let c = char::from(byte);
        let allowed = matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_');
        let name = format!("td{c}");
        assert_eq!(
            TrustDomain::parse(&name).is_ok(),
            allowed,
            "byte {byte:#04x}"
        );
        let input = format!("spiffe://td{c}/path");
        assert_eq!(SpiffeId::parse(&input).is_ok(), allowed, "byte {byte:#04x}");
    }
    for byte in 0x80u8..=0xff {
        assert!(std::str::from_utf8(&[b't', byte]).is_err());
    }
}

#[test]
fn svid_s23_every_byte_in_path_position_is_valid_iff_in_charset() {
    for byte in 0u8..=0xff {
        let c = char::from(byte);
        let allowed = matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_');
        let input = format!("spiffe://td/path{c}");
        assert_eq!(SpiffeId::parse(&input).is_ok(), allowed, "byte {byte:#04x}");
        let segment = format!("x{c}");
        assert_eq!(
            SpiffeId::from_segments(&td("td"), &[&segment]).is_ok(),
            allowed,
            "byte {byte:#04x}"
        );
    }
}

#[test]
fn svid_s24_an_id_of_exactly_2048_bytes_is_valid() {
    let input = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 12));
    assert_eq!(input.len(), MAX_SPIFFE_ID_LEN);
    valid(&input);
    let name = "t".repeat(MAX_TRUST_DOMAIN_LEN);
    assert!(TrustDomain::parse(&name).is_ok());
    valid(&format!("spiffe://{name}/p"));
}

#[test]
fn svid_s25_longer_ids_and_trust_domains_are_rejected() {
    let input = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 11));
    assert_eq!(invalid(&input), SpiffeIdError::TooLong(2049));
    let name = "t".repeat(MAX_TRUST_DOMAIN_LEN + 1);
    assert_eq!(
        TrustDomain::parse(&name),
        Err(SpiffeIdError::TrustDomainTooLong(256))
    );
    assert_eq!(
        invalid(&format!("spiffe://{name}/p")),
        SpiffeIdError::TrustDomainTooLong(256)
    );
    let long = "a".repeat(MAX_SPIFFE_ID_LEN);
    assert_eq!(
        SpiffeId::from_segments(&td("td"), &[&long]),
        Err(SpiffeIdError::TooLong(MAX_SPIFFE_ID_LEN + 12))
    );
}

#[test]
fn svid_s26_invalid_segments_are_rejected_by_the_segment_builder() {
    let td = td("example.org");
    for (segment, expected) in [
        ("", SpiffeIdError::EmptySegment),
        ("/", SpiffeIdError::PathChar('/')),
        ("/foo", SpiffeIdError::PathChar('/')),
        ("foo/bar", SpiffeIdError::PathChar('/')),
        (".", SpiffeIdError::DotSegment),
        ("..", SpiffeIdError::DotSegment),
        (" ", SpiffeIdError::PathChar(' ')),
    ] {
        assert_eq!(
            SpiffeId::from_segments(&td, &["ok", segment]),
            Err(expected),
            "{segment:?}"
        );
    }
    let id = SpiffeId::from_segments(&td, &["ns", "ml", "sa", "inference"]).unwrap();
    assert_eq!(
        id,
        SpiffeId::parse("spiffe://example.org/ns/ml/sa/inference").unwrap()
    );
    assert!(SpiffeId::from_segments(&td, &[]).unwrap().is_root());
}

#[test]
fn error_messages_escape_control_characters() {
    let e = invalid("spiffe://td/a\nb");
    assert_eq!(
        e.to_string(),
        "path character `\\n` is not allowed; only letters, digits, `.`, `-` and `_` are"
    );
    assert!(!invalid("spiffe://t\u{0}d").to_string().contains('\u{0}'));
}

#[test]
fn from_str_and_debug_agree_with_parse() {
    let id: SpiffeId = "spiffe://example.org/a".parse().unwrap();
    assert_eq!(format!("{id:?}"), "SpiffeId(spiffe://example.org/a)");
    let td: TrustDomain = "example.org".parse().unwrap();
    assert_eq!(format!("{td:?}"), "TrustDomain(example.org)");
    assert_eq!(td.id_string(), "spiffe://example.org");
}
