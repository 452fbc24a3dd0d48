//! The shard's Flight service: `GetFlightInfo(sql)` → plan → hand over → `FlightInfo(ticket,
//! TaskManager)`.

use super::metrics::JobManagerMetrics;
use super::planner::{PlannedQuery, Planner};
use crate::config::{Config, JobManagerConfig, Role};
use crate::error::AgentError;
use crate::flight_clients::{FlightClients, call_action};
use crate::handover::{HANDOVER_ACTION, HandoverRequest, HandoverResponse};
use crate::lease::{LeaseIds, RELEASE_ACTION, RESERVE_ACTION, ReserveRequest};
use crate::node::{NodeHandle, NodeListeners, serve_node};
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use flotilla_protocol::{DEFAULT_POOL, ErrorBody, ErrorCode, NodeLoad, NodeRole, QueryCommand};
use futures::stream::BoxStream;
use gateway::{Gossip, GossipMembership, Membership, StaticMembership};
use prometheus::Registry;
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// A JobManager shard.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    planner: Planner,
    taskmanagers: TaskManagers,
    peers: FlightClients,
    config: JobManagerConfig,
    /// Queries waiting for free slots now.
    waiting: AtomicUsize,
    /// Signalled when this shard releases slots, so its queued queries retry at once.
    released: Notify,
    metrics: JobManagerMetrics,
}

/// Where the shard finds TaskManagers: a fixed list, or gossip (with pools and free slots).
enum TaskManagers {
    Static(Arc<StaticMembership>),
    Gossip(GossipMembership),
}

/// A TaskManager a query could lease slots on.
struct Candidate {
    url: String,
    /// Free slots as last gossiped; unknown for a fixed list.
    slots_free: Option<u64>,
}

/// Slots a query holds: one lease id, on each of `holders`.
struct Leased {
    lease_id: String,
    holders: Vec<String>,
}

/// Starts a shard on the configured addresses, joins gossip, and returns its handle.
pub async fn start_jobmanager(config: Config, registry: Registry) -> anyhow::Result<NodeHandle> {
    let section = &config.jobmanager;
    config.catalog.validate().map_err(anyhow::Error::msg)?;
    if section.taskmanagers_per_query == 0 || section.slots_per_query == 0 {
        anyhow::bail!("jobmanager.taskmanagers_per_query and slots_per_query must be at least 1");
    }
    let listeners =
        NodeListeners::bind(Role::JobManager, section.listen, section.admin_listen).await?;
    let node_id = config.node_id(Role::JobManager);
    let metrics = JobManagerMetrics::new(&registry)?;
    let in_flight = metrics.in_flight.clone();
    let gossip = Gossip::start(
        config.gossip.clone(),
        listeners.node_info(node_id.clone(), Role::JobManager, None),
        Arc::new(move || NodeLoad {
            in_flight: in_flight.get().max(0) as u64,
            ..NodeLoad::default()
        }),
    )
    .await?;
    let taskmanagers = if section.taskmanagers.is_empty() {
        TaskManagers::Gossip(GossipMembership::new(gossip.clone(), NodeRole::TaskManager))
    } else {
        let membership = StaticMembership::new(section.taskmanagers.clone());
        membership.spawn_prober(Duration::from_millis(section.probe_interval_ms.max(10)));
        TaskManagers::Static(membership)
    };
    let planner = Planner::new(&config.catalog, section).await?;
    let jobmanager = JobManager {
        inner: Arc::new(Inner {
            node_id,
            planner,
            taskmanagers,
            peers: FlightClients::new(Duration::from_millis(section.handover_timeout_ms)),
            config: section.clone(),
            waiting: AtomicUsize::new(0),
            released: Notify::new(),
            metrics,
        }),
    };
    let router = tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(jobmanager.clone()));
    let state_view = jobmanager.clone();
    serve_node(
        Role::JobManager,
        listeners,
        gossip,
        router,
        registry,
        Arc::new(move || state_view.state_json()),
        Arc::new(|| {}),
    )
    .await
}

// === impl TaskManagers ===

impl TaskManagers {
    /// Returns the TaskManagers of `pool` that take work now.
    fn candidates(&self, pool: &str) -> Vec<Candidate> {
        match self {
            Self::Static(membership) if pool == DEFAULT_POOL => membership
                .healthy()
                .into_iter()
                .map(|url| Candidate {
                    url,
                    slots_free: None,
                })
                .collect(),
            Self::Static(_) => Vec::new(),
            Self::Gossip(membership) => membership
                .serving_peers()
                .into_iter()
                .filter(|peer| peer.info.pool.as_deref().unwrap_or(DEFAULT_POOL) == pool)
                .filter_map(|peer| {
                    Some(Candidate {
                        url: peer.info.grpc_url?,
                        slots_free: Some(peer.load.slots_free),
                    })
                })
                .collect(),
        }
    }

    fn membership(&self) -> &dyn Membership {
        match self {
            Self::Static(membership) => membership.as_ref(),
            Self::Gossip(membership) => membership,
        }
    }
}

/// Orders candidates by power of two choices: repeatedly sample two of those left and take
/// the one with more free slots. Spreads load without any process seeing every decision.
fn power_of_two_order(mut left: Vec<Candidate>, mut random: impl FnMut() -> usize) -> Vec<String> {
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let first = random() % left.len();
        let second = random() % left.len();
        let free = |index: usize| left[index].slots_free.unwrap_or(u64::MAX);
        let chosen = if free(second) > free(first) {
            second
        } else {
            first
        };
        ordered.push(left.swap_remove(chosen).url);
    }
    ordered
}

// === impl JobManager ===

impl JobManager {
    fn state_json(&self) -> serde_json::Value {
        let inner = &self.inner;
        serde_json::json!({
            "id": inner.node_id,
            "in_flight": inner.metrics.in_flight.get(),
            "queued": inner.metrics.queued.get(),
            "queries_planned": inner.metrics.queries_planned.get(),
            "response_bytes": inner.metrics.response_bytes.get(),
            "taskmanagers": inner.taskmanagers.membership().members(),
        })
    }

    /// Plans a query, leases slots for it, and hands it to one of the leased TaskManagers.
    async fn plan_and_hand_over(&self, command: &QueryCommand) -> Result<FlightInfo, AgentError> {
        let logical = self.inner.planner.prepare(&command.sql).await?;
        let leased = self.lease(command).await?;
        let result = self.hand_over_leased(command, &logical, &leased).await;
        if result.is_err() {
            self.release(&leased);
        }
        result
    }

    async fn hand_over_leased(
        &self,
        command: &QueryCommand,
        logical: &datafusion::logical_expr::LogicalPlan,
        leased: &Leased,
    ) -> Result<FlightInfo, AgentError> {
        let PlannedQuery { plan, options } =
            self.inner.planner.plan(logical, &leased.holders).await?;
        let mut last_error = None;
        for head in &leased.holders {
            let request = HandoverRequest {
                query_id: command.query_id.to_string(),
                plan: plan.clone(),
                options: options.clone(),
                worker_urls: leased.holders.clone(),
                head_url: head.clone(),
                lease_id: leased.lease_id.clone(),
                lease_ttl_ms: self.inner.config.lease_ttl_ms,
            };
            let span = tracing::info_span!("handover", taskmanager = %head);
            match call_action(
                &self.inner.peers,
                head,
                HANDOVER_ACTION,
                request.encode_to_vec(),
            )
            .instrument(span)
            .await
            .and_then(|body| {
                HandoverResponse::decode(body).map_err(|error| {
                    ErrorBody::new(ErrorCode::Internal, format!("hand-over answer: {error}"))
                })
            }) {
                Ok(response) => {
                    let endpoint = FlightEndpoint::new()
                        .with_ticket(Ticket::new(response.ticket))
                        .with_location(head.clone());
                    return Ok(FlightInfo::new().with_endpoint(endpoint));
                }
                Err(error) if error.code == ErrorCode::Unavailable => {
                    tracing::warn!(taskmanager = %head, error = %error.message, "hand-over failed, trying the next taskmanager");
                    self.inner
                        .taskmanagers
                        .membership()
                        .mark_down(head, &error.message);
                    self.inner.metrics.handover_retries.inc();
                    last_error = Some(error.message);
                }
                Err(error) => return Err(body_to_error(error)),
            }
        }
        Err(AgentError::NoTaskManager(last_error.unwrap_or_default()))
    }

    /// Reserves slots for a query on up to `taskmanagers_per_query` TaskManagers of its pool,
    /// waiting in the bounded queue while none is free.
    async fn lease(&self, command: &QueryCommand) -> Result<Leased, AgentError> {
        let inner = &self.inner;
        let started = Instant::now();
        let max_wait = Duration::from_millis(inner.config.queue_max_wait_ms);
        let lease_id = uuid::Uuid::new_v4().simple().to_string();
        let mut queued: Option<Queued<'_>> = None;
        loop {
            let candidates = inner.taskmanagers.candidates(&command.pool);
            if candidates.is_empty() {
                return Err(AgentError::NoTaskManager(format!(
                    "no taskmanager of pool `{}` is up",
                    command.pool
                )));
            }
            let holders = self.reserve_on(command, &lease_id, candidates).await;
            if !holders.is_empty() {
                inner
                    .metrics
                    .lease_wait_seconds
                    .observe(started.elapsed().as_secs_f64());
                return Ok(Leased { lease_id, holders });
            }
            if queued.is_none() {
                if inner.waiting.load(Ordering::Acquire) >= inner.config.queue_length {
                    return Err(AgentError::ClusterBusy(format!(
                        "no free slot in pool `{}` and {} queries already wait",
                        command.pool, inner.config.queue_length
                    )));
                }
                queued = Some(Queued::enter(inner));
            }
            let Some(left) = max_wait.checked_sub(started.elapsed()) else {
                return Err(AgentError::ClusterBusy(format!(
                    "no free slot in pool `{}` within {} ms",
                    command.pool, inner.config.queue_max_wait_ms
                )));
            };
            // Slots freed by this shard wake the queue at once; others show up on the poll.
            let _ = tokio::time::timeout(
                left.min(Duration::from_millis(20)),
                inner.released.notified(),
            )
            .await;
        }
    }

    /// Tries candidates in power-of-two order until the query holds `taskmanagers_per_query`
    /// leases; returns the TaskManagers that granted one.
    async fn reserve_on(
        &self,
        command: &QueryCommand,
        lease_id: &str,
        candidates: Vec<Candidate>,
    ) -> Vec<String> {
        let inner = &self.inner;
        let want = inner.config.taskmanagers_per_query.min(candidates.len());
        let mut seed = uuid::Uuid::new_v4().as_u128();
        let random = move || {
            seed = seed.rotate_left(17) ^ (seed >> 7);
            seed as usize
        };
        let request = ReserveRequest {
            lease_id: lease_id.to_string(),
            query_id: command.query_id.to_string(),
            slots: inner.config.slots_per_query,
            ttl_ms: inner.config.lease_ttl_ms,
            holder: inner.node_id.clone(),
        }
        .encode_to_vec();
        let mut holders = Vec::with_capacity(want);
        for url in power_of_two_order(candidates, random) {
            if holders.len() == want {
                break;
            }
            match call_action(&inner.peers, &url, RESERVE_ACTION, request.clone()).await {
                Ok(_) => holders.push(url),
                Err(error) if error.code == ErrorCode::ClusterBusy => {
                    inner.metrics.leases_refused.inc();
                }
                Err(error) if error.code == ErrorCode::Unavailable => {
                    inner
                        .taskmanagers
                        .membership()
                        .mark_down(&url, &error.message);
                }
                Err(error) => {
                    tracing::warn!(taskmanager = %url, code = %error.code, error = %error.message, "lease reservation failed");
                }
            }
        }
        holders
    }

    /// Returns a query's slots when it fails before its hand-over (after it, the head does).
    fn release(&self, leased: &Leased) {
        let jobmanager = self.clone();
        let body = LeaseIds {
            lease_ids: vec![leased.lease_id.clone()],
            ttl_ms: 0,
        }
        .encode_to_vec();
        let holders = leased.holders.clone();
        gateway::spawn_instrumented(async move {
            for url in holders {
                if let Err(error) =
                    call_action(&jobmanager.inner.peers, &url, RELEASE_ACTION, body.clone()).await
                {
                    tracing::warn!(taskmanager = %url, error = %error.message, "lease release failed; it expires by TTL");
                }
            }
            jobmanager.inner.released.notify_waiters();
        });
    }
}

/// Counts a query in the slot queue while it waits.
struct Queued<'a>(&'a Inner);

impl<'a> Queued<'a> {
    fn enter(inner: &'a Inner) -> Self {
        inner.waiting.fetch_add(1, Ordering::AcqRel);
        inner.metrics.queued.inc();
        Self(inner)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queued.dec();
    }
}

/// Rebuilds an error received from a TaskManager so that it keeps its code.
fn body_to_error(body: ErrorBody) -> AgentError {
    match body.code {
        ErrorCode::SqlSyntax => AgentError::SqlSyntax(body.message),
        ErrorCode::SqlPlanning => AgentError::SqlPlanning(body.message),
        ErrorCode::BadRequest => AgentError::BadRequest(body.message),
        ErrorCode::Unavailable => AgentError::NoTaskManager(body.message),
        ErrorCode::ClusterBusy => AgentError::ClusterBusy(body.message),
        _ => AgentError::Internal(format!("{}: {}", body.code, body.message)),
    }
}

/// Decrements the in-flight gauge however planning ends.
struct InFlightGuard(prometheus::IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// === impl FlightService for JobManager ===

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

#[async_trait]
impl FlightService for JobManager {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let command = QueryCommand::from_bytes(&descriptor.cmd)
            .map_err(|error| AgentError::BadRequest(format!("query command: {error}")))?;
        let metrics = &self.inner.metrics;
        metrics.in_flight.inc();
        let _in_flight = InFlightGuard(metrics.in_flight.clone());
        let started = Instant::now();
        let span = tracing::info_span!("plan", query_id = %command.query_id);
        let result = self
            .plan_and_hand_over(&command)
            .instrument(span.clone())
            .await;
        metrics
            .planning_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(info) => {
                metrics.queries_planned.inc();
                let info = info.with_descriptor(descriptor);
                metrics.response_bytes.inc_by(info.encoded_len() as u64);
                tracing::info!(parent: &span, elapsed_us = started.elapsed().as_micros() as u64, "query handed over");
                Ok(Response::new(info))
            }
            Err(error) => {
                let code = error.code();
                metrics
                    .queries_failed
                    .with_label_values(&[code.as_str()])
                    .inc();
                tracing::info!(parent: &span, %code, error = %error, "query refused");
                Err(error.into())
            }
        }
    }

    async fn do_get(
        &self,
        _request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        Err(Status::unimplemented(
            "results are served by taskmanagers, not by shards",
        ))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("do_put"))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_of_two_prefers_free_slots_and_keeps_everyone() {
        let candidates = |free: &[u64]| {
            free.iter()
                .enumerate()
                .map(|(index, free)| Candidate {
                    url: format!("tm{index}"),
                    slots_free: Some(*free),
                })
                .collect::<Vec<_>>()
        };
        // Samples 0 and 1 first: the freer wins.
        let mut picks = [0usize, 1, 0, 0].into_iter();
        let order = power_of_two_order(candidates(&[0, 3]), move || picks.next().unwrap());
        assert_eq!(order, vec!["tm1", "tm0"]);
        let mut counter = 0usize;
        let order = power_of_two_order(candidates(&[1, 2, 3, 4, 5]), move || {
            counter += 7;
            counter
        });
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, vec!["tm0", "tm1", "tm2", "tm3", "tm4"]);
    }
}
