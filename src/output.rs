//! Where the commands print. `println!` panics when stdout is a pipe whose reader has gone
//! (`hopgate policy explain ... | head -1`); [`Out`] stops writing to that stream instead, and
//! the command runs to its end, so its exit code is the usual one.

use std::fmt;
use std::io::{self, Write as _};
use std::process::ExitCode;

/// A line on stdout, through an [`Out`]: `outln!(out, "{x}")`.
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}

/// A line on stderr, through an [`Out`]: `errln!(out, "error: {x}")`.
macro_rules! errln {
    ($out:expr, $($arg:tt)*) => {
        $out.err_line(format_args!($($arg)*))
    };
}

/// stdout and stderr of one command.
#[derive(Debug, Default)]
pub(crate) struct Out {
    /// Why stdout could not be written; nothing more is written to it.
    stdout_failed: Option<io::Error>,
    /// stderr could not be written; nothing more is written to it.
    stderr_failed: bool,
}

// === impl Out ===

impl Out {
    /// One line on stdout (use `outln!`).
    pub(crate) fn line(&mut self, line: fmt::Arguments<'_>) {
        if self.stdout_failed.is_none()
            && let Err(err) = writeln!(io::stdout().lock(), "{line}")
        {
            self.stdout_failed = Some(err);
        }
    }

    /// One line on stderr (use `errln!`).
    pub(crate) fn err_line(&mut self, line: fmt::Arguments<'_>) {
        if !self.stderr_failed && writeln!(io::stderr().lock(), "{line}").is_err() {
            self.stderr_failed = true;
        }
    }

    /// Flushes stdout and returns `code`. A reader that went away is no failure of the
    /// command; stdout failing otherwise (a full disk) is, and exits 1.
    pub(crate) fn finish(mut self, code: ExitCode) -> ExitCode {
        if self.stdout_failed.is_none()
            && let Err(err) = io::stdout().lock().flush()
        {
            self.stdout_failed = Some(err);
        }
        match self.stdout_failed.take() {
            Some(err) if err.kind() != io::ErrorKind::BrokenPipe => {
                self.err_line(format_args!("error: cannot write the output: {err}"));
                ExitCode::FAILURE
            }
            _ => code,
        }
    }
}
