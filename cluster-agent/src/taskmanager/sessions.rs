//! The sessions a TaskManager runs plans in: the head's (the workers a shard chose, this
//! TaskManager as the local worker, the headers every stage task carries) and those of the stage
//! tasks heads send here (refused without a live lease).

use super::leases::LeaseTable;
use super::metrics::TaskManagerMetrics;
use super::query_memory::QueryMemory;
use crate::codec::FlotillaCodec;
use crate::error::AgentError;
use crate::flight_clients::ClusterChannels;
use crate::lease::LEASE_HEADER;
use async_trait::async_trait;
use datafusion::common::DataFusionError;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;
use datafusion_distributed::{
    DistributedExt, SessionStateBuilderExt, Worker, WorkerQueryContext, WorkerResolver,
    WorkerSessionBuilder,
};
use flotilla_protocol::{QUERY_ID_HEADER, TRACEPARENT_HEADER, TraceContext};
use std::sync::Arc;
use url::Url;

/// What every stage task of a query carries to the TaskManagers running it: the slot lease it
/// runs under, the query id and the trace (for their logs).
pub(super) struct StageHeaders<'a> {
    pub(super) lease_id: &'a str,
    pub(super) query_id: &'a str,
    pub(super) trace: TraceContext,
}

impl StageHeaders<'_> {
    fn to_headers(&self) -> Result<http::HeaderMap, AgentError> {
        let value = |text: &str, what: &str| {
            http::HeaderValue::from_str(text)
                .map_err(|_| AgentError::BadRequest(format!("{what} is not a header value")))
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(LEASE_HEADER, value(self.lease_id, "lease id")?);
        headers.insert(QUERY_ID_HEADER, value(self.query_id, "query id")?);
        headers.insert(
            TRACEPARENT_HEADER,
            value(&self.trace.child().header(), "trace")?,
        );
        // The cluster's signature is added per call by the channel (ClusterChannels).
        Ok(headers)
    }
}

/// Builds the head's session config: the planner's event handlers, the workers the shard chose,
/// this TaskManager as the local worker (single-task stages run in-process), and the codec.
pub(super) fn head_session_config(
    base: SessionConfig,
    worker_urls: Vec<Url>,
    worker: &Worker,
    head_url: Url,
    stage_headers: StageHeaders<'_>,
    channels: &ClusterChannels,
) -> Result<SessionConfig, AgentError> {
    let passthrough = stage_headers.to_headers()?;
    let builder = SessionStateBuilder::new()
        .with_config(base)
        .with_distributed_planner()
        .with_distributed_worker_resolver(FixedWorkers(worker_urls))
        .with_distributed_local_worker_context(worker.to_local_worker_context(head_url))
        .with_distributed_user_codec(FlotillaCodec)
        .with_distributed_passthrough_headers(passthrough)
        .map_err(AgentError::DataFusion)?
        .with_distributed_channel_resolver(channels.clone());
    let state = builder.build();
    Ok(state.config().clone())
}

/// The TaskManagers a shard chose for one query.
pub(super) struct FixedWorkers(Vec<Url>);

impl WorkerResolver for FixedWorkers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

/// Sessions of the stage tasks heads send here: refused without a live lease on this
/// TaskManager, else stock plus Flotilla's codec.
pub(super) struct WorkerSessions {
    pub(super) leases: Arc<LeaseTable>,
    pub(super) metrics: TaskManagerMetrics,
    pub(super) query_memory: Arc<QueryMemory>,
    pub(super) channels: ClusterChannels,
    /// The bound on one call of a growing function (`memory.max_call_mb`), in bytes.
    pub(super) max_call_bytes: u64,
}

#[async_trait]
impl WorkerSessionBuilder for WorkerSessions {
    async fn build_session_state(
        &self,
        ctx: WorkerQueryContext,
    ) -> Result<SessionState, DataFusionError> {
        let lease = ctx
            .headers
            .get(LEASE_HEADER)
            .and_then(|value| value.to_str().ok());
        match lease {
            Some(lease_id) if self.leases.is_valid(lease_id) => {
                let header = |name: &str| {
                    ctx.headers
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                };
                let trace_id = TraceContext::parse(header(TRACEPARENT_HEADER))
                    .map(|trace| trace.trace_id())
                    .unwrap_or_default();
                tracing::info!(query_id = header(QUERY_ID_HEADER), %trace_id, %lease_id, "stage task accepted");
            }
            other => {
                self.metrics.tasks_refused.inc();
                let error = AgentError::NoLease(match other {
                    Some(lease_id) => format!("lease `{lease_id}` is not held here"),
                    None => format!("a stage task needs the {LEASE_HEADER} header"),
                });
                return Err(DataFusionError::External(Box::new(error)));
            }
        }
        self.metrics.tasks.inc();
        // This task may fetch from stage tasks on other TaskManagers: its calls carry the same
        // lease, query id and trace as the call that brought it (each is signed afresh by its
        // channel).
        let mut forwarded = http::HeaderMap::new();
        for name in [LEASE_HEADER, QUERY_ID_HEADER, TRACEPARENT_HEADER] {
            if let Some(value) = ctx.headers.get(name) {
                forwarded.insert(name, value.clone());
            }
        }
        // The query's tasks here share its memory share, keyed by its query id (else its lease).
        let query = ctx
            .headers
            .get(QUERY_ID_HEADER)
            .or_else(|| ctx.headers.get(LEASE_HEADER))
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let runtime = self.query_memory.runtime(query)?;
        let builder = ctx
            .builder
            .with_runtime_env(runtime)
            .with_distributed_user_codec(FlotillaCodec)
            .with_distributed_passthrough_headers(forwarded)?
            .with_distributed_channel_resolver(self.channels.clone());
        let mut state = builder.build();
        crate::memory::register_bounded_functions(&mut state, self.max_call_bytes)?;
        Ok(state)
    }
}
