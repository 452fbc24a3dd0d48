//! Prometheus metrics of a JobManager shard.

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// The shard's metric families, registered in the process registry.
#[derive(Clone, Debug)]
pub struct JobManagerMetrics {
    /// Queries planned and handed over.
    pub queries_planned: IntCounter,
    /// Queries refused, by error code.
    pub queries_failed: IntCounterVec,
    /// Time from command to hand-over, in seconds.
    pub planning_seconds: Histogram,
    /// Queries being planned now.
    pub in_flight: IntGauge,
    /// Bytes of every gRPC response message this shard sent (FlightInfo answers). Result data
    /// never passes through a shard, so this stays tiny whatever the result sizes.
    pub response_bytes: IntCounter,
    /// Hand-overs a TaskManager failed, retried on another.
    pub handover_retries: IntCounter,
    /// Time queries waited for slot leases, in seconds.
    pub lease_wait_seconds: Histogram,
    /// Queries waiting for free slots now.
    pub queued: IntGauge,
    /// Lease reservations TaskManagers refused (no free slots).
    pub leases_refused: IntCounter,
    /// Hand-overs also sent to a second TaskManager because the first was slow to answer, by
    /// `outcome`: `sent`, `won` (the second answered first), `refused` (budget spent).
    pub handover_hedges: IntCounterVec,
    /// Reservations a query stopped waiting for once another TaskManager had granted one.
    pub stragglers: IntCounter,
    /// Queries handed over inside their ticket (no call from the shard).
    pub handovers_in_ticket: IntCounter,
    /// Queries whose plan came from the plan cache.
    pub plan_cache_hits: IntCounter,
    /// Queries planned because the cache had no current plan for them.
    pub plan_cache_misses: IntCounter,
    /// Plans dropped to keep the cache within `jobmanager.plan_cache_bytes`.
    pub plan_cache_evictions: IntCounter,
    /// Plans dropped because a table they read changed.
    pub plan_cache_invalidations: IntCounter,
    /// Bytes the cache holds now.
    pub plan_cache_bytes: IntGauge,
    /// Plans the cache holds now.
    pub plan_cache_entries: IntGauge,
    /// TaskManagers in this shard's table, by state (`up`, `suspect`, `down`, `not_serving`).
    pub taskmanagers: IntGaugeVec,
    /// Estimated heap of the TaskManager table, in bytes.
    pub taskmanager_table_bytes: IntGauge,
    /// Report datagrams received from TaskManagers.
    pub reports_received: IntCounter,
}

impl JobManagerMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let families = flotilla_cluster::Families::new(registry);
        let metrics = Self {
            lease_wait_seconds: families.histogram("flotilla_jobmanager_lease_wait_seconds", "Time queries waited for free TaskManager slots (0 when their hand-over reserved them at once)", vec![
                    0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
                ])?,
            queued: families.gauge(
                "flotilla_jobmanager_queued",
                "Queries waiting for free TaskManager slots",
            )?,
            leases_refused: families.counter(
                "flotilla_jobmanager_leases_refused_total",
                "Slot reservations TaskManagers refused for want of free slots",
            )?,
            handover_hedges: families.counter_vec(
                "flotilla_jobmanager_handover_hedges_total",
                "Hand-overs also sent to a second TaskManager after the first was slow to answer, by outcome: sent, won, refused (extra-work budget spent)",
                &["outcome"],
            )?,
            stragglers: families.counter(
                "flotilla_jobmanager_reservation_stragglers_total",
                "Reservations a query stopped waiting for once another TaskManager had granted one (the query ran narrower)",
            )?,
            handovers_in_ticket: families.counter(
                "flotilla_jobmanager_handovers_in_ticket_total",
                "Queries handed over inside their ticket, sealed, for the TaskManager to reserve and run when the gateway fetches it (no call from the shard)",
            )?,
            queries_planned: families.counter(
                "flotilla_jobmanager_queries_planned_total",
                "Queries planned and handed over to a TaskManager",
            )?,
            queries_failed: families.counter_vec("flotilla_jobmanager_queries_failed_total", "Queries refused, by error code", &["code"])?,
            planning_seconds: families.histogram("flotilla_jobmanager_planning_seconds", "Time from query command to hand-over", vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                ])?,
            in_flight: families.gauge("flotilla_jobmanager_in_flight", "Queries being planned now")?,
            response_bytes: families.counter(
                "flotilla_jobmanager_response_bytes_total",
                "Bytes of gRPC response messages sent (never result data)",
            )?,
            plan_cache_hits: families.counter(
                "flotilla_jobmanager_plan_cache_hits_total",
                "Queries whose encoded plan came from the plan cache",
            )?,
            plan_cache_misses: families.counter(
                "flotilla_jobmanager_plan_cache_misses_total",
                "Queries planned because the plan cache had no current plan for them",
            )?,
            plan_cache_evictions: families.counter(
                "flotilla_jobmanager_plan_cache_evictions_total",
                "Plans dropped to keep the plan cache within jobmanager.plan_cache_bytes",
            )?,
            plan_cache_invalidations: families.counter(
                "flotilla_jobmanager_plan_cache_invalidations_total",
                "Cached plans dropped because a table they read changed",
            )?,
            plan_cache_bytes: families.gauge(
                "flotilla_jobmanager_plan_cache_bytes",
                "Bytes the plan cache holds",
            )?,
            plan_cache_entries: families.gauge(
                "flotilla_jobmanager_plan_cache_entries",
                "Plans the plan cache holds",
            )?,
            handover_retries: families.counter(
                "flotilla_jobmanager_handover_retries_total",
                "Hand-overs retried on another TaskManager after a failure",
            )?,
            taskmanagers: families.gauge_vec(
                "flotilla_jobmanager_taskmanagers",
                "TaskManagers in this shard's table, by state (up, suspect, down, not_serving)",
                &["state"],
            )?,
            taskmanager_table_bytes: families.gauge(
                "flotilla_jobmanager_taskmanager_table_bytes",
                "Estimated heap of this shard's TaskManager table",
            )?,
            reports_received: families.counter(
                "flotilla_jobmanager_reports_received_total",
                "Report datagrams received from TaskManagers",
            )?,
        };
        for outcome in ["sent", "won", "refused"] {
            metrics.handover_hedges.with_label_values(&[outcome]);
        }
        for code in flotilla_protocol::ErrorCode::ALL {
            metrics.queries_failed.with_label_values(&[code.as_str()]);
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_for_its_component_and_documented() {
        let registry = Registry::new();
        JobManagerMetrics::new(&registry).unwrap();
        assert_eq!(
            flotilla_cluster::check_families(&registry, "flotilla_jobmanager", 9),
            Ok(())
        );
    }
}
