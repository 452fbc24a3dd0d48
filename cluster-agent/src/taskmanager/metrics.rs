//! Prometheus metrics of a TaskManager.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

/// Sets a counter that mirrors a running total kept elsewhere (it only ever rises).
pub(crate) fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// The TaskManager's metric families, registered in the process registry.
#[derive(Clone, Debug)]
pub struct TaskManagerMetrics {
    /// Bytes of Arrow Flight data sent to result readers.
    pub flight_bytes_sent: IntCounter,
    /// Plans handed over by shards.
    pub handovers: IntCounter,
    /// Hand-overs presented inside tickets, by `outcome`: `run`, `busy` (no free slot),
    /// `refused` (presented before, stale, forged).
    pub handovers_in_ticket: IntCounterVec,
    /// Result tickets served.
    pub tickets_served: IntCounter,
    /// Handed-over plans dropped because nobody fetched them in time.
    pub tickets_expired: IntCounter,
    /// Results being streamed now.
    pub results_streaming: IntGauge,
    /// Stage tasks started here (for any head, this one included).
    pub tasks: IntCounter,
    /// Stage tasks refused for want of a valid slot lease.
    pub tasks_refused: IntCounter,
    /// Slots leased now (updated on scrape and gossip).
    pub slots_used: IntGauge,
    /// Stage tasks running here now (open `ExecuteTask` streams).
    pub tasks_running: IntGauge,
    /// Slots offered.
    pub slots: IntGauge,
    /// Bytes reserved in the DataFusion memory pool (updated on scrape).
    pub memory_used: IntGauge,
    /// Limit of the DataFusion memory pool.
    pub memory_limit: IntGauge,
    /// Slot leases live now (updated on scrape).
    pub leases_active: IntGauge,
    /// Slot leases that expired unreleased (updated on scrape).
    pub leases_expired: IntCounter,
    /// Bytes of spill files on disk now (updated on scrape).
    pub spill_bytes: IntGauge,
    /// Limit of the spill files' total size.
    pub spill_limit: IntGauge,
}

impl TaskManagerMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let families = flotilla_cluster::Families::new(registry);
        let metrics = Self {
            tasks: families.counter(
                "flotilla_taskmanager_tasks_total",
                "Stage tasks started on this TaskManager",
            )?,
            tasks_refused: families.counter(
                "flotilla_taskmanager_tasks_refused_total",
                "Stage tasks refused for want of a valid slot lease",
            )?,
            tasks_running: families.gauge(
                "flotilla_taskmanager_tasks_running",
                "Stage tasks running here now (open ExecuteTask streams)",
            )?,
            slots_used: families.gauge(
                "flotilla_taskmanager_slots_used",
                "Task slots leased to queries now",
            )?,
            flight_bytes_sent: families.counter(
                "flotilla_taskmanager_flight_bytes_sent_total",
                "Bytes of Arrow Flight result data sent to readers",
            )?,
            handovers: families.counter(
                "flotilla_taskmanager_handovers_total",
                "Query plans handed over by shards",
            )?,
            handovers_in_ticket: {
                let family = families.counter_vec(
                    "flotilla_taskmanager_handovers_in_ticket_total",
                    "Hand-overs presented inside a ticket, by outcome: run, busy (no free slot, refused before the first byte), refused (presented before, stale or forged)",
                    &["outcome"],
                )?;
                for outcome in ["run", "busy", "refused"] {
                    family.with_label_values(&[outcome]);
                }
                family
            },
            tickets_served: families.counter(
                "flotilla_taskmanager_tickets_served_total",
                "Result tickets fetched with DoGet",
            )?,
            tickets_expired: families.counter(
                "flotilla_taskmanager_tickets_expired_total",
                "Handed-over plans dropped unfetched after their TTL",
            )?,
            results_streaming: families.gauge(
                "flotilla_taskmanager_results_streaming",
                "Results being streamed to readers now",
            )?,
            slots: families.gauge("flotilla_taskmanager_slots", "Task slots offered")?,
            memory_used: families.gauge(
                "flotilla_taskmanager_memory_used_bytes",
                "Bytes reserved in the DataFusion memory pool",
            )?,
            memory_limit: families.gauge(
                "flotilla_taskmanager_memory_limit_bytes",
                "Limit of the DataFusion memory pool",
            )?,
            leases_active: families
                .gauge("flotilla_taskmanager_leases_active", "Slot leases live now")?,
            leases_expired: families.counter(
                "flotilla_taskmanager_leases_expired_total",
                "Slot leases that expired without being released (their holder vanished)",
            )?,
            spill_bytes: families.gauge(
                "flotilla_taskmanager_spill_bytes",
                "Bytes of DataFusion spill files on disk now",
            )?,
            spill_limit: families.gauge(
                "flotilla_taskmanager_spill_limit_bytes",
                "Limit of the total size of spill files",
            )?,
        };
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_for_its_component_and_documented() {
        let registry = Registry::new();
        TaskManagerMetrics::new(&registry).unwrap();
        assert_eq!(
            flotilla_cluster::check_families(&registry, "flotilla_taskmanager", 9),
            Ok(())
        );
    }
}
