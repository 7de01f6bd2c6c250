//! The tree built from fixture logs: records with every field the sidecars write.

use serde_json::json;

use super::tree::Link;
use super::*;
use fixtures::*;

mod fixtures;
mod input;

#[test]
fn a_three_sidecar_chain_is_one_branch_ending_in_the_denied_hop() {
    let trace = trace(TXN, &chain()).unwrap();
    assert_eq!(
        walk(&trace),
        [
            hop(0, AGENT, INFERENCE, Link::Origin, 2),
            hop(1, INFERENCE, CRM, Link::Child, 2)
        ]
    );
    assert_eq!(trace.subs, ["alice"]);
    assert_eq!((trace.records, trace.hops, trace.sources_read), (4, 2, 3));
    let last = &trace.roots[0].children[0].hop;
    assert_eq!(last.token_prv.as_deref(), Some(H0));
    let sides: Vec<_> = last
        .records
        .iter()
        .map(|r| (r.side.as_str(), r.str("effect"), r.location()))
        .collect();
    assert_eq!(
        sides,
        [
            ("outbound", Some("allow"), "inference.log:2".to_owned()),
            ("inbound", Some("deny"), "crm.log:1".to_owned())
        ]
    );

    let text = render(TXN, &chain()).unwrap();
    for want in [
        "transaction iq_Uy6FgY2-oQEQE-LW7Nw\n",
        "├─ sub:     alice\n",
        "├─ records: 4 in 2 hops, from 3 of 3 files read: agent.log, inference.log, crm.log\n",
        &format!("   └─ {AGENT} → {INFERENCE}\n"),
        &format!("      └─ {INFERENCE} → {CRM}\n"),
        "action read_ticket  POST /v1/call  host crm\n",
        &format!("jti jti-z1_F2p  sha256 {H0}  (first hop: no parent token)\n"),
        "inbound   deny (forbidden)  403    1.2 ms  2026-11-22T10:15:02.310Z  crm.log:1\n",
        "policies deny-inference-to-crm\n",
        "outbound  allow  200    1.2 ms  2026-11-22T10:15:02.100Z  agent.log:2  route inference\n",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    // The details of the first hop keep the bar down to its child.
    assert!(text.contains("      │  action generate"), "{text}");
    assert!(!text.contains("no record"), "{text}");
}

#[test]
fn a_fan_out_puts_both_children_under_their_parent_in_time_order() {
    let logs = sources(&[
        (
            "agent.log",
            vec![rec("02.100", "outbound", AGENT, INFERENCE, H0, None).to_string()],
        ),
        (
            "inference.log",
            vec![
                rec("02.110", "inbound", AGENT, INFERENCE, H0, None).to_string(),
                // Written in the other order: the search call started first.
                rec("02.400", "outbound", INFERENCE, CRM, H1, Some(H0)).to_string(),
                rec("02.200", "outbound", INFERENCE, SEARCH, H2, Some(H0)).to_string(),
            ],
        ),
        (
            "crm.log",
            vec![rec("02.410", "inbound", INFERENCE, CRM, H1, Some(H0)).to_string()],
        ),
        (
            "search.log",
            vec![rec("02.210", "inbound", INFERENCE, SEARCH, H2, Some(H0)).to_string()],
        ),
    ]);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(
        walk(&trace),
        [
            hop(0, AGENT, INFERENCE, Link::Origin, 2),
            hop(1, INFERENCE, SEARCH, Link::Child, 2),
            hop(1, INFERENCE, CRM, Link::Child, 2),
        ]
    );
    let text = render(TXN, &logs).unwrap();
    assert!(
        text.contains(&format!("      ├─ {INFERENCE} → {SEARCH}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("      └─ {INFERENCE} → {CRM}\n")),
        "{text}"
    );
    // The first child's details carry the bar of its later sibling.
    assert!(text.contains("      │     action generate"), "{text}");
}

#[test]
fn a_missing_middle_log_leaves_each_hop_with_the_side_it_has() {
    let mut logs = chain();
    logs.remove(1);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(
        walk(&trace),
        [
            hop(0, AGENT, INFERENCE, Link::Origin, 1),
            hop(1, INFERENCE, CRM, Link::Child, 1)
        ]
    );
    let text = render(TXN, &logs).unwrap();
    assert!(
        text.contains("inbound   no record: the receiver's log is not among these"),
        "{text}"
    );
    assert!(
        text.contains("outbound  no record: the caller's log is not among these"),
        "{text}"
    );
    assert!(
        text.contains("from 2 of 2 files read: agent.log, crm.log"),
        "{text}"
    );
}

#[test]
fn a_hop_no_log_has_is_shown_as_an_absent_parent_above_its_children() {
    // agent → inference → crm → db, with only the agent's and db's logs: the middle hop
    // (inference → crm) is in neither, and db's record names its token as the parent.
    let logs = sources(&[
        (
            "agent.log",
            vec![rec("02.100", "outbound", AGENT, INFERENCE, H0, None).to_string()],
        ),
        (
            "db.log",
            vec![rec("02.510", "inbound", CRM, DB, H2, Some(H1)).to_string()],
        ),
    ]);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(
        walk(&trace),
        [
            hop(0, AGENT, INFERENCE, Link::Origin, 1),
            hop(0, "?", CRM, Link::Absent, 0),
            hop(1, CRM, DB, Link::Child, 1),
        ]
    );
    assert_eq!(trace.hops, 2, "the absent hop is not counted");
    let text = render(TXN, &logs).unwrap();
    for want in [
        format!("   └─ ? → {CRM}   ABSENT: no record of this hop in these logs\n"),
        format!("      │  token sha256 {H1}: the parent its children name\n"),
        format!("      └─ {CRM} → {DB}\n"),
    ] {
        assert!(text.contains(&want), "no {want:?} in\n{text}");
    }
    let json = render_json(TXN, &logs).unwrap();
    let absent = &json["tree"][1];
    assert_eq!(absent["link"], "absent");
    assert_eq!(absent["token_hash"], H1);
    assert_eq!(absent["records"], json!([]));
    assert_eq!(absent["children"][0]["token_prv"], H1);
}

#[test]
fn records_of_other_transactions_are_ignored_but_counted_as_read() {
    let mut logs = chain();
    let other = with(
        rec("03.000", "outbound", AGENT, CRM, H3, None),
        &[("txn", json!("another-txn"))],
    );
    logs[0].1.push(other);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(trace.records, 4);
    assert_eq!(
        walk(&trace),
        [
            hop(0, AGENT, INFERENCE, Link::Origin, 2),
            hop(1, INFERENCE, CRM, Link::Child, 2)
        ]
    );

    let missing = super::trace("no-such-txn", &logs).unwrap_err();
    assert_eq!(
        missing,
        NotFound {
            txn: "no-such-txn".to_owned(),
            records: 5,
            sources: 3
        }
    );
    assert_eq!(
        missing.to_string(),
        "no audit record of transaction `no-such-txn`: 5 audit records read from 3 files"
    );
}

#[test]
fn log_lines_and_seal_lines_are_skipped_and_a_prefix_before_the_brace_is_accepted() {
    let record = rec("02.100", "outbound", AGENT, INFERENCE, H0, None).to_string();
    let logs = sources(&[(
        "kubectl.log",
        vec![
            "2026-11-22T10:15:00.000000000Z hopgate started: enforcing Cedar".to_owned(),
            r#"{"timestamp":"2026-11-22T10:15:01Z","level":"INFO","target":"hopgate_proxy","message":"listening","txn":"iq_Uy6FgY2-oQEQE-LW7Nw"}"#.to_owned(),
            format!(r#"{{"timestamp":"2026-11-22T10:15:03Z","level":"INFO","target":"hopgate::audit.seal","txn":"{TXN}","token_hash":"{H3}"}}"#),
            format!("[pod/agent-7c9f/hopgate] 2026-11-22T10:15:02.100Z {record}"),
        ],
    )]);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(walk(&trace), [hop(0, AGENT, INFERENCE, Link::Origin, 1)]);
    assert_eq!(trace.roots[0].hop.records[0].location(), "kubectl.log:4");
}

#[test]
fn the_same_token_used_twice_shows_both_records_under_its_hop() {
    let logs = sources(&[
        (
            "agent.log",
            vec![
                rec("02.100", "outbound", AGENT, INFERENCE, H0, None).to_string(),
                rec("04.100", "outbound", AGENT, INFERENCE, H0, None).to_string(),
            ],
        ),
        (
            "inference.log",
            vec![
                rec("02.110", "inbound", AGENT, INFERENCE, H0, None).to_string(),
                rec("04.110", "inbound", AGENT, INFERENCE, H0, None).to_string(),
            ],
        ),
    ]);
    let trace = trace(TXN, &logs).unwrap();
    assert_eq!(walk(&trace), [hop(0, AGENT, INFERENCE, Link::Origin, 4)]);
    let order: Vec<String> = trace.roots[0]
        .hop
        .records
        .iter()
        .map(|r| r.location())
        .collect();
    assert_eq!(
        order,
        [
            "agent.log:1",
            "agent.log:2",
            "inference.log:1",
            "inference.log:2"
        ]
    );
}

#[test]
fn an_egress_deny_is_a_hop_with_its_outbound_record_only_and_no_missing_side() {
    let logs = sources(&[(
        "agent.log",
        vec![denied(
            rec("02.100", "outbound", AGENT, CRM, H0, None),
            "deny-agent-direct-to-crm",
        )],
    )]);
    let text = render(TXN, &logs).unwrap();
    assert!(text.contains("outbound  deny (forbidden)  403"), "{text}");
    assert!(!text.contains("no record"), "{text}");
}

#[test]
fn siblings_are_ordered_by_instant_not_by_the_text_of_their_timestamp() {
    // `02Z` is before `02.5Z`, though `.` sorts before `Z`.
    let logs = sources(&[(
        "inference.log",
        vec![
            rec("02.500", "outbound", INFERENCE, CRM, H1, Some(H0)).to_string(),
            with(
                rec("x", "outbound", INFERENCE, SEARCH, H2, Some(H0)),
                &[("timestamp", json!("2026-11-22T10:15:02Z"))],
            ),
        ],
    )]);
    let trace = trace(TXN, &logs).unwrap();
    let order: Vec<_> = walk(&trace)
        .into_iter()
        .map(|(_, _, to, _, _)| to)
        .collect();
    assert_eq!(order, [INFERENCE, SEARCH, CRM]);
}

#[test]
fn the_json_tree_nests_hops_and_keeps_each_record_as_written() {
    let json = render_json(TXN, &chain()).unwrap();
    assert_eq!(json["txn"], TXN);
    assert_eq!(json["sub"], json!(["alice"]));
    assert_eq!(
        (json["records"].as_u64(), json["hops"].as_u64()),
        (Some(4), Some(2))
    );
    assert_eq!(
        json["files"],
        json!({"read": 3, "with_txn": ["agent.log", "inference.log", "crm.log"]})
    );
    let first = &json["tree"][0];
    assert_eq!(first["link"], "origin");
    assert_eq!(
        (&first["caller"], &first["destination"]),
        (&json!(AGENT), &json!(INFERENCE))
    );
    assert_eq!(first["token_hash"], H0);
    assert!(first["token_prv"].is_null());
    assert_eq!(first["records"][0]["file"], "agent.log");
    assert_eq!(first["records"][0]["line"], 2);
    assert_eq!(first["records"][0]["record"]["direction"], "outbound");
    let last = &first["children"][0];
    assert_eq!(last["link"], "child");
    assert_eq!(last["records"][1]["record"]["effect"], "deny");
    assert_eq!(last["records"][1]["record"]["status"], 403);
    assert_eq!(last["children"], json!([]));
}
