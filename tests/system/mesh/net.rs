//! Hosts on one network, each a network namespace of its own: a veth pair from each host's
//! `eth0` to a bridge in a namespace of its own, so nothing touches the machine's own network.
//! Each host resolves names through `/etc/netns/<ns>/hosts`, which `ip netns exec` mounts over
//! `/etc/hosts` for the processes it starts; [`Net::set_hosts`] rewrites it in place, so a
//! running process sees the change at its next lookup. Dropping the [`Net`] deletes every
//! namespace (and with them every link, address and iptables rule) and hosts file.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A host: its name in the test and its namespace.
pub(crate) struct Host {
    pub(crate) name: &'static str,
    pub(crate) netns: String,
}

/// A bridge and the hosts on it.
pub(crate) struct Net {
    bridge: String,
    pub(crate) hosts: Vec<Host>,
}

/// Runs `ip ARGS`, panicking with its output when it fails.
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("`ip` cannot run ({e}); ./test.sh setup installs iproute2"));
    assert!(
        out.status.success(),
        "ip {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// One namespace per `(name, ip)`, on a /24 bridge. `tag` keeps the namespace names of
    /// concurrent runs apart.
    pub(crate) fn create(tag: &str, hosts: &[(&'static str, Ipv4Addr)]) -> Self {
        let pid = std::process::id();
        let bridge = format!("hg-{tag}-br-{pid}");
        let mut net = Self {
            bridge: bridge.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for (i, &(name, addr)) in hosts.iter().enumerate() {
            let netns = format!("hg-{tag}-{name}-{pid}");
            ip(&["netns", "add", &netns]);
            net.hosts.push(Host {
                name,
                netns: netns.clone(),
            });
            // Made in the host's namespace, so the names cannot clash with the machine's.
            let port = format!("p{i}");
            ip(&[
                "-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
            ]);
            ip(&["-n", &netns, "link", "set", &port, "netns", &bridge]);
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &bridge, "link", "set", &port, "up"]);
            let cidr = format!("{addr}/24");
            ip(&["-n", &netns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// The host named `name`.
    pub(crate) fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Every host's hosts file: `localhost` and `names`, rewritten in place (the mount
    /// `ip netns exec` made follows the file, not its name).
    pub(crate) fn set_hosts(&self, names: &[(&str, Ipv4Addr)]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for (name, addr) in names {
            text.push_str(&format!("{addr} {name}\n"));
        }
        for host in &self.hosts {
            let dir = hosts_dir(&host.netns);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("hosts"), &text).unwrap();
        }
    }

    /// A command run in `host`'s namespace (as root; see [`Net::command_as`]).
    pub(crate) fn command(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.host(host).netns])
            .arg(program);
        command
    }

    /// A command run in `host`'s namespace as user and group `uid`.
    pub(crate) fn command_as(&self, host: &str, uid: u32, program: &str) -> Command {
        let mut command = self.command(host, "setpriv");
        let id = uid.to_string();
        command
            .args(["--reuid", &id, "--regid", &id, "--clear-groups"])
            .arg(program);
        command
    }
}

fn hosts_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "delete", &host.netns])
                .status();
            let _ = std::fs::remove_dir_all(hosts_dir(&host.netns));
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.bridge])
            .status();
    }
}
