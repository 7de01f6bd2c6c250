//! Routing on the outbound side: a connection's original destination (transparent mode,
//! `SO_ORIGINAL_DST`) or each request's authority picks the route.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::{Destination, OutboundSide};

/// How long a redirected connection waits for an `original_dst` name's first DNS answer.
const FIRST_ANSWER: Duration = Duration::from_secs(1);

/// How a connection's requests find their route.
#[derive(Clone, Copy, Debug)]
pub(super) enum Target {
    /// By each request's authority (explicit mode, or a connection made to the listener).
    ByAuthority,
    /// The route (or none) that the connection's original destination matched.
    Fixed(Option<usize>),
}

// === impl OutboundSide ===

impl OutboundSide {
    /// The route of a redirected connection, from `SO_ORIGINAL_DST`: the first whose
    /// `original_dst` is that address or a name resolving to it. A name still waiting for its
    /// first answer is waited for, up to [`FIRST_ANSWER`].
    pub(super) async fn original_target(&self, stream: &TcpStream, remote: SocketAddr) -> Target {
        let Some(original) = original_dst(stream) else {
            tracing::debug!(client.addr = %remote, "no original destination: routing by authority");
            return Target::ByAuthority;
        };
        // Not redirected: the app connected to the listener itself.
        if stream.local_addr().is_ok_and(|local| local == original) {
            return Target::ByAuthority;
        }
        let mut route = None;
        for (i, destination) in self.routes.iter().enumerate() {
            let Some(resolved) = &destination.original else {
                continue;
            };
            if resolved.resolves_to(original, FIRST_ANSWER).await {
                route = Some(i);
                break;
            }
        }
        if route.is_none() {
            tracing::info!(client.addr = %remote, original_dst = %original, "no route for the original destination");
        }
        Target::Fixed(route)
    }

    /// The route for an authority: `host:port` exactly, else the host alone (ASCII case
    /// insensitive).
    pub(super) fn by_authority(&self, authority: &str) -> Option<&Arc<Destination>> {
        let exact = self
            .routes
            .iter()
            .find(|d| d.route.host().eq_ignore_ascii_case(authority));
        exact.or_else(|| {
            let host = host_of(authority);
            (host.len() < authority.len()).then_some(())?;
            self.routes
                .iter()
                .find(|d| d.route.host().eq_ignore_ascii_case(host))
        })
    }
}

/// `authority` without its `:port` (an IPv6 literal keeps its brackets).
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    }
}

/// The destination a redirected connection was addressed to (`SO_ORIGINAL_DST`), if any.
fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    socket
        .original_dst_v4()
        .or_else(|_| socket.original_dst_v6())
        .ok()
        .and_then(|addr| addr.as_socket())
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_strips_the_port_but_not_an_ipv6_literal() {
        assert_eq!(host_of("inference.ml:8080"), "inference.ml");
        assert_eq!(host_of("inference.ml"), "inference.ml");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
    }
}
