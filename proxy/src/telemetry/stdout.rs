//! The one writer of stdout: audit records and log lines, through a bounded buffer, written by a
//! thread of its own.
//!
//! ```text
//!  request path ──audit record──┐                     ┌──────────────────┐
//!  tracing fmt ───log line──────┴─▶ bounded buffer ──▶│ hopgate-stdout   │──write(2)──▶ stdout
//!   (never blocks: appends or drops)  (Mutex<Vec<u8>>)│ thread (blocks)  │
//!                                                     └──────────────────┘
//! ```
//!
//! A stdout nobody reads (a paused log shipper, a blocking container log driver, `| sleep`)
//! fills the pipe, and a `write` to a full pipe blocks. Only the writer thread ever makes that
//! call, so a stalled reader stalls that thread alone: the runtime's workers, and with them the
//! data plane and the admin listener, only ever append to memory.
//!
//! The buffer counts what waits and what the writer is writing. When it holds
//! [`REFUSE_AT`] of its size, [`StdoutWriter::refusing`] turns on and, under
//! `telemetry.audit.when_full: refuse`, new requests are answered 503 `audit_unavailable` and
//! `/ready` goes 503, so nothing is served that is not recorded. The last quarter is left for the
//! records of requests admitted before that; a record that finds the buffer wholly full is
//! dropped and counted by its caller. Log lines are dropped as soon as refusing starts, so they
//! never take the room audit records need; their count is reported in a WARN line once stdout
//! drains. Everything resumes on its own when the reader does.
//!
//! A closed stdout (`EPIPE`) fails each write at once: the batch is discarded and nothing
//! blocks or fills.
//!
//! With `telemetry.audit.sign: true` each record is also hashed into the current seal batch as
//! it is appended, and the writer thread writes a seal line after the batch's records when one
//! is due (see [`super::seal`]): it wakes on its own for that, so a quiet log is sealed too.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use hopgate_config::{AuditConfig, WhenFull};

use super::seal::{Batch, Chain, Due, KeySource, line_digest};
use crate::tls::Identity;

/// The share of the buffer at which new requests are refused and log lines dropped, in
/// quarters: the last quarter is kept for the records of requests already admitted.
const REFUSE_AT: usize = 3;

/// The process's stdout writer.
#[derive(Debug)]
pub struct StdoutWriter {
    state: Mutex<State>,
    /// Wakes the writer thread when the buffer stops being empty.
    work: Condvar,
    /// Wakes [`StdoutWriter::flush`] when a batch has been written.
    written: Condvar,
    capacity: AtomicUsize,
    refuse: AtomicBool,
    /// Whether the buffer is past [`REFUSE_AT`] (whatever `when_full` says).
    full: AtomicBool,
    /// The seal chain; locked by the writer thread only, while it seals.
    chain: Mutex<Chain>,
    /// Whether records are sealed (`telemetry.audit.sign`): each is then hashed before the
    /// lock is taken.
    sealing: AtomicBool,
}

/// What one [`StdoutWriter::record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// The record is in the buffer, to be written.
    Buffered,
    /// The buffer was full: the record is lost and must be counted.
    Dropped,
}

#[derive(Debug, Default)]
struct State {
    pending: Vec<u8>,
    /// Bytes of the batch the writer thread is writing now.
    writing: usize,
    dropped_logs: u64,
    thread: bool,
    /// The records not sealed yet; `Some` with `telemetry.audit.sign: true` only.
    batch: Option<Batch>,
    /// A flush waits for the batch to be sealed now.
    seal_requested: bool,
    /// The writer thread is writing a seal line.
    sealing: bool,
}

/// The process-wide writer, created (without its thread) on first use.
pub fn stdout() -> &'static StdoutWriter {
    static WRITER: OnceLock<StdoutWriter> = OnceLock::new();
    WRITER.get_or_init(|| StdoutWriter::new(AuditConfig::DEFAULT_BUFFER, WhenFull::Refuse))
}

// === impl StdoutWriter ===

impl StdoutWriter {
    fn new(capacity: usize, when_full: WhenFull) -> Self {
        Self {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            written: Condvar::new(),
            capacity: AtomicUsize::new(capacity),
            refuse: AtomicBool::new(when_full == WhenFull::Refuse),
            full: AtomicBool::new(false),
            chain: Mutex::new(Chain::default()),
            sealing: AtomicBool::new(false),
        }
    }

    /// Applies `telemetry.audit`: the buffer's size, what a full buffer does and whether the
    /// records are sealed.
    pub fn configure(&self, config: &AuditConfig) {
        self.set(config.buffer(), config.when_full());
        self.set_sealing(config.sign());
    }

    fn set_sealing(&self, sign: bool) {
        self.sealing.store(sign, Ordering::Relaxed);
        let mut state = self.lock();
        match (sign, state.batch.is_some()) {
            (true, false) => state.batch = Some(Batch::new()),
            (false, true) => state.batch = None,
            _ => {}
        }
    }

    /// Signs every later seal with the identity `source` returns when the seal is written (the
    /// current SVID, so a rotated one signs from its first seal on); `None` makes the seal
    /// unsigned.
    pub fn seal_with(&self, source: impl Fn() -> Option<Arc<Identity>> + Send + Sync + 'static) {
        let source: KeySource = Box::new(source);
        self.chain
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_source(source);
    }

    fn set(&self, capacity: usize, when_full: WhenFull) {
        self.capacity.store(capacity, Ordering::Relaxed);
        self.refuse
            .store(when_full == WhenFull::Refuse, Ordering::Relaxed);
    }

    /// Whether new requests are to be refused now: the buffer is past three quarters and
    /// `when_full` is `refuse`. One atomic load each; the request path asks it per request.
    pub fn refusing(&self) -> bool {
        self.full.load(Ordering::Relaxed) && self.refuse.load(Ordering::Relaxed)
    }

    /// Appends one audit record line (without its newline), plus its newline. When records are
    /// sealed, the line's SHA-256 is computed here, before the lock: under it the batch only
    /// takes those 32 bytes, so concurrent requests never queue behind each other's hashing.
    pub fn record(&'static self, line: &[u8]) -> Kept {
        let digest = self
            .sealing
            .load(Ordering::Relaxed)
            .then(|| line_digest(line));
        let mut state = self.lock();
        if state.fill() >= self.capacity.load(Ordering::Relaxed) {
            if let Some(batch) = state.batch.as_mut() {
                batch.lost();
            }
            return Kept::Dropped;
        }
        let was_empty = state.pending.is_empty();
        state.pending.extend_from_slice(line);
        state.pending.push(b'\n');
        // Sealing turned on between the load and the lock: this one line is hashed late.
        let seal_now = match state.batch.as_mut() {
            Some(batch) => batch.add(&digest.unwrap_or_else(|| line_digest(line))),
            None => false,
        };
        self.after_append(state, was_empty || seal_now);
        Kept::Buffered
    }

    /// Appends one whole log line, unless refusing has started (then it is counted and lost).
    pub fn log_line(&'static self, line: &[u8]) {
        let mut state = self.lock();
        if state.fill().saturating_add(line.len()) >= self.refuse_at() {
            state.dropped_logs = state.dropped_logs.saturating_add(1);
            return;
        }
        let was_empty = state.pending.is_empty();
        state.pending.extend_from_slice(line);
        self.after_append(state, was_empty);
    }

    /// Waits, at most `limit`, until everything appended so far is written, and sealed when
    /// sealing is on; for the exit path, so a graceful stop loses no record and its log ends
    /// with a seal, while a stalled stdout cannot hold the exit.
    pub fn flush(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while state.thread && (state.fill() > 0 || state.unsealed() || state.sealing) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if state.unsealed() && !state.seal_requested {
                state.seal_requested = true;
                self.work.notify_one();
            }
            state = self
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A writer without its thread, for tests and benches: [`StdoutWriter::drain`] writes
    /// what it holds. `sign` seals the records as `telemetry.audit.sign: true` does.
    #[cfg(any(test, feature = "test-util"))]
    pub fn detached(capacity: usize, when_full: WhenFull, sign: bool) -> &'static Self {
        let writer = Box::leak(Box::new(Self::new(capacity, when_full)));
        writer.set_sealing(sign);
        writer.lock().thread = true;
        writer
    }

    /// What the writer thread does once: waits until something is pending or a seal is due,
    /// then writes it all to `out`. For a [`StdoutWriter::detached`] writer.
    #[cfg(any(test, feature = "test-util"))]
    pub fn drain(&self, out: &mut impl Write) {
        self.write_batch(out);
    }

    fn refuse_at(&self) -> usize {
        self.capacity.load(Ordering::Relaxed) / 4 * REFUSE_AT
    }

    fn after_append(&'static self, mut state: MutexGuard<'_, State>, wake: bool) {
        if state.fill() >= self.refuse_at() {
            self.full.store(true, Ordering::Relaxed);
        }
        if !state.thread {
            state.thread = self.spawn();
        }
        drop(state);
        if wake {
            self.work.notify_one();
        }
    }

    /// Starts the writer thread; `false` if the system would not (the next append retries).
    fn spawn(&'static self) -> bool {
        std::thread::Builder::new()
            .name("hopgate-stdout".to_owned())
            .spawn(move || self.run(&mut std::io::stdout()))
            .is_ok()
    }

    /// The writer thread: write batches until the process ends.
    fn run(&self, out: &mut impl Write) {
        loop {
            self.write_batch(out);
        }
    }

    /// Waits for something pending or a seal due, takes all of it and writes it, the seal line
    /// last (this may block).
    fn write_batch(&self, out: &mut impl Write) {
        let (mut batch, sealed) = {
            let mut state = self.lock();
            loop {
                let due = state.seal_due(Instant::now());
                if due == Due::Now || !state.pending.is_empty() {
                    break;
                }
                state = match due {
                    Due::At(at) => {
                        let left = at.saturating_duration_since(Instant::now());
                        self.work
                            .wait_timeout(state, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    Due::Idle | Due::Now => self
                        .work
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner),
                };
            }
            let sealed = match state.seal_due(Instant::now()) {
                Due::Now => state.batch.as_mut().map(Batch::take),
                Due::At(_) | Due::Idle => None,
            };
            if sealed.is_some() {
                state.seal_requested = false;
                state.sealing = true;
            }
            let batch = std::mem::take(&mut state.pending);
            state.writing = batch.len();
            (batch, sealed)
        };
        // Signed here, off the request path; the seal follows every record it covers.
        let warning = sealed.map(|sealed| {
            let seal = self
                .chain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .seal(&sealed, SystemTime::now());
            batch.extend_from_slice(&seal.line);
            batch.push(b'\n');
            seal.warning
        });
        // A closed stdout fails at once; the batch is lost either way, and retrying a write
        // that cannot succeed would only hold memory.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        let dropped_logs = {
            let mut state = self.lock();
            state.writing = 0;
            state.sealing = false;
            if state.fill() < self.refuse_at() {
                self.full.store(false, Ordering::Relaxed);
            }
            std::mem::take(&mut state.dropped_logs)
        };
        self.written.notify_all();
        if let Some(Some(warning)) = warning {
            tracing::warn!("{warning}");
        }
        if dropped_logs > 0 {
            tracing::warn!(
                log.dropped = dropped_logs,
                "stdout was not read for a while: log lines were dropped to keep room for audit records"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl State ===

impl State {
    /// What the buffer holds: bytes waiting and bytes being written.
    fn fill(&self) -> usize {
        self.pending.len().saturating_add(self.writing)
    }

    /// Whether records (or losses) wait for a seal.
    fn unsealed(&self) -> bool {
        self.batch.as_ref().is_some_and(|batch| !batch.is_empty())
    }

    /// When the writer thread is to write a seal.
    fn seal_due(&self, now: Instant) -> Due {
        match &self.batch {
            Some(batch) if self.seal_requested && !batch.is_empty() => Due::Now,
            Some(batch) => batch.due(now),
            None => Due::Idle,
        }
    }
}

/// A [`tracing_subscriber`]-style writer of one log line into [`stdout`]: the formatted event is
/// collected, then appended whole when the writer is dropped.
#[derive(Debug, Default)]
pub struct LogLine {
    line: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            stdout().log_line(&self.line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer without its thread, so a test decides when a batch is written.
    fn writer(capacity: usize) -> &'static StdoutWriter {
        StdoutWriter::detached(capacity, WhenFull::Refuse, false)
    }

    fn record_of(writer: &'static StdoutWriter, len: usize) -> Kept {
        writer.record(&vec![b'a'; len])
    }

    #[test]
    fn a_buffer_three_quarters_full_refuses_and_keeps_the_last_quarter_for_records() {
        let writer = writer(4096);
        for _ in 0..3 {
            assert!(!writer.refusing());
            assert_eq!(record_of(writer, 1023), Kept::Buffered);
        }
        // 3 × 1024 bytes: three quarters.
        assert!(writer.refusing());
        writer.log_line(b"dropped\n");
        assert_eq!(record_of(writer, 511), Kept::Buffered);
        assert_eq!(record_of(writer, 511), Kept::Buffered);
        assert_eq!(record_of(writer, 1), Kept::Dropped);
        assert_eq!(writer.lock().dropped_logs, 1);
    }

    #[test]
    fn written_batches_end_the_refusal_and_report_the_dropped_log_lines() {
        let writer = writer(4096);
        writer.log_line(b"kept\n");
        for _ in 0..3 {
            record_of(writer, 1023);
        }
        writer.log_line(b"dropped\n");
        assert!(writer.refusing());
        let mut out = Vec::new();
        writer.write_batch(&mut out);
        assert!(!writer.refusing());
        assert_eq!(out.len(), 5 + 3 * 1024);
        assert!(out.starts_with(b"kept\n"));
        assert_eq!(writer.lock().dropped_logs, 0);
        assert_eq!(writer.lock().fill(), 0);
    }

    #[test]
    fn drop_mode_never_refuses_but_still_bounds_the_buffer() {
        let writer = writer(4096);
        writer.set(4096, WhenFull::Drop);
        while record_of(writer, 100) == Kept::Buffered {}
        assert!(!writer.refusing());
        assert!(writer.lock().fill() <= 4096 + 101);
    }

    #[test]
    fn a_batch_being_written_still_counts_against_the_buffer() {
        let writer = writer(4096);
        record_of(writer, 3071);
        let batch = std::mem::take(&mut writer.lock().pending);
        writer.lock().writing = batch.len();
        writer.log_line(b"x\n");
        assert!(writer.refusing(), "the stalled batch is still in memory");
    }

    #[test]
    fn a_closed_stdout_discards_the_batch_without_blocking() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let writer = writer(4096);
        record_of(writer, 3071);
        writer.write_batch(&mut Closed);
        assert_eq!(writer.lock().fill(), 0);
        assert!(!writer.refusing());
    }
}
