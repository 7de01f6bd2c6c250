//! `dev-ca` internals: ttl parsing, serials, exit codes.

use super::*;

#[test]
fn ttl_accepts_seconds_minutes_hours_and_days() {
    assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
    assert_eq!(parse_ttl("90d").unwrap(), MAX_TTL);
}

#[test]
fn ttl_rejects_zero_overlong_and_malformed_values() {
    for input in [
        "",
        "0s",
        "91d",
        "2161h",
        "h",
        "24",
        "24H",
        "+5h",
        " 5h",
        "5 h",
        "1.5h",
        "-1h",
        "5ms",
        "99999999999999999999d",
        "18446744073709551615d",
        "é",
    ] {
        assert!(
            matches!(parse_ttl(input), Err(DevCaError::BadTtl { .. })),
            "{input:?} was accepted"
        );
    }
}

#[test]
fn issue_rejects_a_ttl_beyond_ninety_days_before_touching_the_disk() {
    let dir = Path::new("/nonexistent/hopgate-dev-ca");
    let id = SpiffeId::parse("spiffe://example.org/api").unwrap();
    let options = IssueOptions {
        out: None,
        ttl: MAX_TTL + Duration::from_secs(1),
        dns: &[],
        force: false,
    };
    let err = issue(dir, &id, &options).unwrap_err();
    assert!(matches!(err, DevCaError::BadTtl { .. }), "{err}");
}

#[test]
fn serials_are_positive_and_differ() {
    let a = random_serial().unwrap().to_bytes();
    let b = random_serial().unwrap().to_bytes();
    assert_eq!(a.len(), 16);
    assert!(a[0] < 0x80);
    assert_ne!(a, b);
}

#[test]
fn bad_arguments_exit_78_and_failures_exit_1() {
    let id = SpiffeId::parse("spiffe://example.org").unwrap();
    assert_eq!(DevCaError::RootId { id }.exit_code(), 78);
    assert_eq!(parse_ttl("0s").unwrap_err().exit_code(), 78);
    let no_ca = DevCaError::NoCa {
        dir: PathBuf::from("d"),
    };
    assert_eq!(no_ca.exit_code(), 1);
    assert_eq!(
        no_ca.to_string(),
        "no dev CA in `d`: run `hopgate dev-ca init` first"
    );
}

#[test]
fn dns_names_are_lowercased_and_lose_a_trailing_dot() {
    assert_eq!(parse_dns("localhost").unwrap(), "localhost");
    assert_eq!(parse_dns("API.Example.org.").unwrap(), "api.example.org");
    assert_eq!(parse_dns("a-1.b2").unwrap(), "a-1.b2");
}

#[test]
fn dns_names_refuse_wildcards_addresses_and_malformed_labels() {
    let long_label = "a".repeat(64);
    let long_name = ["a"; 127].join(".") + ".toolong";
    for input in [
        "",
        ".",
        "*.example.org",
        "a..b",
        "-a.example",
        "a-.example",
        "10.0.0.1",
        "exa mple",
        "é.example",
        "a_b.example",
        long_label.as_str(),
        long_name.as_str(),
    ] {
        assert!(
            matches!(parse_dns(input), Err(DevCaError::BadDns { .. })),
            "{input:?} was accepted"
        );
    }
}
