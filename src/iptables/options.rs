//! The rule flags of `hopgate iptables apply` and `print`, parsed once into a [`Capture`]:
//! what is redirected where, and what is left alone. A bad value is reported here, naming it,
//! before any iptables command runs.

use std::fmt;
use std::net::IpAddr;

use super::IptablesError;
use crate::cli::IptablesRules;

/// The `--inbound-port` used with `--capture-inbound` when none is given: the port of the usual
/// `inbound.listen`.
pub(crate) const DEFAULT_INBOUND_PORT: Port = Port(15006);

/// What to redirect and what to leave alone, from validated flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Capture {
    proxy_uid: u32,
    outbound_port: Port,
    /// `Some` exactly when `--capture-inbound` is given.
    inbound_port: Option<Port>,
    /// `--inbound-port` was given without `--capture-inbound`: checked, and unused.
    unused_inbound_port: bool,
    exclude_ports: Vec<Port>,
    exclude_cidrs: Vec<Cidr>,
}

/// A TCP port, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Port(u16);

/// An address range such as `10.0.0.0/8`, with no bits set past its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

// === impl Capture ===

impl Capture {
    /// Parses the flags.
    ///
    /// # Errors
    /// The first bad value: [`IptablesError::BadUid`], [`IptablesError::BadPort`],
    /// [`IptablesError::BadCidr`] or [`IptablesError::SamePort`]. An `--inbound-port` without
    /// `--capture-inbound` is checked and then unused (see [`Self::unused_inbound_port`]): the
    /// flags are independent, each with its default.
    pub(crate) fn parse(flags: &IptablesRules) -> Result<Self, IptablesError> {
        let proxy_uid = parse_uid(&flags.proxy_uid)?;
        let outbound_port = Port::parse("outbound-port", &flags.outbound_port)?;
        let given = flags
            .inbound_port
            .as_deref()
            .map(|port| Port::parse("inbound-port", port))
            .transpose()?;
        let inbound_port = flags
            .capture_inbound
            .then(|| given.unwrap_or(DEFAULT_INBOUND_PORT));
        let unused_inbound_port = given.is_some() && !flags.capture_inbound;
        if inbound_port == Some(outbound_port) {
            return Err(IptablesError::SamePort {
                port: outbound_port.0,
            });
        }
        let mut exclude_ports = Vec::new();
        for entry in list_entries(&flags.exclude_ports) {
            let port = Port::parse("exclude-ports", entry)?;
            if !exclude_ports.contains(&port) {
                exclude_ports.push(port);
            }
        }
        let mut exclude_cidrs = Vec::new();
        for entry in list_entries(&flags.exclude_cidrs) {
            let cidr = Cidr::parse(entry)?;
            if !exclude_cidrs.contains(&cidr) {
                exclude_cidrs.push(cidr);
            }
        }
        Ok(Self {
            proxy_uid,
            outbound_port,
            inbound_port,
            unused_inbound_port,
            exclude_ports,
            exclude_cidrs,
        })
    }

    /// The uid whose connections are never redirected: hopgate's own.
    pub(crate) fn proxy_uid(&self) -> u32 {
        self.proxy_uid
    }

    /// Where outbound TCP goes.
    pub(crate) fn outbound_port(&self) -> Port {
        self.outbound_port
    }

    /// Where inbound TCP goes, when inbound is captured at all.
    pub(crate) fn inbound_port(&self) -> Option<Port> {
        self.inbound_port
    }

    /// Whether `--inbound-port` was given without `--capture-inbound`, so nothing uses it.
    pub(crate) fn unused_inbound_port(&self) -> bool {
        self.unused_inbound_port
    }

    /// Destination ports never redirected, in either direction, in the order given.
    pub(crate) fn exclude_ports(&self) -> &[Port] {
        &self.exclude_ports
    }

    /// Destination ranges never redirected (outbound), in the order given.
    pub(crate) fn exclude_cidrs(&self) -> &[Cidr] {
        &self.exclude_cidrs
    }
}

/// The entries of a repeatable, comma-separated list flag, trimmed. An empty entry (`22,,80`,
/// a trailing comma) is kept, so it is reported rather than skipped.
fn list_entries(values: &[String]) -> impl Iterator<Item = &str> {
    values.iter().flat_map(|v| v.split(',')).map(str::trim)
}

fn parse_uid(input: &str) -> Result<u32, IptablesError> {
    input
        .parse::<u32>()
        .ok()
        .filter(|uid| digits_only(input) && *uid != u32::MAX)
        .ok_or_else(|| IptablesError::BadUid {
            input: input.to_owned(),
        })
}

/// `u16::from_str` and friends also take a leading `+`; a port or uid here is plain digits.
fn digits_only(input: &str) -> bool {
    !input.is_empty() && input.bytes().all(|b| b.is_ascii_digit())
}

// === impl Port ===

impl Port {
    fn parse(flag: &'static str, input: &str) -> Result<Self, IptablesError> {
        let bad = |reason| IptablesError::BadPort {
            flag,
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("an empty entry"));
        }
        if !digits_only(input) {
            return Err(bad("it must be a whole number from 1 to 65535"));
        }
        match input.parse::<u16>() {
            Ok(0) | Err(_) => Err(bad("it must be from 1 to 65535")),
            Ok(port) => Ok(Self(port)),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

// === impl Cidr ===

impl Cidr {
    /// Parses `ADDRESS/PREFIX`, or a bare address as a single-address range.
    fn parse(input: &str) -> Result<Self, IptablesError> {
        let bad = |reason: String| IptablesError::BadCidr {
            input: input.to_owned(),
            reason,
        };
        let (addr, prefix) = match input.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (input, None),
        };
        if input.is_empty() {
            return Err(bad("an empty entry".to_owned()));
        }
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("`{addr}` is not an IPv4 or IPv6 address")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| digits_only(p) && *n <= max)
                .ok_or_else(|| bad(format!("the prefix `{p}` must be a number from 0 to {max}")))?,
        };
        let network = masked(addr, prefix);
        if network != addr {
            // A typo such as `10.0.0.1/8` may have meant /32: say what it would exclude.
            return Err(bad(format!(
                "it has bits set past its /{prefix} prefix; the range is `{network}/{prefix}`"
            )));
        }
        Ok(Self { network, prefix })
    }

    /// Whether this is an IPv4 range (else IPv6).
    pub(crate) fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `addr` with every bit past `prefix` cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> IptablesRules {
        IptablesRules {
            proxy_uid: "1337".to_owned(),
            outbound_port: "15001".to_owned(),
            inbound_port: None,
            capture_inbound: false,
            exclude_ports: Vec::new(),
            exclude_cidrs: Vec::new(),
        }
    }

    fn error(flags: &IptablesRules) -> String {
        Capture::parse(flags).unwrap_err().to_string()
    }

    #[test]
    fn the_defaults_capture_outbound_only() {
        let capture = Capture::parse(&flags()).unwrap();
        assert_eq!(capture.proxy_uid(), 1337);
        assert_eq!(capture.outbound_port(), Port(15001));
        assert_eq!(capture.inbound_port(), None);
        assert!(capture.exclude_ports().is_empty());
        assert!(capture.exclude_cidrs().is_empty());
    }

    #[test]
    fn capture_inbound_defaults_to_port_15006() {
        let capture = Capture::parse(&IptablesRules {
            capture_inbound: true,
            ..flags()
        })
        .unwrap();
        assert_eq!(capture.inbound_port(), Some(Port(15006)));
    }

    #[test]
    fn an_inbound_port_without_capture_inbound_is_checked_then_unused() {
        let capture = Capture::parse(&IptablesRules {
            inbound_port: Some("15006".to_owned()),
            ..flags()
        })
        .unwrap();
        assert_eq!(capture.inbound_port(), None);
        assert!(capture.unused_inbound_port());
        let err = error(&IptablesRules {
            inbound_port: Some("0".to_owned()),
            ..flags()
        });
        assert!(err.contains("--inbound-port `0` is not a port"), "{err}");
    }

    #[test]
    fn one_port_for_both_directions_is_refused() {
        let err = error(&IptablesRules {
            capture_inbound: true,
            inbound_port: Some("15001".to_owned()),
            ..flags()
        });
        assert!(err.contains("both `15001`"), "{err}");
    }

    #[test]
    fn list_flags_take_commas_and_repeats_and_drop_duplicates() {
        let capture = Capture::parse(&IptablesRules {
            exclude_ports: vec!["22, 80".to_owned(), "22".to_owned(), "443".to_owned()],
            exclude_cidrs: vec!["10.0.0.0/8,fd00::/8".to_owned(), "10.0.0.0/8".to_owned()],
            ..flags()
        })
        .unwrap();
        let ports: Vec<String> = capture
            .exclude_ports()
            .iter()
            .map(Port::to_string)
            .collect();
        assert_eq!(ports, ["22", "80", "443"]);
        let cidrs: Vec<String> = capture
            .exclude_cidrs()
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(cidrs, ["10.0.0.0/8", "fd00::/8"]);
    }

    #[test]
    fn bad_ports_are_refused_naming_the_flag_and_the_value() {
        for (input, reason) in [
            ("0", "from 1 to 65535"),
            ("65536", "from 1 to 65535"),
            ("+80", "whole number"),
            ("http", "whole number"),
            ("", "empty entry"),
        ] {
            let err = error(&IptablesRules {
                outbound_port: input.to_owned(),
                ..flags()
            });
            assert!(
                err.starts_with(&format!("--outbound-port `{input}`")),
                "{err}"
            );
            assert!(err.contains(reason), "{err}");
        }
        let err = error(&IptablesRules {
            exclude_ports: vec!["22,,80".to_owned()],
            ..flags()
        });
        assert_eq!(err, "--exclude-ports `` is not a port: an empty entry");
    }

    #[test]
    fn bad_uids_are_refused_naming_the_value() {
        for input in ["-1", "4294967295", "root", "", "+1"] {
            let err = error(&IptablesRules {
                proxy_uid: input.to_owned(),
                ..flags()
            });
            assert!(err.starts_with(&format!("--proxy-uid `{input}`")), "{err}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(input in "\\PC{0,48}") {
            let _ = Cidr::parse(&input);
            let _ = Port::parse("outbound-port", &input);
            let _ = parse_uid(&input);
        }

        #[test]
        fn a_parsed_cidr_prints_as_what_was_given(input in "[0-9a-f:.]{1,39}/[0-9]{1,3}") {
            if let Ok(cidr) = Cidr::parse(&input) {
                let again = Cidr::parse(&cidr.to_string()).unwrap();
                proptest::prop_assert_eq!(again, cidr);
            }
        }
    }

    #[test]
    fn a_bare_address_is_a_single_address_range() {
        assert_eq!(Cidr::parse("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(Cidr::parse("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        for (input, reason) in [
            ("10.0.0.1/8", "the range is `10.0.0.0/8`"),
            ("fd00::1/8", "the range is `fd00::/8`"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("10.0.0.0/", "the prefix ``"),
            ("10.0.0/8", "`10.0.0` is not an IPv4 or IPv6 address"),
            ("example.com/24", "is not an IPv4 or IPv6 address"),
            ("", "empty entry"),
        ] {
            let err = Cidr::parse(input).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--exclude-cidrs `{input}`")),
                "{err}"
            );
            assert!(err.contains(reason), "{input}: {err}");
        }
    }
}
