//! Destination addresses: `host:port`, where the host is an IP address or a DNS name.
//!
//! Every address hopgate connects to (`inbound.app`, `outbound.routes[].address`) may name its
//! host, so that a pod's config can say `crm.tools.svc:15006`. Listeners stay `ip:port`: a
//! socket binds to an address, not to a name. Names are checked here for shape only; resolving
//! them is the proxy's business, at run time, because a pod's DNS may come up after its sidecar.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::check::Check;

/// The longest DNS name, in its dotted text form without a final dot (RFC 1035 §2.3.4).
pub const MAX_DNS_NAME_LEN: usize = 253;
/// The longest label of a DNS name.
const MAX_LABEL_LEN: usize = 63;

/// A `host:port` to connect to: an IP address, or a DNS name resolved by the system resolver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    host: Host,
    port: u16,
}

/// The host part of an [`Address`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP address, connected to as it is.
    Ip(IpAddr),
    /// A DNS name, resolved by the system resolver whenever hopgate connects.
    Name(DnsName),
}

/// A checked DNS name, lowercase. A final dot (a fully qualified name that skips the
/// resolver's search list) is kept, because it changes what the system resolver looks up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsName(String);

// === impl Address ===

impl Address {
    /// Parses `ip:port`, `[ipv6]:port` or `name:port`; the port must not be 0.
    ///
    /// # Errors
    /// A sentence naming what is wrong with `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shown = text.escape_debug();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Self::with_port(Host::Ip(addr.ip()), addr.port(), text);
        }
        if text.contains("://") {
            return Err(format!(
                "`{shown}` has a scheme; expected `host:port` alone, as `crm.tools.svc:15006`"
            ));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "`{shown}` has no port; expected `host:port` (an IP address or a DNS name)"
            ));
        };
        let port: u16 = port.parse().map_err(|_| {
            format!(
                "`{shown}` does not end in a port number; expected `host:port` (an IP address or a DNS name)"
            )
        })?;
        if host.starts_with('[') || host.contains(':') || host.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "`{shown}` is not a socket address; an IPv6 address goes in brackets, as `[::1]:8080`"
            ));
        }
        let name = DnsName::parse(host).map_err(|problem| format!("`{shown}`: {problem}"))?;
        Self::with_port(Host::Name(name), port, text)
    }

    fn with_port(host: Host, port: u16, text: &str) -> Result<Self, String> {
        if port == 0 {
            return Err(format!(
                "`{}` has port 0, which cannot be connected to",
                text.escape_debug()
            ));
        }
        Ok(Self { host, port })
    }

    /// The host: an IP address or a DNS name.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port, never 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP address; `None` for a name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

/// `10.0.0.5:8080`, `[::1]:8080`, `crm.tools.svc:15006`: what [`Address::parse`] reads.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

// === impl Host ===

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Name(name) => name.fmt(f),
        }
    }
}

// === impl DnsName ===

impl DnsName {
    /// Checks a host name (RFC 1123 §2.1, with `_` too, as resolvers and hosts files take it):
    /// dot-separated labels of 1 to 63 letters, digits, `-` and `_`, not starting or ending
    /// with a hyphen, at most 253 characters, optionally
    /// with a final dot. Letters are lowered: DNS names compare without case.
    ///
    /// # Errors
    /// A sentence naming the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bare = text.strip_suffix('.').unwrap_or(text);
        if bare.is_empty() {
            return Err("the host is empty".to_owned());
        }
        if bare.len() > MAX_DNS_NAME_LEN {
            return Err(format!(
                "the host name is {} characters long; at most {MAX_DNS_NAME_LEN}",
                bare.len()
            ));
        }
        for label in bare.split('.') {
            let problem = if label.is_empty() {
                Some("has an empty label")
            } else if label.len() > MAX_LABEL_LEN {
                Some("has a label longer than 63 characters")
            } else if label.starts_with('-') || label.ends_with('-') {
                Some("has a label that starts or ends with `-`")
            } else if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Some("is not a host name: only letters, digits, `-`, `_` and `.` may appear")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(format!("the host `{}` {problem}", text.escape_debug()));
            }
        }
        Ok(Self(text.to_ascii_lowercase()))
    }

    /// The name as given, lowered, with its final dot if it had one.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Check ===

impl Check {
    /// A required `host:port` to connect to.
    pub(crate) fn address(&mut self, value: Option<String>, path: &str) -> Option<Address> {
        let value = self.required(value, path)?;
        match Address::parse(&value) {
            Ok(address) => Some(address),
            Err(problem) => {
                self.error(path, problem);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_ips_or_names() {
        let ip = Address::parse("10.0.0.5:8080").unwrap();
        assert_eq!(ip.socket_addr(), Some("10.0.0.5:8080".parse().unwrap()));
        assert_eq!(ip.to_string(), "10.0.0.5:8080");
        let v6 = Address::parse("[::1]:15006").unwrap();
        assert_eq!(v6.to_string(), "[::1]:15006");
        let name = Address::parse("CRM.tools.svc:15006").unwrap();
        assert_eq!(name.socket_addr(), None);
        assert_eq!(name.port(), 15006);
        assert_eq!(name.to_string(), "crm.tools.svc:15006");
        let fqdn = Address::parse("crm.tools.svc.cluster.local.:15006").unwrap();
        assert_eq!(fqdn.to_string(), "crm.tools.svc.cluster.local.:15006");
        assert_eq!(Address::parse("localhost:8080").unwrap().port(), 8080);
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_problem() {
        let cases = [
            ("crm.tools", "has no port"),
            ("crm.tools:http", "does not end in a port number"),
            ("crm.tools:70000", "does not end in a port number"),
            ("crm.tools:0", "has port 0"),
            ("10.0.0.5:0", "has port 0"),
            ("::1:8080", "in brackets"),
            ("[::1:8080", "in brackets"),
            (":8080", "the host is empty"),
            ("crm..tools:80", "has an empty label"),
            ("-crm.tools:80", "starts or ends with `-`"),
            ("crm/tools:80", "only letters, digits"),
            ("http://crm:80", "has a scheme"),
            ("crm tools:80", "only letters, digits"),
        ];
        for (text, expected) in cases {
            let err = Address::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let long_label = format!("{}.svc:80", "a".repeat(64));
        assert!(
            Address::parse(&long_label)
                .unwrap_err()
                .contains("longer than 63")
        );
        let long_name = format!("{}:80", ["abcdefghi"; 26].join("."));
        assert!(
            Address::parse(&long_name)
                .unwrap_err()
                .contains("at most 253")
        );
    }
}
