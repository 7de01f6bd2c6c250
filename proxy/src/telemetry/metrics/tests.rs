use std::time::Duration;

use super::{DecisionLabel, Direction, ProxyMetrics};

const CALLER: &str = "spiffe://example.org/ns/agents/sa/caller";
const SERVER: &str = "spiffe://example.org/ns/tools/sa/crm";

/// The `hopgate_requests_total` lines of a scrape.
fn request_lines(metrics: &ProxyMetrics) -> Vec<String> {
    metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("hopgate_requests_total{"))
        .map(str::to_owned)
        .collect()
}

/// A scrape without the `process_*` values, which move between two scrapes on their own.
fn scrape_without_process(metrics: &ProxyMetrics) -> String {
    metrics
        .encode()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("process_"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn count(metrics: &ProxyMetrics, decision: DecisionLabel, code: u16, peer: &str, dest: &str) {
    let parties = metrics.parties(Some(peer), Some(dest));
    metrics.record_request(
        Direction::Inbound,
        decision,
        code,
        parties,
        Duration::from_micros(80),
    );
}

#[test]
fn request_counters_carry_the_status_code_the_peer_and_the_destination() {
    let metrics = ProxyMetrics::new();
    count(&metrics, DecisionLabel::Allow, 200, CALLER, SERVER);
    count(&metrics, DecisionLabel::Allow, 200, CALLER, SERVER);
    count(&metrics, DecisionLabel::Allow, 502, CALLER, SERVER);
    assert_eq!(
        request_lines(&metrics),
        [
            format!(
                r#"hopgate_requests_total{{direction="inbound",decision="allow",code="200",peer="{CALLER}",dest="{SERVER}"}} 2"#
            ),
            format!(
                r#"hopgate_requests_total{{direction="inbound",decision="allow",code="502",peer="{CALLER}",dest="{SERVER}"}} 1"#
            ),
        ]
    );
}

#[test]
fn identities_past_the_cap_are_counted_as_other_for_good() {
    let metrics = ProxyMetrics::with_max_identities(2);
    count(&metrics, DecisionLabel::Deny, 403, CALLER, SERVER);
    // The cap is full: a third identity is `other`, and stays `other` when seen again.
    for _ in 0..2 {
        count(
            &metrics,
            DecisionLabel::Deny,
            403,
            "spiffe://example.org/ns/agents/sa/intruder",
            SERVER,
        );
    }
    let lines = request_lines(&metrics);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines.contains(&format!(
            r#"hopgate_requests_total{{direction="inbound",decision="deny",code="403",peer="other",dest="{SERVER}"}} 2"#
        )),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("intruder")), "{lines:#?}");
}

#[test]
fn a_cap_of_zero_counts_every_identity_as_other() {
    let metrics = ProxyMetrics::with_max_identities(0);
    count(&metrics, DecisionLabel::Allow, 200, CALLER, SERVER);
    assert_eq!(
        request_lines(&metrics),
        [
            r#"hopgate_requests_total{direction="inbound",decision="allow",code="200",peer="other",dest="other"} 1"#
        ]
    );
}

#[test]
fn a_party_the_side_does_not_know_is_unknown() {
    let metrics = ProxyMetrics::new();
    let parties = metrics.parties(Some(CALLER), None);
    metrics.record_request(
        Direction::Outbound,
        DecisionLabel::Allow,
        404,
        parties,
        Duration::ZERO,
    );
    assert_eq!(
        request_lines(&metrics),
        [format!(
            r#"hopgate_requests_total{{direction="outbound",decision="allow",code="404",peer="{CALLER}",dest="unknown"}} 1"#
        )]
    );
}

#[test]
fn a_scrape_lists_series_in_label_order_whatever_order_they_appeared_in() {
    let events = [
        (
            DecisionLabel::Unauthenticated,
            401,
            "spiffe://example.org/c",
        ),
        (DecisionLabel::Allow, 200, "spiffe://example.org/b"),
        (DecisionLabel::Deny, 403, "spiffe://example.org/a"),
        (DecisionLabel::Allow, 200, "spiffe://example.org/a"),
        (DecisionLabel::Allow, 502, "spiffe://example.org/b"),
        (DecisionLabel::AuditDeny, 200, "spiffe://example.org/c"),
    ];
    let forward = ProxyMetrics::new();
    let backward = ProxyMetrics::new();
    for (decision, code, peer) in events {
        count(&forward, decision, code, peer, SERVER);
    }
    for (decision, code, peer) in events.iter().rev() {
        count(&backward, *decision, *code, peer, SERVER);
    }
    for reason in ["sub", "exp", "aud", "alg"] {
        forward.record_token_rejection(reason);
    }
    for reason in ["alg", "aud", "exp", "sub"] {
        backward.record_token_rejection(reason);
    }
    assert_eq!(
        scrape_without_process(&forward),
        scrape_without_process(&backward)
    );
    let lines = request_lines(&forward);
    let mut expected = lines.clone();
    // Declared order of the enums (allow < deny < audit_deny < unauthenticated), then code,
    // then the identities as strings.
    expected.sort_by_key(|l| {
        let rank = ["allow", "deny", "audit_deny", "unauthenticated"]
            .iter()
            .position(|d| l.contains(&format!("decision=\"{d}\"")))
            .unwrap();
        (rank, l.clone())
    });
    assert_eq!(lines, expected);
    assert_eq!(lines.len(), events.len());
}

#[test]
fn every_metric_is_named_from_the_start_even_before_its_first_series() {
    let text = ProxyMetrics::new().encode().unwrap();
    assert!(text.contains("# TYPE hopgate_requests counter\n"), "{text}");
    assert!(!text.contains("hopgate_requests_total{"), "{text}");
    for series in [
        r#"hopgate_request_duration_seconds_count{direction="inbound"} 0"#,
        r#"hopgate_policy_reloads_total{result="error"} 0"#,
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
}
