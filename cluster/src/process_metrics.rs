//! The registry every Flotilla process starts from: [`ProcessMetrics`] (this process's CPU
//! time, memory, file descriptors and threads, read from `/proc/self` at each scrape) and
//! `flotilla_build_info`, and `flotilla_cluster_refused_total` (datagrams and calls refused by
//! [`crate::keys`]).
//!
//! The `prometheus` crate's own process collector counts CPU time in whole seconds, too coarse
//! for `rate()` over a short window on a process that uses a fraction of a core; this one keeps
//! the kernel's tick resolution (10 ms).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::Mutex;

/// Returns a registry holding this process's CPU, memory, fd and thread metrics
/// (`flotilla_process_*`) and `flotilla_build_info{version, role}`; every process's metric
/// families join it.
pub fn process_registry(role: &str) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(ProcessMetrics::new()?))?;
    let build = IntGaugeVec::new(
        Opts::new(
            "flotilla_build_info",
            "Always 1; labels name the version and role of this process",
        ),
        &["version", "role"],
    )?;
    build
        .with_label_values(&[env!("CARGO_PKG_VERSION"), role])
        .set(1);
    registry.register(Box::new(build))?;
    registry.register(Box::new(crate::keys::REFUSED.clone()))?;
    Ok(registry)
}

/// The `flotilla_process_*` families.
pub struct ProcessMetrics {
    descs: Vec<Desc>,
    cpu: Counter,
    resident: IntGauge,
    virtual_memory: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    threads: IntGauge,
    start_time: Gauge,
    /// One scrape at a time: the CPU counter is advanced by the difference since the last one.
    collecting: Mutex<()>,
}

impl ProcessMetrics {
    /// Creates the families; register the result in the process's registry.
    pub fn new() -> prometheus::Result<Self> {
        let opts = |name: &str, help: &str| Opts::new(format!("flotilla_process_{name}"), help);
        let cpu = Counter::with_opts(opts(
            "cpu_seconds_total",
            "CPU time this process used, user and system, in seconds",
        ))?;
        let resident = IntGauge::with_opts(opts("resident_memory_bytes", "Resident memory size"))?;
        let virtual_memory =
            IntGauge::with_opts(opts("virtual_memory_bytes", "Virtual memory size"))?;
        let open_fds = IntGauge::with_opts(opts("open_fds", "Open file descriptors"))?;
        let max_fds = IntGauge::with_opts(opts("max_fds", "Limit of open file descriptors"))?;
        let threads = IntGauge::with_opts(opts("threads", "OS threads"))?;
        let start_time = Gauge::with_opts(opts(
            "start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
        ))?;
        let mut descs = Vec::new();
        for collector in [
            &cpu as &dyn Collector,
            &resident,
            &virtual_memory,
            &open_fds,
            &max_fds,
            &threads,
            &start_time,
        ] {
            descs.extend(collector.desc().into_iter().cloned());
        }
        Ok(Self {
            descs,
            cpu,
            resident,
            virtual_memory,
            open_fds,
            max_fds,
            threads,
            start_time,
            collecting: Mutex::new(()),
        })
    }

    #[cfg(target_os = "linux")]
    fn read(&self) {
        use procfs::process::{LimitValue, Process};
        let Ok(me) = Process::myself() else {
            return;
        };
        if let Ok(stat) = me.stat() {
            let ticks = procfs::ticks_per_second().max(1) as f64;
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            self.cpu.inc_by((cpu - self.cpu.get()).max(0.0));
            let page = procfs::page_size();
            self.resident
                .set(i64::try_from(stat.rss.saturating_mul(page)).unwrap_or(i64::MAX));
            self.virtual_memory
                .set(i64::try_from(stat.vsize).unwrap_or(i64::MAX));
            self.threads.set(stat.num_threads);
            if let Ok(boot) = procfs::boot_time_secs() {
                self.start_time
                    .set(boot as f64 + stat.starttime as f64 / ticks);
            }
        }
        if let Ok(count) = me.fd_count() {
            self.open_fds.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if let Ok(limits) = me.limits()
            && let LimitValue::Value(max) = limits.max_open_files.soft_limit
        {
            self.max_fds.set(i64::try_from(max).unwrap_or(i64::MAX));
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&self) {}
}

impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_at_a_time = self
            .collecting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.read();
        let mut families = Vec::new();
        for collector in [
            &self.cpu as &dyn Collector,
            &self.resident,
            &self.virtual_memory,
            &self.open_fds,
            &self.max_fds,
            &self.threads,
            &self.start_time,
        ] {
            families.extend(collector.collect());
        }
        families
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_finer_than_whole_seconds_and_only_rises() {
        let metrics = ProcessMetrics::new().unwrap();
        // Burn a little CPU: well under a second, more than a few ticks.
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(150) {
            spin = spin.wrapping_add(std::hint::black_box(1));
        }
        assert!(spin > 0);
        metrics.collect();
        let first = metrics.cpu.get();
        assert!(first > 0.0 && first.fract() != 0.0, "{first}");
        metrics.collect();
        assert!(metrics.cpu.get() >= first);
        assert!(metrics.resident.get() > 0 && metrics.open_fds.get() > 0);
        assert!(metrics.threads.get() >= 1 && metrics.start_time.get() > 1.0e9);
    }
}
