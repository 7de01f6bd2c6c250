//! `admin`: the listener for `/live`, `/ready`, `/metrics`, `/policy` and `/identity`.

use std::net::{Ipv4Addr, SocketAddr};

use crate::check::Check;
use crate::raw;

/// The admin listener (`admin`).
#[derive(Clone, Debug)]
pub struct AdminConfig {
    listen: SocketAddr,
}

/// Loopback, so that the admin endpoints are not reachable from the network by default.
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);

// === impl AdminConfig ===

impl AdminConfig {
    /// Where the admin endpoints are served. Default `127.0.0.1:15000`.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    pub(crate) fn from_raw(raw: raw::Admin, check: &mut Check) -> Option<Self> {
        let listen = match raw.listen {
            None => DEFAULT_LISTEN,
            Some(listen) => check.parse_socket_addr(&listen, "admin.listen")?,
        };
        Some(Self { listen })
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{Fixture, MINIMAL};

    #[test]
    fn admin_listens_on_loopback_by_default() {
        let fx = Fixture::new();
        assert_eq!(
            fx.load(MINIMAL).admin().listen(),
            "127.0.0.1:15000".parse().unwrap()
        );
        let custom = fx.load(&format!("{MINIMAL}admin: {{ listen: '[::1]:9901' }}\n"));
        assert_eq!(custom.admin().listen(), "[::1]:9901".parse().unwrap());
        assert_eq!(
            fx.errors(&format!("{MINIMAL}admin: {{ listen: localhost:9901 }}\n")),
            ["admin.listen: `localhost:9901` is not a socket address; expected `ip:port`"]
        );
    }
}
