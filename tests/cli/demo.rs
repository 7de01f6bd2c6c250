//! `hopgate demo`.

use super::*;

#[test]
fn demo_runs_the_four_steps_and_exits_0_when_each_behaves_as_expected() {
    let out = Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok   step 1: allowed; crm saw sub=alice",
        "ok   step 2: denied with 403 by crm's policy [\"deny-agent-direct-to-crm\"]",
        "ok   step 3: rejected with 401 `binding`",
        "ok   step 4: denied with 403 by crm",
        "every step behaved as expected",
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    // The span tree shows the whole chain as one trace, and no token is printed whole.
    assert!(
        stdout.contains(
            "└─ crm hopgate.inbound  GET /tickets/42 → 200  allow [inference-read-ticket-on-crm]"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("eyJ"), "a token was printed: {stdout}");
}
