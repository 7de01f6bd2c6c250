//! `hopgate iptables` against the real iptables, each test in a fresh network namespace
//! (`ip netns exec`): `apply` is idempotent, `remove` leaves nothing, `print` shows what `apply`
//! installs and changes nothing, and each variant (nf_tables, legacy) gets the rules. That the
//! rules capture what they should is [`capture`]'s.

use crate::netns::{self, Netns};

mod capture;

const HOPGATE: &str = env!("CARGO_BIN_EXE_hopgate");
/// The flags the rule tests apply: every rule kind hopgate writes.
const FLAGS: &[&str] = &[
    "--capture-inbound",
    "--exclude-ports",
    "22,5432",
    "--exclude-cidrs",
    "10.96.0.0/12,fd00::/8",
];

/// A fresh namespace for the rule tests, or `None` when they are skipped.
fn namespace(what: &str) -> Option<Netns> {
    (!netns::skip_or_check(what)).then(Netns::create)
}

/// `hopgate iptables args` in `ns`, which must succeed; its stdout.
fn hopgate_in(ns: &Netns, args: &[&str]) -> String {
    let mut all = vec!["iptables"];
    all.extend_from_slice(args);
    ns.exec_ok(HOPGATE, &all)
}

/// `SAVE -t nat` of an IPv4 and an IPv6 save binary (`iptables-save`, `ip6tables-save`) in
/// `ns`, one after the other, without their timestamped comment lines.
fn saved(ns: &Netns, saves: [&str; 2]) -> String {
    saves
        .iter()
        .flat_map(|save| {
            let text = ns.exec_ok(save, &["-t", "nat"]);
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// [`saved`] with the binaries `--iptables-mode plain` runs.
fn saved_plain(ns: &Netns) -> String {
    saved(ns, ["iptables-save", "ip6tables-save"])
}

/// The lines of `text` that are hopgate's chains, their rules and the jumps to them, sorted.
fn hopgate_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| l.contains("HOPGATE_"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// How many families apply acts on here: IPv4, and IPv6 where the kernel has it.
fn families() -> usize {
    1 + usize::from(std::path::Path::new("/proc/net/if_inet6").exists())
}

fn count(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

#[test]
fn apply_twice_leaves_exactly_one_set_of_rules() {
    let Some(ns) = namespace("hopgate iptables apply") else {
        return;
    };
    let mut args = vec!["apply"];
    args.extend_from_slice(FLAGS);
    let first = hopgate_in(&ns, &args);
    assert!(first.contains("jump from OUTPUT added"), "{first}");
    let once = saved_plain(&ns);
    let second = hopgate_in(&ns, &args);
    assert!(second.contains("jump from OUTPUT in place"), "{second}");
    assert!(second.contains("jump from PREROUTING in place"), "{second}");
    let twice = saved_plain(&ns);
    assert_eq!(once, twice, "a second apply changed the rules");

    // Per family: one jump from each built-in chain, and each chain's rules once.
    for family in twice.split("*nat").skip(1) {
        assert_eq!(
            count(family, "-A OUTPUT -p tcp -j HOPGATE_OUTPUT"),
            1,
            "{family}"
        );
        assert_eq!(
            count(family, "-A PREROUTING -p tcp -j HOPGATE_PREROUTING"),
            1,
            "{family}"
        );
        let outbound = family
            .lines()
            .filter(|l| l.starts_with("-A HOPGATE_OUTPUT "))
            .count();
        let inbound = family
            .lines()
            .filter(|l| l.starts_with("-A HOPGATE_PREROUTING "))
            .count();
        // uid, lo, loopback, 2 ports, 1 CIDR of the family, redirect; 2 ports, redirect.
        assert_eq!((outbound, inbound), (7, 3), "{family}");
    }
}

#[test]
fn print_shows_what_apply_installs_and_changes_nothing() {
    let Some(ns) = namespace("hopgate iptables print") else {
        return;
    };
    let mut apply = vec!["apply"];
    apply.extend_from_slice(FLAGS);
    hopgate_in(&ns, &apply);
    let before = saved_plain(&ns);
    let mut print = vec!["print"];
    print.extend_from_slice(FLAGS);
    let printed = hopgate_in(&ns, &print);
    assert_eq!(saved_plain(&ns), before, "print changed the rules");

    let (printed_v4, printed_v6) = printed.split_once("# IPv6").unwrap();
    let (saved_v4, saved_v6) = before.split_once("COMMIT").unwrap();
    assert_eq!(hopgate_lines(printed_v4), hopgate_lines(saved_v4));
    assert_eq!(hopgate_lines(printed_v6), hopgate_lines(saved_v6));
}

#[test]
fn remove_leaves_nothing_of_hopgate_and_succeeds_when_nothing_is_there() {
    let Some(ns) = namespace("hopgate iptables remove") else {
        return;
    };
    let pristine = saved_plain(&ns);
    let mut apply = vec!["apply"];
    apply.extend_from_slice(FLAGS);
    hopgate_in(&ns, &apply);
    let removed = hopgate_in(&ns, &["remove"]);
    assert!(removed.contains("HOPGATE_PREROUTING: removed"), "{removed}");
    let after = saved_plain(&ns);
    assert!(!after.contains("HOPGATE"), "{after}");
    assert_eq!(after, pristine);

    let again = hopgate_in(&ns, &["remove"]);
    assert!(again.contains("nothing of hopgate's installed"), "{again}");
    assert_eq!(saved_plain(&ns), pristine);
}

#[test]
fn apply_without_capture_inbound_drops_the_inbound_rules_an_earlier_apply_installed() {
    let Some(ns) = namespace("hopgate iptables apply") else {
        return;
    };
    hopgate_in(&ns, &["apply"]);
    let outbound_only = saved_plain(&ns);
    hopgate_in(&ns, &["apply", "--capture-inbound"]);
    assert!(saved_plain(&ns).contains("HOPGATE_PREROUTING"));
    let out = hopgate_in(&ns, &["apply"]);
    assert!(
        out.contains("HOPGATE_PREROUTING: removed (no --capture-inbound)"),
        "{out}"
    );
    assert_eq!(saved_plain(&ns), outbound_only);
}

#[test]
fn each_iptables_mode_installs_into_its_own_variant_and_reports_it() {
    let Some(ns) = namespace("hopgate iptables --iptables-mode") else {
        return;
    };
    let legacy = ["iptables-legacy-save", "ip6tables-legacy-save"];
    let nft = ["iptables-nft-save", "ip6tables-nft-save"];
    for (mode, variant, own, other) in [
        ("legacy", "legacy", legacy, nft),
        ("nft", "nf_tables", nft, legacy),
    ] {
        let out = hopgate_in(&ns, &["apply", "--iptables-mode", mode]);
        assert!(
            out.contains(&format!("): variant {variant}\n")),
            "{mode}: {out}"
        );
        let jumps = count(&saved(&ns, own), "-A OUTPUT -p tcp -j HOPGATE_OUTPUT");
        assert_eq!(jumps, families(), "{mode}");
        assert!(
            !saved(&ns, other).contains("HOPGATE"),
            "{mode} wrote to the other variant"
        );
        hopgate_in(&ns, &["remove", "--iptables-mode", mode]);
        assert!(
            !saved(&ns, own).contains("HOPGATE"),
            "{mode}: remove left rules"
        );
    }
    // Plain runs whatever `iptables` is, and says which variant that is.
    let version = ns.exec_ok("iptables", &["--version"]);
    let variant = if version.contains("nf_tables") {
        "nf_tables"
    } else {
        "legacy"
    };
    let out = hopgate_in(&ns, &["apply"]);
    assert!(
        out.contains(&format!("): variant {variant}\n")),
        "{version}: {out}"
    );
}
