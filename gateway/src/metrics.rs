//! Prometheus metrics of the gateway.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// The gateway's metric families, registered in the process registry.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    /// Queries by final code (`ok` for success).
    pub queries: IntCounterVec,
    /// Seconds from request to the first result byte.
    pub first_byte_seconds: Histogram,
    /// Result bytes streamed to clients.
    pub bytes_streamed: IntCounter,
    /// Queries routed to each shard.
    pub shard_queries: IntCounterVec,
    /// Queries being routed to each shard now.
    pub shard_in_flight: IntGaugeVec,
    /// Routing decisions: `affinity` (first ring candidate) or `spill` (bounded load).
    pub routing_decisions: IntCounterVec,
    /// Queries re-run after a failure before the first byte, by `reason`: `shard` (the shard
    /// failed; another is tried) or `taskmanager` (a TaskManager failed; the query is re-planned).
    pub retries: IntCounterVec,
    /// Queries refused by admission (429), by tenant (`other` for unconfigured tenants).
    pub admission_rejected: IntCounterVec,
    /// Seconds admitted queries waited for their tenant's and the global permit.
    pub admission_wait_seconds: Histogram,
}

impl GatewayMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            queries: IntCounterVec::new(
                Opts::new(
                    "flotilla_gateway_queries_total",
                    "Queries by outcome code (ok on success)",
                ),
                &["code"],
            )?,
            first_byte_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "flotilla_gateway_first_byte_seconds",
                    "Time from request to the first result byte",
                )
                .buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                ]),
            )?,
            bytes_streamed: IntCounter::new(
                "flotilla_gateway_bytes_streamed_total",
                "Result bytes streamed to clients",
            )?,
            shard_queries: IntCounterVec::new(
                Opts::new(
                    "flotilla_gateway_shard_queries_total",
                    "Queries routed to each shard",
                ),
                &["shard"],
            )?,
            shard_in_flight: IntGaugeVec::new(
                Opts::new(
                    "flotilla_gateway_shard_in_flight",
                    "Queries being routed to each shard",
                ),
                &["shard"],
            )?,
            routing_decisions: IntCounterVec::new(
                Opts::new(
                    "flotilla_gateway_routing_decisions_total",
                    "Routing decisions: affinity (first candidate) or spill (bounded load)",
                ),
                &["decision"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "flotilla_gateway_retries_total",
                    "Queries re-run after a failure before the first byte, by reason (shard, taskmanager)",
                ),
                &["reason"],
            )?,
            admission_rejected: IntCounterVec::new(
                Opts::new(
                    "flotilla_gateway_admission_rejected_total",
                    "Queries refused by admission (tenant_queue_full), by tenant",
                ),
                &["tenant"],
            )?,
            admission_wait_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "flotilla_gateway_admission_wait_seconds",
                    "Time admitted queries waited in their tenant's queue",
                )
                .buckets(vec![
                    0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
                ]),
            )?,
        };
        registry.register(Box::new(metrics.admission_rejected.clone()))?;
        registry.register(Box::new(metrics.admission_wait_seconds.clone()))?;
        registry.register(Box::new(metrics.queries.clone()))?;
        registry.register(Box::new(metrics.first_byte_seconds.clone()))?;
        registry.register(Box::new(metrics.bytes_streamed.clone()))?;
        registry.register(Box::new(metrics.shard_queries.clone()))?;
        registry.register(Box::new(metrics.shard_in_flight.clone()))?;
        registry.register(Box::new(metrics.routing_decisions.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        Ok(metrics)
    }
}
