//! SPIFFE IDs and trust domains, parsed strictly.
//!
//! hopgate accepts only the canonical form of an ID (docs/security.md, "SPIFFE IDs"). It does not
//! normalise: `Spiffe://`, `spiffe://Example.org`, percent-encoding, dot segments, empty segments
//! and a trailing slash are all errors. The string a policy names is therefore the exact string the
//! certificate carried.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The longest SPIFFE ID hopgate accepts, in bytes (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// The longest trust domain name hopgate accepts, in bytes (SPIFFE-ID §2.3).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// A SPIFFE trust domain name, such as `example.org`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

/// A canonical SPIFFE ID, such as `spiffe://example.org/ns/prod/sa/api`.
///
/// The path may be empty (`spiffe://example.org`); an X.509-SVID leaf needs a non-root path,
/// which [`SpiffeId::is_root`] tells.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    // INVARIANT: `id` is canonical and `td_end` is the byte index where the trust domain ends.
    id: String,
    td_end: usize,
}

/// Why a string is not a canonical SPIFFE ID or trust domain.
///
/// Characters are shown escaped (`\u{0}`, `\n`), so a message never carries raw control
/// characters from its input into a log line.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SpiffeIdError {
    /// The input was empty.
    #[error("is empty")]
    Empty,
    /// The input is longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("is {0} bytes long; at most {MAX_SPIFFE_ID_LEN} are allowed")]
    TooLong(usize),
    /// The scheme is not exactly `spiffe://`.
    #[error("scheme must be `spiffe://` (lowercase)")]
    Scheme,
    /// The trust domain is missing.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("trust domain is {0} bytes long; at most {MAX_TRUST_DOMAIN_LEN} are allowed")]
    TrustDomainTooLong(usize),
    /// The trust domain holds a character outside `[a-z0-9.-_]`.
    #[error(
        "trust domain character `{}` is not allowed; only lowercase letters, digits, `.`, `-` and `_` are",
        .0.escape_debug()
    )]
    TrustDomainChar(char),
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("path has an empty segment or a trailing `/`")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("path has a `.` or `..` segment")]
    DotSegment,
    /// A path segment holds a character outside `[a-zA-Z0-9.-_]`.
    #[error(
        "path character `{}` is not allowed; only letters, digits, `.`, `-` and `_` are",
        .0.escape_debug()
    )]
    PathChar(char),
}

// === impl TrustDomain ===

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`, not `spiffe://example.org`).
    ///
    /// # Errors
    /// [`SpiffeIdError::MissingTrustDomain`] when empty, [`SpiffeIdError::TrustDomainTooLong`]
    /// past 255 bytes and [`SpiffeIdError::TrustDomainChar`] for any character outside
    /// `[a-z0-9.-_]` (so upper case, `%`, `:`, `@`, `[` and non-ASCII are all rejected).
    pub fn parse(name: &str) -> Result<Self, SpiffeIdError> {
        check_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    /// Parses a canonical SPIFFE ID.
    ///
    /// # Errors
    /// Every [`SpiffeIdError`] variant: the input must be non-empty, at most 2048 bytes, start
    /// with the lowercase scheme `spiffe://`, carry a valid trust domain and a path made of
    /// non-empty, non-dot segments of `[a-zA-Z0-9.-_]`. Query, fragment, port and userinfo fail
    /// on their delimiter character.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(input.len()));
        }
        let rest = input.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        check_trust_domain(td)?;
        check_path(path)?;
        Ok(Self {
            id: input.to_owned(),
            td_end: SCHEME.len() + td.len(),
        })
    }

    /// Builds `spiffe://<trust_domain>/<segment>/<segment>...` from path segments, each checked
    /// on its own (SVID-S26 in docs/security.md).
    ///
    /// # Errors
    /// [`SpiffeIdError::EmptySegment`] for `""`, [`SpiffeIdError::DotSegment`] for `.` and `..`,
    /// [`SpiffeIdError::PathChar`] for a segment holding `/` or any character outside
    /// `[a-zA-Z0-9.-_]`, and [`SpiffeIdError::TooLong`] when the result passes 2048 bytes.
    pub fn from_segments(
        trust_domain: &TrustDomain,
        segments: &[&str],
    ) -> Result<Self, SpiffeIdError> {
        let mut id = trust_domain.id_string();
        for segment in segments {
            check_segment(segment)?;
            id.push('/');
            id.push_str(segment);
        }
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(id.len()));
        }
        Ok(Self {
            td_end: SCHEME.len() + trust_domain.as_str().len(),
            id,
        })
    }

    /// The trust domain name (`example.org`).
    pub fn trust_domain_name(&self) -> &str {
        self.id.get(SCHEME.len()..self.td_end).unwrap_or_default()
    }

    /// The trust domain, as an owned value.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The path, `""` for the root ID, else starting with `/` (`/ns/prod/sa/api`).
    pub fn path(&self) -> &str {
        self.id.get(self.td_end..).unwrap_or_default()
    }

    /// Whether the ID has no path (`spiffe://example.org`); such an ID names a trust domain and
    /// can never be a workload's SVID.
    pub fn is_root(&self) -> bool {
        self.td_end == self.id.len()
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn check_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(td.len()));
    }
    match td
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeIdError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // The path starts with `/`, so the first split item is the empty string before it.
    path.split('/').skip(1).try_for_each(check_segment)
}

fn check_segment(segment: &str) -> Result<(), SpiffeIdError> {
    if segment.is_empty() {
        return Err(SpiffeIdError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(SpiffeIdError::DotSegment);
    }
    match segment
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_'))
    {
        Some(c) => Err(SpiffeIdError::PathChar(c)),
        None => Ok(()),
    }
}

// The SPIFFE ID table of docs/security.md, one test per row, is long enough to live in its own
// file.
#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn valid_id() -> impl Strategy<Value = String> {
        let segment = "[a-zA-Z0-9._-]{1,12}".prop_filter("dot segment", |s| s != "." && s != "..");
        (
            "[a-z0-9._-]{1,40}",
            proptest::collection::vec(segment, 0..6),
        )
            .prop_map(|(td, segments)| {
                let mut id = format!("spiffe://{td}");
                for s in segments {
                    id.push('/');
                    id.push_str(&s);
                }
                id
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(input in any::<String>()) {
            let _ = SpiffeId::parse(&input);
            let _ = TrustDomain::parse(&input);
        }

        #[test]
        fn parse_never_panics_on_near_ids(input in "spiffe://[a-zA-Z0-9./:%@?#_ -]{0,40}") {
            if let Ok(id) = SpiffeId::parse(&input) {
                prop_assert_eq!(id.as_str(), input.as_str());
            }
        }

        #[test]
        fn parse_then_display_round_trips(input in valid_id()) {
            let id = SpiffeId::parse(&input).unwrap();
            prop_assert_eq!(id.to_string(), input.as_str());
            prop_assert_eq!(
                format!("spiffe://{}{}", id.trust_domain_name(), id.path()),
                input
            );
            let rebuilt = SpiffeId::parse(&id.to_string()).unwrap();
            prop_assert_eq!(rebuilt, id);
        }
    }
}
