//! Why `hopgate iptables` failed. Every variant exits 1; a flag problem is found before any
//! command runs, so nothing has been touched when one is reported.

use std::io;

/// Why `hopgate iptables apply`, `remove` or `print` failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IptablesError {
    /// A port flag is not a TCP port.
    #[error("--{flag} `{input}` is not a port: {reason}")]
    BadPort {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The value (or the list entry) as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `--proxy-uid` is not a user ID.
    #[error("--proxy-uid `{input}` is not a uid: it must be a whole number from 0 to 4294967294")]
    BadUid {
        /// The value as given.
        input: String,
    },
    /// An `--exclude-cidrs` entry is not an address range.
    #[error("--exclude-cidrs `{input}` is not a CIDR: {reason}")]
    BadCidr {
        /// The entry as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Inbound and outbound connections redirected to one listener.
    #[error(
        "--inbound-port and --outbound-port are both `{port}`: inbound and outbound connections \
         need listeners of their own"
    )]
    SamePort {
        /// The port given twice.
        port: u16,
    },
    /// `--iptables-mode` is not a mode.
    #[error("--iptables-mode `{input}` is not one of `plain`, `legacy`, `nft`")]
    BadMode {
        /// The value as given.
        input: String,
    },
    /// An iptables binary is not on `PATH`.
    #[error(
        "`{program}` is not on PATH: install iptables (Debian: `apt-get install iptables`), or \
         choose other binaries with --iptables-mode"
    )]
    Missing {
        /// The binary looked for.
        program: &'static str,
    },
    /// An iptables binary could not be run or talked to.
    #[error("cannot run `{command}`: {source}")]
    Io {
        /// The command line.
        command: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An iptables binary ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr (trimmed), with the ruleset line it names, if any.
        stderr: String,
    },
}
