//! The standard `process_*` metrics every Prometheus client exports: CPU seconds, resident
//! memory, open file descriptors and the start time, read from `/proc/self` at each scrape
//! (Linux). A value that cannot be read keeps its last one; a scrape never fails for it.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `/proc` reports CPU times in USER_HZ, which Linux fixes at 100 on every architecture it
/// exposes to user space this way.
const TICKS_PER_SECOND: f64 = 100.0;

/// The `process_*` instruments, unprefixed, in a registry of their own.
pub(super) struct ProcessMetrics {
    registry: Registry,
    cpu: Counter<f64, AtomicU64>,
    /// The CPU seconds last added to `cpu` (a counter only grows: each scrape adds the rest).
    counted: Mutex<f64>,
    resident: Gauge,
    open_fds: Gauge,
    start_time: Gauge<f64, AtomicU64>,
}

impl ProcessMetrics {
    pub(super) fn new() -> Self {
        let mut registry = Registry::default();
        let cpu = Counter::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            cpu.clone(),
        );
        let resident = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            resident.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            open_fds.clone(),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            start_time.clone(),
        );
        let metrics = Self {
            registry,
            cpu,
            counted: Mutex::new(0.0),
            resident,
            open_fds,
            start_time,
        };
        if let Some(start) = start_time_seconds() {
            metrics.start_time.set(start);
        }
        metrics.refresh();
        metrics
    }

    /// Reads `/proc/self` again.
    fn refresh(&self) {
        if let Some(stat) = self_stat() {
            let seconds = (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND;
            let mut counted = self.counted.lock().unwrap_or_else(PoisonError::into_inner);
            if seconds > *counted {
                self.cpu.inc_by(seconds - *counted);
                *counted = seconds;
            }
        }
        if let Some(bytes) = resident_bytes() {
            self.resident.set(bytes);
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds
                .set(i64::try_from(entries.count()).unwrap_or(i64::MAX));
        }
    }

    /// Refreshes the values and renders them in the Prometheus text format.
    pub(super) fn encode(&self, out: &mut String) -> std::fmt::Result {
        self.refresh();
        prometheus_client::encoding::text::encode(out, &self.registry)
    }
}

/// The fields of `/proc/self/stat` read here.
struct Stat {
    utime: u64,
    stime: u64,
    /// Clock ticks since boot at which the process started.
    starttime: u64,
}

fn self_stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name is in parentheses and may hold spaces: the fields start after the last
    // `)`, with the state, field 3.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n.checked_sub(3)?)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: i64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

fn start_time_seconds() -> Option<f64> {
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let stat = self_stat()?;
    Some(boot as f64 + stat.starttime as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_metrics_are_read_from_proc_self() {
        let metrics = ProcessMetrics::new();
        let mut out = String::new();
        metrics.encode(&mut out).unwrap();
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {out}"))
                .parse()
                .unwrap()
        };
        assert!(
            value("process_resident_memory_bytes") > 1_000_000.0,
            "{out}"
        );
        assert!(value("process_open_fds") >= 3.0, "{out}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 24.0 * 3600.0,
            "{start} vs {now}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0, "{out}");
        assert!(out.contains("# TYPE process_cpu_seconds counter"), "{out}");
    }
}
