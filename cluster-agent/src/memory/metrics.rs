//! Prometheus metrics of the memory guard (shards and TaskManagers alike).

use prometheus::{IntCounterVec, IntGauge, Registry};

/// The memory guard's metric families, registered in the process registry.
#[derive(Clone, Debug)]
pub(crate) struct MemoryMetrics {
    /// Bytes the process has allocated (jemalloc), as of the guard's last look.
    pub(crate) allocated: IntGauge,
    /// The watermark past which the biggest query is stopped.
    pub(crate) limit: IntGauge,
    /// Queries stopped for memory, by reason: `query_limit`, `watermark`.
    stopped: IntCounterVec,
}

impl MemoryMetrics {
    /// Creates the families and registers them in `registry`.
    pub(crate) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let families = flotilla_cluster::Families::new(registry);
        let metrics = Self {
            allocated: families.gauge(
                "flotilla_memory_allocated_bytes",
                "Bytes this process has allocated, as the memory guard last saw them",
            )?,
            limit: families.gauge(
                "flotilla_memory_limit_bytes",
                "Allocated bytes past which the query holding the most memory is stopped",
            )?,
            stopped: families.counter_vec(
                "flotilla_memory_queries_stopped_total",
                "Queries stopped with resources_exhausted for memory, by reason",
                &["reason"],
            )?,
        };
        // Every series a dashboard reads exists from the start, at zero.
        for reason in ["query_limit", "watermark"] {
            metrics.stopped.with_label_values(&[reason]);
        }
        Ok(metrics)
    }

    /// Counts one query stopped for `reason`.
    pub(crate) fn stopped(&self, reason: &str) {
        self.stopped.with_label_values(&[reason]).inc();
    }

    #[cfg(test)]
    pub(crate) fn stopped_total(&self, reason: &str) -> u64 {
        self.stopped.with_label_values(&[reason]).get()
    }
}
