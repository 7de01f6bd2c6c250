//! `inbound.streams`: long-lived responses (SSE, gRPC streams, chunked bodies), which outlive
//! the decision that let them start.
//!
//! A stream's authority ends with its hop token's `exp` (plus `token.leeway`). With
//! `reauthorize` (the default), the receiving sidecar cuts an open stream then, and decides it
//! again when the policy, the trust bundles or the revocations change; `max_age` caps how long
//! any stream stays open. A route whose streams outlive `token.ttl` asks for longer-lived
//! tokens with `outbound.routes[].token_ttl`.

use std::time::Duration;

use crate::check::Check;
use crate::raw;

/// Long-lived responses on the inbound side (`inbound.streams`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamsConfig {
    reauthorize: bool,
    max_age: Option<Duration>,
}

/// The longest `max_age`: 30 days.
const MAX_AGE_LIMIT: Duration = Duration::from_secs(30 * 24 * 3600);

// === impl StreamsConfig ===

impl StreamsConfig {
    /// Whether open streams are decided again on a policy, trust bundle or revocation change,
    /// and cut when their hop token expires. Default `true`.
    pub fn reauthorize(&self) -> bool {
        self.reauthorize
    }

    /// The longest a stream may stay open; `None` (`0s`, the default) for no limit. At most
    /// 30 days.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    pub(crate) fn from_raw(raw: raw::InboundStreams, check: &mut Check) -> Option<Self> {
        let max_age = check.duration(
            raw.max_age,
            "inbound.streams.max_age",
            Duration::ZERO,
            Duration::ZERO..=MAX_AGE_LIMIT,
        )?;
        Some(Self {
            reauthorize: raw.reauthorize.unwrap_or(true),
            max_age: (!max_age.is_zero()).then_some(max_age),
        })
    }
}

impl Default for StreamsConfig {
    /// Re-authorized, no age limit: what an absent `inbound.streams` means.
    fn default() -> Self {
        Self {
            reauthorize: true,
            max_age: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::StreamsConfig;
    use crate::test_support::{Fixture, IDENTITY};

    fn inbound(fields: &str) -> String {
        format!("{IDENTITY}inbound:\n  listen: 0.0.0.0:15006\n  app: 127.0.0.1:8080\n{fields}")
    }

    #[test]
    fn streams_are_reauthorized_without_an_age_limit_by_default() {
        let fx = Fixture::new();
        for fields in ["", "  streams: {}\n"] {
            let config = fx.load(&inbound(fields));
            let streams = config.inbound().unwrap().streams();
            assert!(streams.reauthorize(), "{fields}");
            assert_eq!(streams.max_age(), None, "{fields}");
            assert_eq!(*streams, StreamsConfig::default());
        }
    }

    #[test]
    fn streams_take_every_setting() {
        let fx = Fixture::new();
        let config = fx.load(&inbound(
            "  streams:\n    reauthorize: false\n    max_age: 15m\n",
        ));
        let streams = config.inbound().unwrap().streams();
        assert!(!streams.reauthorize());
        assert_eq!(streams.max_age(), Some(Duration::from_secs(900)));
        let config = fx.load(&inbound("  streams: { max_age: 0s }\n"));
        assert_eq!(config.inbound().unwrap().streams().max_age(), None);
        let config = fx.load(&inbound("  streams: { max_age: 720h }\n"));
        assert_eq!(
            config.inbound().unwrap().streams().max_age(),
            Some(Duration::from_secs(30 * 24 * 3600))
        );
    }

    #[test]
    fn a_max_age_past_30_days_or_without_a_unit_is_refused_naming_its_path() {
        let fx = Fixture::new();
        assert_eq!(
            fx.errors(&inbound("  streams: { max_age: 721h }\n")),
            ["inbound.streams.max_age: `721h` is too long; the most allowed is `720h`"]
        );
        assert_eq!(
            fx.errors(&inbound("  streams: { max_age: 60 }\n")),
            [
                "inbound.streams.max_age: `60` has no unit; expected a whole number followed by `ms`, `s`, `m` or `h`, such as `500ms` or `60s`"
            ]
        );
        assert_eq!(
            fx.errors(&inbound("  streams: { reauthorize: sometimes }\n")),
            [
                "inbound.streams.reauthorize: expected `true` or `false`, found the string `sometimes`"
            ]
        );
    }

    #[test]
    fn unknown_keys_under_streams_are_refused() {
        assert_eq!(
            Fixture::new().errors(&inbound("  streams: { max_ages: 1h }\n")),
            ["inbound.streams.max_ages: unknown key; expected one of `reauthorize` or `max_age`"]
        );
    }
}
