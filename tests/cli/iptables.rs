//! `hopgate iptables print` for the defaults and every flag; bad values refused before anything
//! runs; and `apply` against stand-in iptables binaries on `PATH` (shell scripts that record
//! what they were given), so what is fed to iptables-restore is checked without root. The real
//! binaries, in a network namespace, are the system tests' (tests/system/iptables.rs).

use super::*;

/// `print` with the defaults: the IPv4 then the IPv6 ruleset.
const DEFAULTS: &str = "\
# IPv4: iptables-restore --noflush
*nat
:HOPGATE_OUTPUT - [0:0]
-A HOPGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A HOPGATE_OUTPUT -o lo -j RETURN
-A HOPGATE_OUTPUT -d 127.0.0.0/8 -j RETURN
-A HOPGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15001
-A OUTPUT -p tcp -j HOPGATE_OUTPUT
COMMIT
# IPv6: ip6tables-restore --noflush (when the kernel has IPv6 and ip6tables is installed)
*nat
:HOPGATE_OUTPUT - [0:0]
-A HOPGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A HOPGATE_OUTPUT -o lo -j RETURN
-A HOPGATE_OUTPUT -d ::1/128 -j RETURN
-A HOPGATE_OUTPUT -p tcp -j REDIRECT --to-ports 15001
-A OUTPUT -p tcp -j HOPGATE_OUTPUT
COMMIT
";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `hopgate args` with `PATH` set to `path` only.
fn hopgate_with_path(args: &[&str], path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hopgate"))
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap()
}

/// A folder of stand-in iptables binaries, the only thing on `PATH`. Each `*-restore` answers
/// `--version` as nf_tables 1.8.9 and otherwise copies its stdin to `<name>.input`; each
/// `*-save` prints an empty nat table; every call is appended to `calls`.
struct FakeIptables {
    dir: tempfile::TempDir,
}

impl FakeIptables {
    fn new() -> Self {
        let fake = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for family in ["iptables", "ip6tables"] {
            fake.script(
                &format!("{family}-save"),
                "printf '*nat\\n:PREROUTING ACCEPT [0:0]\\n:OUTPUT ACCEPT [0:0]\\nCOMMIT\\n'",
            );
            let input = fake.dir.path().join(format!("{family}-restore.input"));
            fake.script(
                &format!("{family}-restore"),
                &format!(
                    "if [ \"$1\" = --version ]; then echo '{family}-restore v1.8.9 (nf_tables)'; \
                     exit 0; fi\n\
                     while IFS= read -r line; do printf '%s\\n' \"$line\"; done > '{}'",
                    input.display()
                ),
            );
        }
        fake
    }

    /// Writes an executable `/bin/sh` script `name` that logs its call, then runs `body`. Only
    /// shell builtins: nothing else is on `PATH`.
    fn script(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        let calls = self.dir.path().join("calls");
        let text = format!(
            "#!/bin/sh\necho \"{name} $*\" >> '{}'\n{body}\n",
            calls.display()
        );
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(name)).ok()
    }

    fn calls(&self) -> Vec<String> {
        self.file("calls")
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The IPv4 ruleset of `print` with `args`: from `*nat` to `COMMIT`.
fn printed_v4(args: &[&str]) -> String {
    let mut all = vec!["iptables", "print"];
    all.extend_from_slice(args);
    let printed = stdout(&hopgate(&all));
    let v4 = printed.split("# IPv6").next().unwrap();
    v4.lines().skip(1).map(|l| format!("{l}\n")).collect()
}

#[test]
fn print_with_the_defaults_shows_the_outbound_chain_of_each_family() {
    let out = hopgate(&["iptables", "print"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), DEFAULTS);
}

#[test]
fn an_inbound_port_without_capture_inbound_changes_nothing_and_says_so() {
    // Every flag of the usage line, with its default, but no --capture-inbound.
    let out = hopgate(&[
        "iptables",
        "print",
        "--proxy-uid",
        "1337",
        "--outbound-port",
        "15001",
        "--inbound-port",
        "15006",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), DEFAULTS, "no inbound rule");
    assert!(
        stderr(&out).contains("note: --inbound-port is used only with --capture-inbound"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn print_with_capture_inbound_adds_the_prerouting_chain_on_port_15006() {
    let out = hopgate(&["iptables", "print", "--capture-inbound"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    for family in printed.split("# IPv6").map(str::to_owned) {
        assert!(family.contains(":HOPGATE_PREROUTING - [0:0]\n"), "{family}");
        assert!(
            family.contains(
                "-A HOPGATE_PREROUTING -p tcp -j REDIRECT --to-ports 15006\n\
                 -A PREROUTING -p tcp -j HOPGATE_PREROUTING\nCOMMIT\n"
            ),
            "{family}"
        );
    }
}

#[test]
fn print_puts_every_flag_into_the_rules() {
    let args = [
        "--proxy-uid",
        "999",
        "--outbound-port",
        "16001",
        "--capture-inbound",
        "--inbound-port",
        "16006",
        "--exclude-ports",
        "22,5432",
        "--exclude-ports",
        "9090",
        "--exclude-cidrs",
        "10.96.0.0/12,fd00::/8",
        "--exclude-cidrs",
        "169.254.169.254",
    ];
    let mut all = vec!["iptables", "print"];
    all.extend_from_slice(&args);
    let out = hopgate(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    let (v4, v6) = printed.split_once("# IPv6").unwrap();
    assert_eq!(
        v4,
        "# IPv4: iptables-restore --noflush\n\
         *nat\n\
         :HOPGATE_OUTPUT - [0:0]\n\
         :HOPGATE_PREROUTING - [0:0]\n\
         -A HOPGATE_OUTPUT -m owner --uid-owner 999 -j RETURN\n\
         -A HOPGATE_OUTPUT -o lo -j RETURN\n\
         -A HOPGATE_OUTPUT -d 127.0.0.0/8 -j RETURN\n\
         -A HOPGATE_OUTPUT -p tcp -m tcp --dport 22 -j RETURN\n\
         -A HOPGATE_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN\n\
         -A HOPGATE_OUTPUT -p tcp -m tcp --dport 9090 -j RETURN\n\
         -A HOPGATE_OUTPUT -d 10.96.0.0/12 -j RETURN\n\
         -A HOPGATE_OUTPUT -d 169.254.169.254/32 -j RETURN\n\
         -A HOPGATE_OUTPUT -p tcp -j REDIRECT --to-ports 16001\n\
         -A OUTPUT -p tcp -j HOPGATE_OUTPUT\n\
         -A HOPGATE_PREROUTING -p tcp -m tcp --dport 22 -j RETURN\n\
         -A HOPGATE_PREROUTING -p tcp -m tcp --dport 5432 -j RETURN\n\
         -A HOPGATE_PREROUTING -p tcp -m tcp --dport 9090 -j RETURN\n\
         -A HOPGATE_PREROUTING -p tcp -j REDIRECT --to-ports 16006\n\
         -A PREROUTING -p tcp -j HOPGATE_PREROUTING\n\
         COMMIT\n"
    );
    assert!(
        v6.contains("-A HOPGATE_OUTPUT -d ::1/128 -j RETURN\n"),
        "{v6}"
    );
    assert!(
        v6.contains("-A HOPGATE_OUTPUT -d fd00::/8 -j RETURN\n"),
        "{v6}"
    );
    assert!(!v6.contains("10.96.0.0") && !v6.contains("169.254"), "{v6}");
    assert!(v6.contains("--to-ports 16001\n") && v6.contains("--to-ports 16006\n"));
}

#[test]
fn print_runs_no_iptables_command() {
    let empty = tempfile::tempdir().unwrap();
    let out = hopgate_with_path(&["iptables", "print"], empty.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), DEFAULTS);
}

#[test]
fn bad_values_exit_1_with_a_message_naming_them() {
    for (args, message) in [
        (
            &["--proxy-uid", "proxy"][..],
            "--proxy-uid `proxy` is not a uid",
        ),
        (
            &["--outbound-port", "0"],
            "--outbound-port `0` is not a port",
        ),
        (
            &["--capture-inbound", "--inbound-port", "70000"],
            "--inbound-port `70000` is not a port",
        ),
        (
            &["--exclude-ports", "22,ssh"],
            "--exclude-ports `ssh` is not a port",
        ),
        (
            &["--exclude-cidrs", "10.0.0.0/8,10.0.0.300/32"],
            "--exclude-cidrs `10.0.0.300/32` is not a CIDR",
        ),
        (
            &["--exclude-cidrs", "10.1.0.0/8"],
            "the range is `10.0.0.0/8`",
        ),
        (
            &["--capture-inbound", "--inbound-port", "15001"],
            "--inbound-port and --outbound-port are both `15001`",
        ),
    ] {
        // No iptables on PATH: were a value here ever accepted, `apply` still could not change
        // the rules of the machine running the tests.
        let empty = tempfile::tempdir().unwrap();
        for command in ["print", "apply"] {
            let mut all = vec!["iptables", command];
            all.extend_from_slice(args);
            let out = hopgate_with_path(&all, empty.path());
            assert_eq!(out.status.code(), Some(1), "{all:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(message), "{all:?}: {}", stderr(&out));
            assert_eq!(stdout(&out), "", "{all:?}");
        }
    }
    let empty = tempfile::tempdir().unwrap();
    let out = hopgate_with_path(
        &["iptables", "remove", "--iptables-mode", "nftables"],
        empty.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--iptables-mode `nftables` is not one of"));
}

#[test]
fn apply_with_a_bad_value_runs_no_iptables_command() {
    let fake = FakeIptables::new();
    let out = hopgate_with_path(
        &["iptables", "apply", "--exclude-cidrs", "not-a-cidr"],
        fake.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fake.calls(), Vec::<String>::new());
}

#[test]
fn apply_without_iptables_says_which_binary_is_missing() {
    let empty = tempfile::tempdir().unwrap();
    for command in ["apply", "remove"] {
        let out = hopgate_with_path(&["iptables", command], empty.path());
        assert_eq!(out.status.code(), Some(1), "{command}");
        let err = stderr(&out);
        assert!(
            err.contains("`iptables-restore` is not on PATH: install iptables"),
            "{command}: {err}"
        );
    }
    let out = hopgate_with_path(
        &["iptables", "apply", "--iptables-mode", "legacy"],
        empty.path(),
    );
    assert!(stderr(&out).contains("`iptables-legacy-restore` is not on PATH"));
}

#[test]
fn apply_feeds_iptables_restore_what_print_shows_and_reports_the_variant() {
    let fake = FakeIptables::new();
    let args = ["--capture-inbound", "--exclude-ports", "22"];
    let mut all = vec!["iptables", "apply"];
    all.extend_from_slice(&args);
    let out = hopgate_with_path(&all, fake.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.starts_with(
            "IPv4 via iptables-restore v1.8.9 (nf_tables): variant nf_tables\n\
             \x20 HOPGATE_OUTPUT: 5 rules; jump from OUTPUT added\n\
             \x20 HOPGATE_PREROUTING: 2 rules; jump from PREROUTING added\n"
        ),
        "{printed}"
    );
    assert_eq!(
        fake.file("iptables-restore.input").unwrap(),
        printed_v4(&args)
    );
    assert!(
        fake.calls()
            .contains(&"iptables-restore --noflush -w 5".to_owned()),
        "{:?}",
        fake.calls()
    );
    // IPv6 follows the kernel: done with ip6tables where it has IPv6, skipped (saying so) where not.
    if Path::new("/proc/net/if_inet6").exists() {
        assert!(
            printed.contains("IPv6 via ip6tables-restore v1.8.9"),
            "{printed}"
        );
        let v6 = fake.file("ip6tables-restore.input").unwrap();
        assert!(
            v6.contains("-A HOPGATE_OUTPUT -d ::1/128 -j RETURN\n"),
            "{v6}"
        );
    } else {
        assert!(
            printed.contains("IPv6: skipped: the kernel has no IPv6"),
            "{printed}"
        );
    }
}

#[test]
fn a_failing_iptables_restore_is_named_with_its_stderr_and_the_line() {
    let fake = FakeIptables::new();
    fake.script(
        "iptables-restore",
        "if [ \"$1\" = --version ]; then echo 'iptables-restore v1.8.9 (legacy)'; exit 0; fi\n\
         echo 'iptables-restore: line 3 failed' >&2; exit 1",
    );
    let out = hopgate_with_path(&["iptables", "apply"], fake.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "`iptables-restore --noflush -w 5` failed (exit status: 1): iptables-restore: line 3 \
             failed (the line: `-A HOPGATE_OUTPUT -m owner --uid-owner 1337 -j RETURN`)"
        ),
        "{err}"
    );
    // Both families were read before either was changed; neither was reported as done.
    assert!(
        !stdout(&out).contains("jump from OUTPUT"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn remove_on_a_table_without_hopgate_changes_nothing_and_succeeds() {
    let fake = FakeIptables::new();
    let out = hopgate_with_path(&["iptables", "remove"], fake.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("  nothing of hopgate's installed\n"),
        "{}",
        stdout(&out)
    );
    assert!(fake.file("iptables-restore.input").is_none());
    let restores: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.contains("restore --noflush"))
        .collect();
    assert_eq!(restores, Vec::<String>::new());
}
