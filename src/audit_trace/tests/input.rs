//! Which lines count, and input no real sidecar writes: never a panic, never a lost record.

use serde_json::json;

use super::super::tree::{Link, MAX_DEPTH};
use super::super::*;
use super::fixtures::*;

#[test]
fn malformed_lines_are_skipped_without_panicking() {
    let good = rec("02.100", "outbound", AGENT, INFERENCE, H0, None).to_string();
    let deep = format!("{}{}", "{\"a\":[".repeat(5000), "]}".repeat(5000));
    let logs = sources(&[(
        "broken.log",
        vec![
            format!("{{\"target\":\"hopgate::audit\",\"txn\":\"{TXN}\""),
            good.get(..good.len() / 2).unwrap().to_owned(),
            deep,
            "{".to_owned(),
            "}{".to_owned(),
            format!("[\"hopgate::audit\",\"{TXN}\"]"),
            "\u{feff}\0\u{1b}[31m{not json".to_owned(),
            good,
        ],
    )]);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(trace.records, 1);
    assert_eq!(trace.roots[0].hop.records[0].line, 8);
}

#[test]
fn fields_of_the_wrong_type_read_as_absent() {
    let odd = with(
        rec("02.100", "outbound", AGENT, INFERENCE, H0, None),
        &[
            ("principal", json!(42)),
            ("status", json!("200")),
            ("policies", json!("not-a-list")),
            ("duration_us", json!(-5)),
            ("timestamp", json!(null)),
            ("direction", json!("sideways")),
        ],
    );
    let logs = sources(&[("odd.log", vec![odd])]);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(walk(&trace), [hop(0, "?", INFERENCE, Link::Origin, 1)]);
    let text = render(TXN, &logs).unwrap();
    assert!(
        text.contains("(unknown) → spiffe://demo.local/ns/ml/sa/inference"),
        "{text}"
    );
    assert!(text.contains("?         allow"), "{text}");
    assert!(text.contains("policies (none)"), "{text}");
}
#[test]
fn contradictory_parents_and_absurd_depths_are_drawn_not_lost() {
    // Two tokens that name each other as parent, and one that is its own.
    let mut lines = vec![
        rec("02.100", "inbound", AGENT, INFERENCE, H0, Some(H1)).to_string(),
        rec("02.200", "inbound", INFERENCE, CRM, H1, Some(H0)).to_string(),
        rec("02.300", "inbound", CRM, DB, H2, Some(H2)).to_string(),
    ];
    // A chain of 300 hops, far past any real one.
    for i in 0..300 {
        let prv = if i == 0 {
            None
        } else {
            Some(format!("deep-{}", i - 1))
        };
        lines.push(
            rec(
                &format!("03.{i:03}"),
                "inbound",
                CRM,
                DB,
                &format!("deep-{i}"),
                prv.as_deref(),
            )
            .to_string(),
        );
    }
    let logs = sources(&[("odd.log", lines)]);
    let trace = trace(TXN, &logs).unwrap();
    let walked = walk(&trace);
    assert_eq!(walked.len(), 303, "every hop is drawn once");
    assert!(walked.iter().all(|(depth, ..)| *depth < MAX_DEPTH));
    let links: Vec<Link> = trace.roots.iter().map(|r| r.link).collect();
    assert_eq!(
        links,
        [Link::Origin, Link::Cut, Link::Cut, Link::Cycle, Link::Cycle]
    );
    let text = render(TXN, &logs).unwrap();
    assert!(
        text.contains("(its parent token is among its own descendants)"),
        "{text}"
    );
    assert!(
        text.contains("(continued: nested too deep to draw under its parent)"),
        "{text}"
    );
}

proptest::proptest! {
    #[test]
    fn any_lines_give_a_tree_or_not_found_and_never_a_panic(
        lines in proptest::collection::vec(
            "(\\{|\\}|\"|:|,|\\[|\\]|null|\"target\"|\"hopgate::audit\"|\"txn\"|\"t\"|\"token_hash\"|\"token_prv\"|\"h\"|\"g\"|\"direction\"|\"inbound\"|\\PC){0,80}",
            0..20,
        )
    ) {
        let logs = vec![("any.log".to_owned(), lines)];
        let _ = render("t", &logs);
        let _ = render_json("t", &logs);
    }
}

proptest::proptest! {
    #[test]
    fn any_graph_of_tokens_draws_every_record_exactly_once(
        hops in proptest::collection::vec(
            (0_u8..8, proptest::option::of(0_u8..8), proptest::bool::ANY, 0_u16..999),
            1..30,
        )
    ) {
        let lines: Vec<String> = hops
            .iter()
            .map(|(hash, prv, inbound, ms)| {
                let side = if *inbound { "inbound" } else { "outbound" };
                let prv = prv.map(|p| format!("h{p}"));
                rec(&format!("02.{ms:03}"), side, AGENT, CRM, &format!("h{hash}"), prv.as_deref()).to_string()
            })
            .collect();
        let logs = vec![("graph.log".to_owned(), lines)];
        let trace = trace(TXN, &logs).unwrap();
        let drawn: usize = walk(&trace).iter().map(|(.., records)| records).sum();
        proptest::prop_assert_eq!(drawn, hops.len());
        let _ = render(TXN, &logs).unwrap();
    }
}
