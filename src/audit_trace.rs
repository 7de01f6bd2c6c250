//! `hopgate audit trace TXN FILE... [--json]`: one transaction followed across the audit logs
//! of every sidecar it crossed, as a tree of hops.
//!
//! The core is pure: [`trace`] takes named sources of lines (files, or the demo's in-memory
//! logs) and gives the [`Trace`]; [`render`] and [`render_json`] draw it. [`run`] is the
//! command: it reads the files, prints, and maps the outcome to an exit code.
//!
//! - [`record`]: which lines are audit records, and their fields;
//! - [`tree`]: records → hops (joined by `token_hash`) → tree (linked by `token_prv`);
//! - [`text`] and [`json`]: the two renderings.

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::AuditTrace;
use crate::output::Out;

mod json;
mod record;
mod text;
mod tree;

#[cfg(test)]
mod tests;

use tree::Trace;

/// No record of the transaction in any source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotFound {
    /// The transaction looked for.
    pub(crate) txn: String,
    /// How many audit records the sources held, of any transaction.
    pub(crate) records: usize,
    /// How many sources were read.
    pub(crate) sources: usize,
}

// === impl NotFound ===

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no audit record of transaction `{}`: {} audit {} read from {} {}",
            self.txn,
            self.records,
            if self.records == 1 {
                "record"
            } else {
                "records"
            },
            self.sources,
            if self.sources == 1 { "file" } else { "files" },
        )
    }
}

/// The tree of transaction `txn` from `sources`, each a name (shown as `name:line`) and its
/// lines; [`NotFound`] when no audit record has that `txn`.
pub(crate) fn trace(txn: &str, sources: &[(String, Vec<String>)]) -> Result<Trace, NotFound> {
    let mut counted = 0;
    let mut records = Vec::new();
    for (i, (name, lines)) in sources.iter().enumerate() {
        records.extend(record::records_of(txn, i, name, lines, &mut counted));
    }
    if records.is_empty() {
        return Err(NotFound {
            txn: txn.to_owned(),
            records: counted,
            sources: sources.len(),
        });
    }
    Ok(tree::build(txn, records, sources.len()))
}

/// A built tree as text, for a terminal.
pub(crate) fn render_trace(trace: &Trace) -> String {
    text::render(trace)
}

/// The tree of `txn` as text, for a terminal: see [`trace`].
pub(crate) fn render(txn: &str, sources: &[(String, Vec<String>)]) -> Result<String, NotFound> {
    trace(txn, sources).map(|t| text::render(&t))
}

/// The tree of `txn` as one JSON value: see [`trace`] and the shape in [`json`].
pub(crate) fn render_json(
    txn: &str,
    sources: &[(String, Vec<String>)],
) -> Result<serde_json::Value, NotFound> {
    trace(txn, sources).map(|t| json::render(&t))
}

/// `audit trace`: 0 when the transaction was found; 1 when no record has it, a file cannot be
/// read, or TXN is empty.
pub(crate) fn run(args: &AuditTrace) -> ExitCode {
    let mut out = Out::default();
    let code = run_with(args, &mut out);
    out.finish(code)
}

fn run_with(args: &AuditTrace, out: &mut Out) -> ExitCode {
    let txn = args.txn.trim();
    if txn.is_empty() {
        errln!(
            out,
            "error: TXN is empty: give the `txn` of an audit record or hop token"
        );
        return ExitCode::FAILURE;
    }
    let mut sources = Vec::with_capacity(args.files.len());
    for path in &args.files {
        match read_lines(path) {
            Ok(lines) => sources.push((path.display().to_string(), lines)),
            Err(err) => {
                errln!(out, "error: cannot read `{}`: {err}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    let rendered = if args.json {
        render_json(txn, &sources).map(|v| v.to_string())
    } else {
        render(txn, &sources)
    };
    match rendered {
        Ok(text) => {
            outln!(out, "{}", text.trim_end_matches('\n'));
            ExitCode::SUCCESS
        }
        Err(not_found) => {
            errln!(out, "{not_found}");
            ExitCode::FAILURE
        }
    }
}

/// The lines of the file at `path`; bytes that are not UTF-8 are replaced, not refused (a log
/// may hold anything between its records).
fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_owned)
        .collect())
}
