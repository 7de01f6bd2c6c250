//! What can go wrong loading a config: the file cannot be read, or it holds problems, every one
//! of them reported with the dotted path of the key it concerns.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a config could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("cannot read config file `{}`: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading it failed.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid config. Holds every problem found, in the order of
    /// the sections, never just the first.
    #[error("{}", Summary(.0))]
    Invalid(Vec<FieldError>),
}

/// One problem in a config, with the dotted path of the key it concerns, such as
/// `outbound.routes[2].identity`.
///
/// Displays as `{path}: {message}`; a problem with the file as a whole (a YAML syntax error)
/// has an empty path and displays as its message alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    path: String,
    message: String,
}

/// Displays the problems of [`ConfigError::Invalid`], one a line.
struct Summary<'a>(&'a [FieldError]);

// === impl ConfigError ===

impl ConfigError {
    /// The problems found in the file, each with its path; empty for [`ConfigError::Read`].
    pub fn errors(&self) -> &[FieldError] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid(errors) => errors,
        }
    }
}

// `io::Error` is not `Clone`; a clone keeps its OS error code, or else its kind and message.
impl Clone for ConfigError {
    fn clone(&self) -> Self {
        match self {
            Self::Read { path, source } => Self::Read {
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            Self::Invalid(errors) => Self::Invalid(errors.clone()),
        }
    }
}

// === impl FieldError ===

impl FieldError {
    /// A problem at `path` (dotted, with `[i]` for list items), described by `message`
    /// (lowercase, no final period, user input in backticks).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The dotted path of the key, such as `inbound.listen`; empty for the file as a whole.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, such as ``` `0.0.0.0:99999` is not a socket address```.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

// === impl Summary ===

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "invalid config: {one}"),
            many => {
                write!(f, "invalid config, {} problems:", many.len())?;
                many.iter().try_for_each(|e| write!(f, "\n  {e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_error_displays_its_path_and_message() {
        let e = FieldError::new("inbound.listen", "`x` is not a socket address");
        assert_eq!(e.to_string(), "inbound.listen: `x` is not a socket address");
        assert_eq!(e.path(), "inbound.listen");
        assert_eq!(e.message(), "`x` is not a socket address");
    }

    #[test]
    fn a_problem_with_the_whole_file_displays_without_a_path() {
        let e = FieldError::new("", "yaml syntax error at line 1 column 2");
        assert_eq!(e.to_string(), "yaml syntax error at line 1 column 2");
    }

    #[test]
    fn invalid_lists_every_problem_on_its_own_line() {
        let one = ConfigError::Invalid(vec![FieldError::new("a", "bad")]);
        assert_eq!(one.to_string(), "invalid config: a: bad");
        let two = ConfigError::Invalid(vec![
            FieldError::new("a", "bad"),
            FieldError::new("b.c", "worse"),
        ]);
        assert_eq!(
            two.to_string(),
            "invalid config, 2 problems:\n  a: bad\n  b.c: worse"
        );
        assert_eq!(two.errors().len(), 2);
    }

    #[test]
    fn read_errors_have_no_field_errors_and_clone_keeps_the_os_error() {
        let e = ConfigError::Read {
            path: PathBuf::from("/nope.yaml"),
            source: io::Error::from_raw_os_error(2),
        };
        assert!(e.errors().is_empty());
        let copy = e.clone();
        assert_eq!(copy.to_string(), e.to_string());
        assert!(
            copy.to_string()
                .starts_with("cannot read config file `/nope.yaml`: ")
        );
    }
}
