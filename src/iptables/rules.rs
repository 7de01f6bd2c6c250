//! The rules, as `iptables-restore --noflush` input: a pure function of a [`Capture`], an IP
//! [`Family`] and what is already [`Installed`] (read from `iptables-save -t nat`). Nothing here
//! runs a command, so every ruleset is tested as text.
//!
//! Each rule is written the way `iptables-save` prints it back (`-p tcp -m tcp --dport 22`, not
//! `--dport 22`), so what `print` shows is what `iptables-save` shows after `apply`, line for line.
//!
//! Idempotence comes from the restore format itself: with `--noflush`, a chain line
//! (`:HOPGATE_OUTPUT - [0:0]`) creates the chain or, when it exists, flushes it, and the rules
//! that follow refill it, all in one commit. The jump from the built-in chain is added only when
//! it is not already there, so two applies leave one jump.

use std::fmt::Write as _;

use super::options::Capture;

/// The chain outbound TCP passes through, jumped to from `OUTPUT`.
pub(crate) const OUTPUT_CHAIN: &str = "HOPGATE_OUTPUT";
/// The chain inbound TCP passes through with `--capture-inbound`, jumped to from `PREROUTING`.
pub(crate) const PREROUTING_CHAIN: &str = "HOPGATE_PREROUTING";

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// One of hopgate's two chains, with the built-in chain that jumps to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// `OUTPUT` → `HOPGATE_OUTPUT`: the app's outbound connections.
    Output,
    /// `PREROUTING` → `HOPGATE_PREROUTING`: connections arriving from the network.
    Prerouting,
}

/// What of hopgate's is in a nat table, from its `iptables-save` text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Installed {
    output_chain: bool,
    prerouting_chain: bool,
    /// Every rule outside hopgate's chains that jumps to one of them, as saved (`-A ...`).
    jumps: Vec<(Hook, String)>,
}

/// An `iptables-restore --noflush` input and what it will do, for the command to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ruleset {
    /// The restore input.
    pub(crate) text: String,
    /// One line per chain: what happens to it.
    pub(crate) changes: Vec<String>,
}

// === impl Family ===

impl Family {
    /// `IPv4` or `IPv6`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }

    /// The loopback range, which is never redirected.
    fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.0/8",
            Self::V6 => "::1/128",
        }
    }
}

// === impl Hook ===

impl Hook {
    const ALL: [Self; 2] = [Self::Output, Self::Prerouting];

    /// hopgate's chain.
    pub(crate) fn chain(self) -> &'static str {
        match self {
            Self::Output => OUTPUT_CHAIN,
            Self::Prerouting => PREROUTING_CHAIN,
        }
    }

    /// The built-in chain that jumps to it.
    fn builtin(self) -> &'static str {
        match self {
            Self::Output => "OUTPUT",
            Self::Prerouting => "PREROUTING",
        }
    }

    /// The jump, as saved. Only TCP enters hopgate's chains: nothing else is redirected.
    fn jump(self) -> String {
        format!("-A {} -p tcp -j {}", self.builtin(), self.chain())
    }

    fn of_chain(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|hook| hook.chain() == name)
    }
}

// === impl Installed ===

impl Installed {
    /// Reads hopgate's chains and the jumps to them from `iptables-save -t nat` output. Other
    /// chains and rules are not hopgate's and are left as they are.
    pub(crate) fn parse(save: &str) -> Self {
        let mut installed = Self::default();
        for line in save.lines().map(str::trim) {
            if let Some(declaration) = line.strip_prefix(':') {
                match declaration
                    .split_whitespace()
                    .next()
                    .and_then(Hook::of_chain)
                {
                    Some(Hook::Output) => installed.output_chain = true,
                    Some(Hook::Prerouting) => installed.prerouting_chain = true,
                    None => {}
                }
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some("-A"), Some(chain)) = (words.next(), words.next()) else {
                continue;
            };
            if Hook::of_chain(chain).is_some() {
                continue; // a rule of hopgate's own chains: refilled or dropped with them
            }
            let mut target = None;
            while let Some(word) = words.next() {
                if word == "-j" || word == "-g" || word == "--jump" || word == "--goto" {
                    target = words.next().and_then(Hook::of_chain);
                }
            }
            if let Some(hook) = target {
                installed.jumps.push((hook, line.to_owned()));
            }
        }
        installed
    }

    /// Whether hopgate has nothing in this table.
    pub(crate) fn is_empty(&self) -> bool {
        !self.output_chain && !self.prerouting_chain && self.jumps.is_empty()
    }

    fn has_chain(&self, hook: Hook) -> bool {
        match hook {
            Hook::Output => self.output_chain,
            Hook::Prerouting => self.prerouting_chain,
        }
    }

    fn jumps_to(&self, hook: Hook) -> impl Iterator<Item = &str> {
        self.jumps
            .iter()
            .filter(move |(to, _)| *to == hook)
            .map(|(_, line)| line.as_str())
    }
}

// === the rulesets ===

/// The rules of hopgate's chain for `hook` in `family`, in order, as `-A` lines; empty when
/// `capture` does not use the hook.
pub(crate) fn chain_rules(capture: &Capture, family: Family, hook: Hook) -> Vec<String> {
    let chain = hook.chain();
    let mut rules = Vec::new();
    let port = match hook {
        Hook::Output => {
            // hopgate's own upstream connections: redirecting them would loop them back into it.
            rules.push(format!(
                "-A {chain} -m owner --uid-owner {} -j RETURN",
                capture.proxy_uid()
            ));
            // Destinations on this host (the pod's own addresses, and loopback, which the app uses
            // to reach its sidecar's listeners and local services) are left alone.
            rules.push(format!("-A {chain} -o lo -j RETURN"));
            rules.push(format!("-A {chain} -d {} -j RETURN", family.loopback()));
            capture.outbound_port()
        }
        Hook::Prerouting => match capture.inbound_port() {
            Some(port) => port,
            None => return rules,
        },
    };
    for excluded in capture.exclude_ports() {
        rules.push(format!(
            "-A {chain} -p tcp -m tcp --dport {excluded} -j RETURN"
        ));
    }
    if hook == Hook::Output {
        let family_cidrs = capture
            .exclude_cidrs()
            .iter()
            .filter(|cidr| cidr.is_ipv4() == (family == Family::V4));
        for cidr in family_cidrs {
            rules.push(format!("-A {chain} -d {cidr} -j RETURN"));
        }
    }
    rules.push(format!("-A {chain} -p tcp -j REDIRECT --to-ports {port}"));
    rules
}

/// What `apply` feeds `iptables-restore --noflush` in `family`: hopgate's chains created or
/// flushed and refilled; the jump to each added unless it is there; any other jump to them
/// (another form, a duplicate) deleted; and, without `--capture-inbound`, an installed
/// `HOPGATE_PREROUTING` removed with its jumps. `print` shows it for an empty table.
pub(crate) fn apply(capture: &Capture, family: Family, installed: &Installed) -> Ruleset {
    let mut declarations = String::new();
    let mut rules = String::new();
    let mut teardown = String::new();
    let mut changes = Vec::new();
    for hook in Hook::ALL {
        let chain = hook.chain();
        let chain_rules = chain_rules(capture, family, hook);
        if chain_rules.is_empty() {
            if installed.has_chain(hook) {
                for jump in installed.jumps_to(hook) {
                    push_line(&mut rules, &delete(jump));
                }
                push_line(&mut teardown, &format!("-F {chain}"));
                push_line(&mut teardown, &format!("-X {chain}"));
                changes.push(format!("{chain}: removed (no --capture-inbound)"));
            }
            continue;
        }
        push_line(&mut declarations, &format!(":{chain} - [0:0]"));
        for rule in &chain_rules {
            push_line(&mut rules, rule);
        }
        let canonical = hook.jump();
        let mut kept = false;
        for jump in installed.jumps_to(hook) {
            if !kept && same_rule(jump, &canonical) {
                kept = true;
            } else {
                push_line(&mut rules, &delete(jump));
            }
        }
        if !kept {
            push_line(&mut rules, &canonical);
        }
        let jump = if kept { "in place" } else { "added" };
        let count = match chain_rules.len() {
            1 => "1 rule".to_owned(),
            n => format!("{n} rules"),
        };
        changes.push(format!(
            "{chain}: {count}; jump from {} {jump}",
            hook.builtin()
        ));
    }
    Ruleset {
        text: format!("*nat\n{declarations}{rules}{teardown}COMMIT\n"),
        changes,
    }
}

/// What `remove` feeds `iptables-restore --noflush`: every jump to hopgate's chains deleted,
/// then the chains flushed and deleted. `None` when nothing of hopgate's is installed.
pub(crate) fn remove(installed: &Installed) -> Option<Ruleset> {
    if installed.is_empty() {
        return None;
    }
    let mut text = String::from("*nat\n");
    let mut changes = Vec::new();
    for (_, jump) in &installed.jumps {
        push_line(&mut text, &delete(jump));
    }
    let chains: Vec<&str> = Hook::ALL
        .into_iter()
        .filter(|hook| installed.has_chain(*hook))
        .map(Hook::chain)
        .collect();
    // Every chain is flushed before any is deleted: a chain still referenced cannot go.
    for chain in &chains {
        push_line(&mut text, &format!("-F {chain}"));
    }
    for chain in &chains {
        push_line(&mut text, &format!("-X {chain}"));
        changes.push(format!("{chain}: removed"));
    }
    if !installed.jumps.is_empty() {
        changes.push(format!("{} jump(s) to them deleted", installed.jumps.len()));
    }
    text.push_str("COMMIT\n");
    Some(Ruleset { text, changes })
}

/// A saved `-A CHAIN spec` line as the `-D CHAIN spec` that deletes it. The rest of the line is
/// kept verbatim, quoting included, as iptables-restore parses it back.
fn delete(saved: &str) -> String {
    match saved.strip_prefix("-A ") {
        Some(rest) => format!("-D {rest}"),
        None => saved.to_owned(),
    }
}

fn same_rule(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

fn push_line(text: &mut String, line: &str) {
    let _ = writeln!(text, "{line}");
}

#[cfg(test)]
mod tests;
