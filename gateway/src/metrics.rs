//! Prometheus metrics of the gateway, registered in the process registry
//! (`flotilla_cluster::process_registry`).

use flotilla_protocol::ErrorCode;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The phases of a query the gateway times (label `phase` of
/// `flotilla_gateway_query_phase_seconds`).
pub const PHASES: [&str; 4] = ["queued", "planned", "first_byte", "total"];

/// The front doors (label `protocol`).
pub const PROTOCOLS: [&str; 2] = ["http", "flight_sql"];

/// Outcome codes besides the error codes: `ok`, and a result cut off after its first byte.
pub const OUTCOMES: [&str; 2] = ["ok", "stream_aborted"];

/// The gateway's metric families, registered in the process registry.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// Queries by final code (`ok` for success, `stream_aborted` for a result cut off).
    pub queries: IntCounterVec,
    /// Seconds per query phase: `queued` (admission wait), `planned` (admission to the shard's
    /// answer), `first_byte` (request to first result byte), `total` (request to last byte).
    pub phase_seconds: HistogramVec,
    /// Result bytes streamed to clients.
    pub bytes_streamed: IntCounter,
    /// Result rows streamed to clients.
    pub rows_streamed: IntCounter,
    /// Queries admitted and not yet ended (updated on scrape).
    pub in_flight: IntGauge,
    /// Queries routed to each shard.
    pub shard_queries: IntCounterVec,
    /// Queries being routed to each shard now.
    pub shard_in_flight: IntGaugeVec,
    /// Routing decisions: `affinity` (first ring candidate) or `spill` (bounded load).
    pub routing_decisions: IntCounterVec,
    /// Queries re-run after a failure before the first byte, by `reason`: `shard` (the shard
    /// failed; another is tried: a fail-over) or `taskmanager` (a TaskManager failed; the query
    /// is re-planned).
    pub retries: IntCounterVec,
    /// Hedged attempts, by `outcome`: `sent`, `won` (answered first), `refused` (due, but
    /// the extra-work budget was spent).
    pub hedges: IntCounterVec,
    /// TaskManagers sidelined: three calls unanswered, avoided until they answer a probe.
    pub sidelined: prometheus::IntCounter,
    /// Re-runs the extra-work budget or the query's deadline refused (the query failed).
    pub retries_refused: prometheus::IntCounter,
    /// Statements quarantined as queries of death (their refusals are counted in `queries`
    /// with code `quarantined`).
    pub quarantined: prometheus::IntCounter,
    /// Shards or TaskManagers the gateway can reach now, by `role` and `state` (updated on
    /// scrape).
    pub members: IntGaugeVec,
    /// Queries refused by admission (429), by tenant (`other` for unconfigured tenants).
    pub admission_rejected: IntCounterVec,
    /// Queries waiting in their tenant's queue now, by tenant.
    pub tenant_queued: IntGaugeVec,
    /// Length of each tenant's queue.
    pub tenant_queue_limit: IntGaugeVec,
    /// Flight SQL tickets presented to `DoGet`, by how they were served.
    pub flight_tickets: IntCounterVec,
}

impl GatewayMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let metrics = Self {
            queries: counter(
                "flotilla_gateway_queries_total",
                "Queries by outcome code (ok on success, stream_aborted for a result cut off) and \
                 front door (protocol: http or flight_sql)",
                &["code", "protocol"],
            )?,
            phase_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "flotilla_gateway_query_phase_seconds",
                    "Seconds per query phase: queued (admission wait), planned (admission to the \
                     shard's answer), first_byte (request to first result byte), total (request \
                     to last byte)",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ]),
                &["phase", "protocol"],
            )?,
            bytes_streamed: IntCounter::new(
                "flotilla_gateway_bytes_streamed_total",
                "Result bytes streamed to clients",
            )?,
            rows_streamed: IntCounter::new(
                "flotilla_gateway_rows_streamed_total",
                "Result rows streamed to clients",
            )?,
            in_flight: IntGauge::new(
                "flotilla_gateway_in_flight",
                "Queries admitted and not yet ended",
            )?,
            shard_queries: counter(
                "flotilla_gateway_shard_queries_total",
                "Queries routed to each shard",
                &["shard"],
            )?,
            shard_in_flight: gauge(
                "flotilla_gateway_shard_in_flight",
                "Queries being routed to each shard now",
                &["shard"],
            )?,
            routing_decisions: counter(
                "flotilla_gateway_routing_decisions_total",
                "Routing decisions: affinity (first candidate), spill (bounded load) or together (an identical statement in flight there)",
                &["decision"],
            )?,
            retries: counter(
                "flotilla_gateway_retries_total",
                "Queries re-run after a failure before the first byte, by reason: shard \
                 (fail-over to another shard) or taskmanager (re-planned)",
                &["reason"],
            )?,
            hedges: counter(
                "flotilla_gateway_hedges_total",
                "Hedged attempts (a second attempt after a short delay without a first batch), \
                 by outcome: sent, won (answered first), refused (extra-work budget spent)",
                &["outcome"],
            )?,
            sidelined: prometheus::IntCounter::new(
                "flotilla_gateway_sidelined_total",
                "TaskManagers sidelined: three calls unanswered (beaten by their hedges, or \
                 probes), avoided by new queries until they answer a probe",
            )?,
            retries_refused: prometheus::IntCounter::new(
                "flotilla_gateway_retries_refused_total",
                "Re-runs refused by the extra-work budget or the query's deadline",
            )?,
            quarantined: prometheus::IntCounter::new(
                "flotilla_gateway_statements_quarantined_total",
                "Statements quarantined as queries of death: two members failed while they ran",
            )?,
            members: gauge(
                "flotilla_gateway_members",
                "Shards and TaskManagers the gateway knows, by role and state (serving or down)",
                &["role", "state"],
            )?,
            admission_rejected: counter(
                "flotilla_gateway_admission_rejected_total",
                "Queries refused by admission (tenant_queue_full), by tenant",
                &["tenant"],
            )?,
            tenant_queued: gauge(
                "flotilla_gateway_tenant_queued",
                "Queries waiting in their tenant's admission queue now",
                &["tenant"],
            )?,
            tenant_queue_limit: gauge(
                "flotilla_gateway_tenant_queue_limit",
                "Length of the tenant's admission queue",
                &["tenant"],
            )?,
            flight_tickets: counter(
                "flotilla_gateway_flight_tickets_total",
                "Flight SQL tickets presented to DoGet, by how they were served: parked (the \
                 gateway that issued it streamed the result it had started), rerun (another \
                 gateway ran the statement sealed in it), refused (not sealed by this cluster, \
                 expired, or another tenant's)",
                &["served"],
            )?,
        };
        // Every series a dashboard or alert reads exists from the start, at zero.
        for protocol in PROTOCOLS {
            for code in ErrorCode::ALL
                .iter()
                .map(|code| code.as_str())
                .chain(OUTCOMES)
            {
                metrics.queries.with_label_values(&[code, protocol]);
            }
            for phase in PHASES {
                metrics.phase_seconds.with_label_values(&[phase, protocol]);
            }
        }
        for served in ["parked", "rerun", "refused"] {
            metrics.flight_tickets.with_label_values(&[served]);
        }
        for decision in ["affinity", "spill", "together"] {
            metrics.routing_decisions.with_label_values(&[decision]);
        }
        for reason in ["shard", "taskmanager"] {
            metrics.retries.with_label_values(&[reason]);
        }
        registry.register(Box::new(metrics.queries.clone()))?;
        registry.register(Box::new(metrics.phase_seconds.clone()))?;
        registry.register(Box::new(metrics.bytes_streamed.clone()))?;
        registry.register(Box::new(metrics.rows_streamed.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.shard_queries.clone()))?;
        registry.register(Box::new(metrics.shard_in_flight.clone()))?;
        registry.register(Box::new(metrics.routing_decisions.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        for outcome in ["sent", "won", "refused"] {
            metrics.hedges.with_label_values(&[outcome]);
        }
        registry.register(Box::new(metrics.hedges.clone()))?;
        registry.register(Box::new(metrics.retries_refused.clone()))?;
        registry.register(Box::new(metrics.sidelined.clone()))?;
        registry.register(Box::new(metrics.quarantined.clone()))?;
        registry.register(Box::new(metrics.members.clone()))?;
        registry.register(Box::new(metrics.admission_rejected.clone()))?;
        registry.register(Box::new(metrics.tenant_queued.clone()))?;
        registry.register(Box::new(metrics.tenant_queue_limit.clone()))?;
        registry.register(Box::new(metrics.flight_tickets.clone()))?;
        Ok(metrics)
    }

    /// Observes `seconds` for `phase`.
    pub fn observe_phase(&self, phase: &str, protocol: &str, seconds: f64) {
        self.phase_seconds
            .with_label_values(&[phase, protocol])
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_flotilla_and_documented() {
        let registry = flotilla_cluster::process_registry("gateway").unwrap();
        GatewayMetrics::new(&registry).unwrap();
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|family| family.name()).collect();
        for family in &families {
            assert!(family.name().starts_with("flotilla_"), "{}", family.name());
            assert!(!family.help().is_empty(), "{} has no HELP", family.name());
        }
        for expected in [
            "flotilla_build_info",
            "flotilla_process_cpu_seconds_total",
            "flotilla_process_resident_memory_bytes",
            "flotilla_process_open_fds",
            "flotilla_gateway_queries_total",
            "flotilla_gateway_query_phase_seconds",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}
