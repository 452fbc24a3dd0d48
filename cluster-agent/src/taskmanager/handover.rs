//! How a TaskManager takes work: lease actions (reserve, renew, release), a shard's hand-over
//! of a planned query (kept under a ticket), and a reserving shard's hand-over that leases here.

use super::service::TaskManager;
use super::sessions::{StageHeaders, head_session_config};
use super::tickets::{PendingQuery, QueryLease};
use crate::codec::{decode_plan, restamp_stages};
use crate::error::AgentError;
use crate::handover::{HandoverRequest, HandoverResponse};
use crate::lease::{
    LeaseIds, RELEASE_ACTION, RENEW_ACTION, RESERVE_ACTION, RenewResponse, ReserveRequest,
    ReserveResponse,
};
use arrow_flight::Action;
use datafusion::execution::TaskContext;
use flotilla_protocol::TraceContext;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

// === impl TaskManager ===

impl TaskManager {
    /// Answers the lease actions shards and head TaskManagers send.
    pub(super) fn lease_action(&self, action: &Action) -> Result<Vec<u8>, AgentError> {
        let leases = &self.inner.leases;
        let bad = |error: prost::DecodeError| AgentError::BadRequest(format!("lease: {error}"));
        match action.r#type.as_str() {
            RESERVE_ACTION => {
                let request = ReserveRequest::decode(action.body.clone()).map_err(bad)?;
                let slots_free = self.reserve(
                    &request.lease_id,
                    &request.query_id,
                    &request.holder,
                    request.slots,
                    request.ttl_ms,
                )?;
                Ok(ReserveResponse { slots_free }.encode_to_vec())
            }
            RENEW_ACTION => {
                let request = LeaseIds::decode(action.body.clone()).map_err(bad)?;
                let ttl = Duration::from_millis(request.ttl_ms.clamp(100, 600_000));
                let unknown = leases.renew(&request.lease_ids, ttl);
                Ok(RenewResponse { unknown }.encode_to_vec())
            }
            RELEASE_ACTION => {
                let request = LeaseIds::decode(action.body.clone()).map_err(bad)?;
                leases.release(&request.lease_ids);
                Ok(Vec::new())
            }
            other => Err(AgentError::BadRequest(format!("unknown action {other}"))),
        }
    }

    /// Decodes a handed-over plan and keeps it under a fresh ticket.
    pub(super) fn accept_handover(
        &self,
        request: HandoverRequest,
        trace: TraceContext,
    ) -> Result<HandoverResponse, AgentError> {
        let inner = &self.inner;
        let mut pending = self.take_over(&request, trace)?;
        pending.fill = inner.results.start(&request.cache_entry);
        let ticket = format!("{}.{}", request.query_id, uuid::Uuid::new_v4().simple());
        match inner.tickets.insert(ticket.clone(), pending) {
            Some(expired) => {
                inner.metrics.tickets_expired.inc_by(expired as u64);
                Ok(HandoverResponse {
                    ticket: ticket.into_bytes(),
                })
            }
            None => {
                if request.reserve_slots > 0 {
                    inner
                        .leases
                        .release(std::slice::from_ref(&request.lease_id));
                }
                Err(AgentError::NoTaskManager(format!(
                    "taskmanager {} holds too many unfetched results",
                    inner.node_id
                )))
            }
        }
    }

    /// Takes a hand-over: reserves its slots first when it says so (and gives them back if
    /// anything after fails), adopts its lease and decodes its plan, ready to run.
    pub(super) fn take_over(
        &self,
        request: &HandoverRequest,
        trace: TraceContext,
    ) -> Result<PendingQuery, AgentError> {
        let head_url = Url::parse(&request.head_url)
            .map_err(|error| AgentError::BadRequest(format!("head url: {error}")))?;
        let worker_urls = request
            .worker_urls
            .iter()
            .map(|url| Url::parse(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| AgentError::BadRequest(format!("worker url: {error}")))?;
        if request.reserve_slots == 0 {
            return self.adopt_and_decode(request, head_url, worker_urls, trace);
        }
        self.reserve(
            &request.lease_id,
            &request.query_id,
            &request.holder,
            request.reserve_slots,
            request.lease_ttl_ms,
        )?;
        // Reserved here: any failure from now on gives the slots back.
        let taken = self.adopt_and_decode(request, head_url, worker_urls, trace);
        if taken.is_err() {
            self.inner
                .leases
                .release(std::slice::from_ref(&request.lease_id));
        }
        taken
    }

    /// Reserves `slots` under `lease_id`, unless draining or short of free slots.
    fn reserve(
        &self,
        lease_id: &str,
        query_id: &str,
        holder: &str,
        slots: u64,
        ttl_ms: u64,
    ) -> Result<u64, AgentError> {
        let inner = &self.inner;
        if inner.drain.is_draining() {
            return Err(AgentError::ClusterBusy(format!(
                "taskmanager {} is draining",
                inner.node_id
            )));
        }
        let ttl = Duration::from_millis(ttl_ms.clamp(100, 600_000));
        inner
            .leases
            .reserve(lease_id, query_id, holder, slots, ttl)
            .map_err(|free| {
                AgentError::ClusterBusy(format!(
                    "taskmanager {} has {free} free slots, {slots} asked",
                    inner.node_id
                ))
            })
    }

    /// Adopts the query's lease and decodes its plan.
    fn adopt_and_decode(
        &self,
        request: &HandoverRequest,
        head_url: Url,
        worker_urls: Vec<Url>,
        trace: TraceContext,
    ) -> Result<PendingQuery, AgentError> {
        let inner = &self.inner;
        if !inner.leases.adopt(&request.lease_id, inner.fetch_window) {
            return Err(AgentError::NoLease(format!(
                "lease `{}` of query {} is not held by taskmanager {}",
                request.lease_id, request.query_id, inner.node_id
            )));
        }
        let base = &inner.base_state;
        let mut config = head_session_config(
            base.config().clone(),
            worker_urls,
            &inner.worker,
            head_url,
            StageHeaders {
                lease_id: &request.lease_id,
                query_id: &request.query_id,
                trace,
            },
            &inner.channels,
        )?;
        let options = config.options_mut();
        for (key, value) in &request.options {
            if let Err(error) = options.set(key, value) {
                tracing::debug!(%key, %error, "planning option not applied on the head");
            }
        }
        // Straight from the base session's registries: no copy of the whole session.
        let task_ctx = Arc::new(TaskContext::new(
            None,
            request.query_id.clone(),
            config,
            base.scalar_functions().clone(),
            base.higher_order_functions().clone(),
            base.aggregate_functions().clone(),
            base.window_functions().clone(),
            inner
                .query_memory
                .runtime(&request.query_id)
                .map_err(AgentError::DataFusion)?,
        ));
        // The shard encoded this plan, so a plan that does not decode is the cluster's failure,
        // never the SQL's; but one naming a store this TaskManager may not read is refused.
        let plan = decode_plan(&request.plan, &task_ctx)
            .and_then(restamp_stages)
            .map_err(|error| match crate::error::datafusion_code(&error) {
                flotilla_protocol::ErrorCode::NotAllowed => AgentError::DataFusion(error),
                _ => AgentError::Internal(format!(
                    "taskmanager {} cannot decode the plan: {}",
                    inner.node_id,
                    crate::error::root_message(&error)
                )),
            })?;
        let lease = QueryLease {
            lease_id: request.lease_id.clone(),
            holders: request.worker_urls.clone(),
            head_url: request.head_url.clone(),
            ttl: Duration::from_millis(request.lease_ttl_ms.clamp(300, 600_000)),
        };
        inner.metrics.handovers.inc();
        Ok(PendingQuery::new(
            request.query_id.clone(),
            plan,
            task_ctx,
            lease,
        ))
    }
}
