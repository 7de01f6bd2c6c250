//! `PolicyError`: why a policy folder did not load, why a watcher did not start, or why hop-token
//! claims cannot become [`TokenFacts`](crate::TokenFacts).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Everything that can go wrong in this crate. Messages are lowercase, name the file first and
/// carry Cedar's own diagnostic (with the policy id and `line:column` where Cedar gives them).
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A file could not be read, or the folder could not be listed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The folder has no `schema.cedarschema`; hopgate validates every policy against one.
    #[error("{}: missing; a policy folder needs a Cedar schema", path.display())]
    MissingSchema {
        /// Where the schema was expected.
        path: PathBuf,
    },
    /// One or more files are not valid: Cedar syntax, schema, a duplicate policy id, strict
    /// validation, entities or a hopgate rule. Every problem of every file, each naming its
    /// file: one load reports them all.
    #[error("{}", DisplayProblems(problems))]
    Invalid {
        /// Each problem, in file order: the schema, the policy files by name, entities.json.
        problems: Vec<Problem>,
    },
    /// Hop-token claims lack a field hopgate needs or hold the wrong JSON type.
    #[error("token claims: {0}")]
    Claims(String),
}

/// One problem in one file: `policies/agent.cedar:12:3: for policy `x`, ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    path: PathBuf,
    position: Option<(usize, usize)>,
    message: String,
}

struct DisplayProblems<'a>(&'a [Problem]);

// === impl PolicyError ===

impl PolicyError {
    /// The individual problems: several for [`PolicyError::Invalid`], none for the other
    /// variants (their message is the whole story). `policy check` prints one per line.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems } => problems,
            Self::Io { .. } | Self::MissingSchema { .. } | Self::Claims(_) => &[],
        }
    }

    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn invalid(problems: Vec<Problem>) -> Self {
        Self::Invalid { problems }
    }
}

// === impl Problem ===

impl Problem {
    /// A problem somewhere in `path` (no position).
    pub(crate) fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            position: None,
            message: message.into(),
        }
    }

    /// A problem at byte `offset` of `text`, the contents of `path`.
    pub(crate) fn at(path: &Path, text: &str, offset: Option<usize>, message: String) -> Self {
        Self {
            path: path.to_owned(),
            position: offset.map(|offset| line_column(text, offset)),
            message,
        }
    }

    /// `path:line:column` of byte `offset` of `text` (the contents of `path`), or `path` alone
    /// without an offset: how a problem names another place.
    pub(crate) fn place(path: &Path, text: &str, offset: Option<usize>) -> String {
        match offset.map(|offset| line_column(text, offset)) {
            Some((line, column)) => format!("{}:{line}:{column}", path.display()),
            None => path.display().to_string(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line and column, when Cedar pointed at a place.
    pub fn position(&self) -> Option<(usize, usize)> {
        self.position
    }

    /// What is wrong, in Cedar's words where it is Cedar's finding.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl fmt::Display for DisplayProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_positions_are_one_based_lines_and_columns() {
        let text = "permit(\n  principal,\n  x";
        let problem = Problem::at(Path::new("a.cedar"), text, Some(23), "bad".to_owned());
        assert_eq!(problem.position(), Some((3, 3)));
        assert_eq!(problem.to_string(), "a.cedar:3:3: bad");
    }

    #[test]
    fn invalid_lists_every_problem_with_its_file() {
        let err = PolicyError::invalid(vec![
            Problem::new(Path::new("policies/a.cedar"), "one"),
            Problem::new(Path::new("policies/b.cedar"), "two"),
        ]);
        assert_eq!(
            err.to_string(),
            "policies/a.cedar: one; policies/b.cedar: two"
        );
        assert_eq!(err.problems().len(), 2);
    }
}
