//! The shared state of one validation run: where relative paths resolve, and every problem
//! found so far. Each section's builder takes `&mut Check` and pushes into it, so one run
//! reports all problems at once.

use std::fmt::{self, Display};
use std::fs;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::FieldError;
use crate::duration;

/// Where a config's defaults from the environment come from.
pub(crate) enum Env {
    /// The process environment.
    Process,
    /// These variables only (tests: the process environment is shared by every test thread).
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests' environment"))]
    Fixed(Vec<(String, String)>),
    /// Whatever this lookup answers ([`crate::load_with_env`]).
    Lookup(Lookup),
}

/// An environment variable's value by name.
pub(crate) type Lookup = Box<dyn Fn(&str) -> Option<String>>;

/// Problems found so far, and the folder relative paths resolve against.
#[derive(Debug)]
pub(crate) struct Check {
    base_dir: PathBuf,
    /// Where environment variables are read: the process, or a fixed set (tests).
    env: Env,
    errors: Vec<FieldError>,
    // Paths whose value was dropped after a shape problem (wrong type, unknown key). A later
    // problem at or below one of them ("is required") is a consequence, not news.
    removed: Vec<String>,
}

// === impl Env ===

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets (`OTEL_EXPORTER_OTLP_HEADERS`): names at most.
        match self {
            Self::Process => f.write_str("Process"),
            Self::Fixed(vars) => f
                .debug_list()
                .entries(vars.iter().map(|(name, _)| name))
                .finish(),
            Self::Lookup(_) => f.write_str("Lookup"),
        }
    }
}

// === impl Check ===

impl Check {
    pub(crate) fn new(base_dir: PathBuf) -> Self {
        Self::with_env(base_dir, Env::Process)
    }

    pub(crate) fn with_env(base_dir: PathBuf, env: Env) -> Self {
        Self {
            base_dir,
            env,
            errors: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// The environment variable `name`, if set and not empty.
    pub(crate) fn env_var(&self, name: &str) -> Option<String> {
        let value = match &self.env {
            Env::Process => std::env::var(name).ok(),
            Env::Fixed(vars) => vars
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone()),
            Env::Lookup(lookup) => lookup(name),
        };
        value.filter(|v| !v.is_empty())
    }

    /// Every problem found, in the order found.
    pub(crate) fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// Reports a problem at `path`, unless its value was already dropped for a shape problem.
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !self.removed.iter().any(|r| is_within(&path, r)) {
            self.errors.push(FieldError::new(path, message));
        }
    }

    /// Reports a shape problem at `path`, whose value is then treated as absent.
    pub(crate) fn shape_error(&mut self, path: String, message: impl Into<String>) {
        self.errors.push(FieldError::new(path.clone(), message));
        self.removed.push(path);
    }

    /// Whether a value at or below `path` was dropped for a shape problem; a check of a whole
    /// section then stays quiet, as its problem was reported.
    pub(crate) fn dropped_within(&self, path: &str) -> bool {
        self.removed.iter().any(|r| is_within(r, path))
    }

    /// `value`, or a "is required" problem.
    pub(crate) fn required<T>(&mut self, value: Option<T>, path: &str) -> Option<T> {
        if value.is_none() {
            self.error(path, "is required");
        }
        value
    }

    /// A required `ip:port`.
    pub(crate) fn socket_addr(&mut self, value: Option<String>, path: &str) -> Option<SocketAddr> {
        let value = self.required(value, path)?;
        self.parse_socket_addr(&value, path)
    }

    /// An `ip:port`.
    pub(crate) fn parse_socket_addr(&mut self, value: &str, path: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!(
                        "`{}` is not a socket address; expected `ip:port`",
                        value.escape_debug()
                    ),
                );
                None
            }
        }
    }

    /// A required file, resolved against the config's folder, that exists and can be opened.
    pub(crate) fn file(&mut self, value: Option<PathBuf>, path: &str) -> Option<PathBuf> {
        let value = self.required(value, path)?;
        self.readable_file(&value, path)
    }

    /// `value` resolved against the config's folder; it must be a file that can be opened.
    pub(crate) fn readable_file(&mut self, value: &Path, path: &str) -> Option<PathBuf> {
        let resolved = self.base_dir.join(value);
        // Metadata first: opening a FIFO or a device could block or have side effects.
        let problem = match fs::metadata(&resolved) {
            Ok(meta) if !meta.is_file() => format!("`{}` is not a file", resolved.display()),
            Ok(_) => match fs::File::open(&resolved) {
                Ok(_) => return Some(resolved),
                Err(e) => format!("cannot read `{}`: {e}", resolved.display()),
            },
            Err(e) => format!("cannot read `{}`: {e}", resolved.display()),
        };
        self.error(path, problem);
        None
    }

    /// A required folder, resolved against the config's folder, whose entries can be listed.
    pub(crate) fn dir(&mut self, value: Option<PathBuf>, path: &str) -> Option<PathBuf> {
        let value = self.required(value, path)?;
        let resolved = self.base_dir.join(value);
        match fs::read_dir(&resolved) {
            Ok(_) => Some(resolved),
            Err(e) => {
                self.error(path, format!("cannot read `{}`: {e}", resolved.display()));
                None
            }
        }
    }

    /// A duration (`500ms`, `60s`, `5m`, `1h`) within `range`, or `default` when absent.
    pub(crate) fn duration(
        &mut self,
        value: Option<String>,
        path: &str,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let parsed = match duration::parse(&value) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.error(path, e.to_string());
                return None;
            }
        };
        let shown = value.escape_debug();
        if parsed < *range.start() {
            let least = duration::format(*range.start());
            self.error(
                path,
                format!("`{shown}` is too short; the least allowed is `{least}`"),
            );
            None
        } else if parsed > *range.end() {
            let most = duration::format(*range.end());
            self.error(
                path,
                format!("`{shown}` is too long; the most allowed is `{most}`"),
            );
            None
        } else {
            Some(parsed)
        }
    }

    /// A whole number within `range`, or `default` when absent.
    pub(crate) fn number<T>(
        &mut self,
        value: Option<u64>,
        path: &str,
        default: T,
        range: RangeInclusive<T>,
    ) -> Option<T>
    where
        T: TryFrom<u64> + PartialOrd + Display + Copy,
    {
        let Some(value) = value else {
            return Some(default);
        };
        match T::try_from(value) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                let (least, most) = (range.start(), range.end());
                self.error(
                    path,
                    format!("`{value}` is out of range; allowed are {least} to {most}"),
                );
                None
            }
        }
    }

    /// A string that is present and free of whitespace and control characters, or `default`.
    pub(crate) fn word(
        &mut self,
        value: Option<String>,
        path: &str,
        default: &str,
    ) -> Option<String> {
        let value = value.unwrap_or_else(|| default.to_owned());
        self.parse_word(value, path)
    }

    /// A non-empty string without whitespace or control characters.
    pub(crate) fn parse_word(&mut self, value: String, path: &str) -> Option<String> {
        if value.is_empty() {
            self.error(path, "is empty");
            return None;
        }
        match value.chars().find(|c| c.is_whitespace() || c.is_control()) {
            None => Some(value),
            Some(c) => {
                let (shown, c) = (value.escape_debug(), c.escape_debug());
                self.error(
                    path,
                    format!(
                        "`{shown}` holds `{c}`; whitespace and control characters are not allowed"
                    ),
                );
                None
            }
        }
    }
}

/// Whether `value` is a lowercase HTTP field name (RFC 9110 `token` characters, no upper case).
pub(crate) fn header_name(value: &str) -> Result<(), String> {
    let shown = value.escape_debug();
    if value.is_empty() {
        return Err("is empty".to_owned());
    }
    if value.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("`{shown}` must be lowercase"));
    }
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    match value.chars().find(|c| !tchar(*c)) {
        Some(c) => Err(format!(
            "`{shown}` holds `{}`, which is not allowed in a header name",
            c.escape_debug()
        )),
        None => Ok(()),
    }
}

/// Whether `path` is `parent` or below it (`a.b`, `a.b.c` and `a.b[0]` are within `a.b`;
/// `a.bc` is not).
fn is_within(path: &str, parent: &str) -> bool {
    match path.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

/// Joins a key onto a path: `at("inbound", "listen")` is `inbound.listen`.
pub(crate) fn at(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_below_a_dropped_value_are_not_reported_again() {
        let mut check = Check::new(PathBuf::from("/"));
        check.shape_error("inbound.timeouts".into(), "expected a map, found a list");
        check.error("inbound.timeouts", "is required");
        check.error("inbound.timeouts.idle", "is required");
        check.error("inbound.timeoutsx", "is kept");
        check.error("inbound", "is kept too");
        let paths: Vec<String> = check
            .into_errors()
            .iter()
            .map(|e| e.path().to_owned())
            .collect();
        assert_eq!(paths, ["inbound.timeouts", "inbound.timeoutsx", "inbound"]);
    }

    #[test]
    fn numbers_outside_their_range_name_the_range() {
        let mut check = Check::new(PathBuf::from("/"));
        assert_eq!(
            check.number(Some(65), "token.max_depth", 8usize, 1..=64),
            None
        );
        assert_eq!(
            check.number(None, "token.max_depth", 8usize, 1..=64),
            Some(8)
        );
        assert_eq!(check.number(Some(u64::MAX), "x", 1u32, 1..=u32::MAX), None);
        let errors = check.into_errors();
        assert_eq!(
            errors[0].to_string(),
            "token.max_depth: `65` is out of range; allowed are 1 to 64"
        );
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn durations_outside_their_range_name_the_limit() {
        let mut check = Check::new(PathBuf::from("/"));
        let range = Duration::from_secs(1)..=Duration::from_secs(86_400);
        let default = Duration::from_secs(60);
        assert_eq!(
            check.duration(None, "t", default, range.clone()),
            Some(default)
        );
        assert_eq!(
            check.duration(Some("0s".into()), "t", default, range.clone()),
            None
        );
        assert_eq!(
            check.duration(Some("25h".into()), "t", default, range),
            None
        );
        let errors: Vec<String> = check
            .into_errors()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "t: `0s` is too short; the least allowed is `1s`",
                "t: `25h` is too long; the most allowed is `24h`",
            ]
        );
    }

    #[test]
    fn header_names_are_lowercase_tokens() {
        assert_eq!(header_name("hop-token"), Ok(()));
        assert_eq!(header_name("intent-"), Ok(()));
        assert_eq!(
            header_name("Hop-Token"),
            Err("`Hop-Token` must be lowercase".into())
        );
        assert_eq!(
            header_name("hop token"),
            Err("`hop token` holds ` `, which is not allowed in a header name".into())
        );
        assert_eq!(
            header_name("hop:token"),
            Err("`hop:token` holds `:`, which is not allowed in a header name".into())
        );
        assert_eq!(header_name(""), Err("is empty".into()));
    }

    #[test]
    fn words_reject_whitespace_and_control_characters() {
        let mut check = Check::new(PathBuf::from("/"));
        assert_eq!(check.parse_word("ok".into(), "a"), Some("ok".into()));
        assert_eq!(check.parse_word("not ok".into(), "b"), None);
        assert_eq!(check.parse_word("bell\u{7}".into(), "c"), None);
        assert_eq!(check.parse_word(String::new(), "d"), None);
        let errors: Vec<String> = check
            .into_errors()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors[0],
            "b: `not ok` holds ` `; whitespace and control characters are not allowed"
        );
        assert_eq!(
            errors[1],
            "c: `bell\\u{7}` holds `\\u{7}`; whitespace and control characters are not allowed"
        );
        assert_eq!(errors[2], "d: is empty");
    }
}
