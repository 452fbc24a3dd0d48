//! The TaskManager's gRPC services: the datafusion-distributed worker for plan stages, and a
//! Flight service for hand-overs (`DoAction`) and results (`DoGet`), on one port.

use super::keeper::keep_leases;
use super::leases::LeaseTable;
use super::metrics::TaskManagerMetrics;
use super::query_memory::QueryMemory;
use super::results::{ResultStream, StreamingGuard, flight_result};
use super::running::CountTasks;
use super::sessions::{StageHeaders, WorkerSessions, head_session_config};
use super::tickets::{PendingQuery, QueryLease, TicketStore};
use crate::codec::decode_plan;
use crate::config::{Config, Role};
use crate::error::AgentError;
use crate::flight_clients::{ClusterChannels, FlightClients, incoming_trace};
use crate::handover::{HANDOVER_ACTION, HandoverRequest, HandoverResponse};
use crate::lease::{
    LeaseIds, RELEASE_ACTION, RENEW_ACTION, RESERVE_ACTION, RenewResponse, ReserveRequest,
    ReserveResponse,
};
use crate::node::{Drain, Lifecycle, NodeHandle, NodeListeners, Views, serve_node};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder, TaskContext};
use datafusion_distributed::Worker;
use flotilla_protocol::{NodeLoad, TraceContext};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use gateway::{ClusterSecret, Gossip};
use prometheus::Registry;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};
use url::Url;

/// A TaskManager: its worker, its memory pool and the plans it heads.
#[derive(Clone)]
pub struct TaskManager {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    runtime: Arc<RuntimeEnv>,
    /// Each query's share of `runtime`'s memory pool.
    query_memory: Arc<QueryMemory>,
    worker: Worker,
    /// A session with every built-in function; cloned for each handed-over query.
    base_state: SessionState,
    tickets: TicketStore,
    metrics: TaskManagerMetrics,
    leases: Arc<LeaseTable>,
    peers: Arc<FlightClients>,
    pool: String,
    drain: Drain,
    /// Carried by this head's stage tasks to the TaskManagers running them.
    secret: ClusterSecret,
    /// Stage calls' channels, with internal TLS (else datafusion-distributed's own).
    channels: Option<ClusterChannels>,
}

/// Starts a TaskManager on the configured addresses, joins gossip, and returns its handle.
pub async fn start_taskmanager(config: Config, registry: Registry) -> anyhow::Result<NodeHandle> {
    let section = &config.taskmanager;
    config.cluster.warn_if_open();
    if section.slots == 0 {
        anyhow::bail!("taskmanager.slots must be at least 1");
    }
    let metrics = TaskManagerMetrics::new(&registry)?;
    let memory_limit = usize::try_from(section.memory_limit_mb.saturating_mul(1024 * 1024))?;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit, 1.0)
        .build_arc()?;
    let roots = config.catalog.roots().map_err(anyhow::Error::msg)?;
    crate::files::confine_local_files(&runtime, &roots)?;
    let query_memory_limit = match section.query_memory_limit_mb {
        0 => memory_limit / 2,
        mib => usize::try_from(mib.saturating_mul(1024 * 1024))?.min(memory_limit),
    };
    let query_memory = Arc::new(QueryMemory::new(Arc::clone(&runtime), query_memory_limit));
    metrics.slots.set(i64::try_from(section.slots)?);
    metrics.memory_limit.set(i64::try_from(memory_limit)?);
    let leases = Arc::new(LeaseTable::new(section.slots as u64));
    // Read once (it loads the internal TLS files); every internal caller and check clones it.
    let secret = config.cluster.secret();
    let channels = secret
        .has_tls()
        .then(|| ClusterChannels::new(secret.clone()));
    let worker = Worker::from_session_builder(WorkerSessions {
        leases: Arc::clone(&leases),
        metrics: metrics.clone(),
        query_memory: Arc::clone(&query_memory),
        channels: channels.clone(),
    })
    .with_runtime_env(Arc::clone(&runtime));
    let base_state = SessionStateBuilder::new()
        .with_default_features()
        .with_runtime_env(Arc::clone(&runtime))
        .build();
    let node_id = config.node_id(Role::TaskManager);
    let taskmanager = TaskManager {
        inner: Arc::new(Inner {
            node_id: node_id.clone(),
            runtime,
            query_memory,
            worker: worker.clone(),
            base_state,
            tickets: TicketStore::new(
                Duration::from_secs(section.ticket_ttl_secs),
                section.max_pending_tickets,
            ),
            metrics,
            leases,
            peers: Arc::new(FlightClients::new(Duration::from_secs(5), secret.clone())),
            secret: secret.clone(),
            channels: channels.clone(),
            pool: section.pool.clone(),
            drain: Drain::default(),
        }),
    };
    let listeners =
        NodeListeners::bind(Role::TaskManager, section.listen, section.admin_listen).await?;
    let info = listeners.node_info(
        node_id,
        Role::TaskManager,
        Some(section.pool.clone()),
        &config.cluster,
    );
    let load_view = taskmanager.clone();
    let gossip = Gossip::start(
        config.cluster.gossip(&config.gossip),
        info,
        Arc::new(move || load_view.load()),
    )
    .await?;
    let router = crate::node::grpc_server(&config.cluster)?
        .add_service(InterceptedService::new(
            CountTasks::new(
                worker.into_worker_server(),
                taskmanager.inner.metrics.tasks_running.clone(),
            ),
            secret.clone(),
        ))
        .add_service(InterceptedService::new(
            FlightServiceServer::new(taskmanager.clone())
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024),
            secret.clone(),
        ));
    let state_view = taskmanager.clone();
    let metrics_view = taskmanager.clone();
    let idle_view = taskmanager.clone();
    let lifecycle = Lifecycle {
        drain: taskmanager.inner.drain.clone(),
        idle: Arc::new(move || idle_view.is_idle()),
        drain_timeout: Duration::from_millis(config.node.drain_timeout_ms),
        secret: secret.clone(),
    };
    serve_node(
        Role::TaskManager,
        listeners,
        gossip,
        router,
        registry,
        Views {
            state: Arc::new(move || state_view.state_json()),
            refresh: Arc::new(move || metrics_view.refresh_gauges()),
        },
        lifecycle,
    )
    .await
}

// === impl TaskManager ===

impl TaskManager {
    fn state_json(&self) -> serde_json::Value {
        let inner = &self.inner;
        serde_json::json!({
            "id": inner.node_id,
            "pool": inner.pool,
            "slots": inner.leases.stats(),
            "leases": inner.leases.list(100),
            "handovers_total": inner.metrics.handovers.get(),
            "tasks_total": inner.metrics.tasks.get(),
            "tasks_refused_total": inner.metrics.tasks_refused.get(),
            "tasks_running": inner.metrics.tasks_running.get(),
            "pending_tickets": inner.tickets.len(),
            "results_streaming": inner.metrics.results_streaming.get(),
            "memory_used_bytes": inner.runtime.memory_pool.reserved(),
            "memory_limit_bytes": inner.metrics.memory_limit.get(),
            "flight_bytes_sent": inner.metrics.flight_bytes_sent.get(),
        })
    }

    fn refresh_gauges(&self) {
        let (inner, metrics) = (&self.inner, &self.inner.metrics);
        let used = i64::try_from(inner.runtime.memory_pool.reserved()).unwrap_or(i64::MAX);
        metrics.memory_used.set(used);
        let slots = inner.leases.stats();
        metrics.slots_used.set(slots.slots_used as i64);
        metrics.leases_active.set(slots.leases_active as i64);
        super::metrics::catch_up(&metrics.leases_expired, slots.leases_expired_total);
        let disk = &inner.runtime.disk_manager;
        metrics
            .spill_bytes
            .set(i64::try_from(disk.used_disk_space()).unwrap_or(i64::MAX));
        metrics
            .spill_limit
            .set(i64::try_from(disk.max_temp_directory_size()).unwrap_or(i64::MAX));
    }

    /// Says whether nothing runs here: no lease (a query of any shard may still send tasks),
    /// no unfetched result, no result streaming. A draining TaskManager exits once idle.
    fn is_idle(&self) -> bool {
        let inner = &self.inner;
        inner.leases.stats().slots_used == 0
            && inner.tickets.len() == 0
            && inner.metrics.results_streaming.get() <= 0
            && inner.metrics.tasks_running.get() <= 0
    }

    /// The load published over gossip; also sweeps expired tickets (releasing their leases).
    fn load(&self) -> NodeLoad {
        let inner = &self.inner;
        let expired = inner.tickets.sweep();
        inner.metrics.tickets_expired.inc_by(expired as u64);
        let slots = inner.leases.stats();
        NodeLoad {
            in_flight: inner.metrics.results_streaming.get().max(0) as u64,
            slots_total: slots.slots_total,
            slots_free: slots.slots_total - slots.slots_used,
            memory_used_bytes: inner.runtime.memory_pool.reserved() as u64,
            memory_limit_bytes: inner.metrics.memory_limit.get().max(0) as u64,
        }
    }

    /// Answers the lease actions shards and head TaskManagers send.
    fn lease_action(&self, action: &Action) -> Result<Vec<u8>, AgentError> {
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
    fn accept_handover(
        &self,
        request: HandoverRequest,
        trace: TraceContext,
    ) -> Result<HandoverResponse, AgentError> {
        let inner = &self.inner;
        let head_url = Url::parse(&request.head_url)
            .map_err(|error| AgentError::BadRequest(format!("head url: {error}")))?;
        let worker_urls = request
            .worker_urls
            .iter()
            .map(|url| Url::parse(url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| AgentError::BadRequest(format!("worker url: {error}")))?;

        if request.reserve_slots > 0 {
            self.reserve(
                &request.lease_id,
                &request.query_id,
                &request.holder,
                request.reserve_slots,
                request.lease_ttl_ms,
            )?;
            // Reserved here: any failure from now on gives the slots back.
            let accepted = self.adopt_and_stage(&request, head_url, worker_urls, trace);
            if accepted.is_err() {
                inner
                    .leases
                    .release(std::slice::from_ref(&request.lease_id));
            }
            return accepted;
        }
        self.adopt_and_stage(&request, head_url, worker_urls, trace)
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

    /// Adopts the query's lease, decodes its plan and keeps it under a new ticket.
    fn adopt_and_stage(
        &self,
        request: &HandoverRequest,
        head_url: Url,
        worker_urls: Vec<Url>,
        trace: TraceContext,
    ) -> Result<HandoverResponse, AgentError> {
        let inner = &self.inner;
        if !inner.leases.adopt(&request.lease_id) {
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
                secret: &inner.secret,
            },
            inner.channels.as_ref(),
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
        let plan = decode_plan(&request.plan, &task_ctx)?;
        let ticket = format!("{}.{}", request.query_id, uuid::Uuid::new_v4().simple());
        let lease = QueryLease {
            lease_id: request.lease_id.clone(),
            holders: request.worker_urls.clone(),
            head_url: request.head_url.clone(),
            ttl: Duration::from_millis(request.lease_ttl_ms.clamp(300, 600_000)),
        };
        let pending = PendingQuery::new(request.query_id.clone(), plan, task_ctx, lease);
        match inner.tickets.insert(ticket.clone(), pending) {
            Some(expired) => {
                inner.metrics.tickets_expired.inc_by(expired as u64);
                inner.metrics.handovers.inc();
                Ok(HandoverResponse {
                    ticket: ticket.into_bytes(),
                })
            }
            None => Err(AgentError::NoTaskManager(format!(
                "taskmanager {} holds too many unfetched results",
                inner.node_id
            ))),
        }
    }
}

// === impl FlightService for TaskManager ===

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

#[async_trait]
impl FlightService for TaskManager {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let trace = incoming_trace(request.metadata());
        let ticket = String::from_utf8(request.into_inner().ticket.to_vec())
            .map_err(|_| AgentError::BadRequest("ticket is not UTF-8".into()))?;
        let pending = self
            .inner
            .tickets
            .take(&ticket)
            .ok_or_else(|| AgentError::TicketNotFound(ticket.clone()))?;
        let lease = pending.lease;
        if !self.inner.leases.is_valid(&lease.lease_id) {
            return Err(AgentError::TicketNotFound(format!(
                "{ticket} (its slot lease expired before the result was fetched)"
            ))
            .into());
        }
        // From the first fetch on, the head keeps the query's slots until the stream ends.
        let keep_alive = keep_leases(
            lease.lease_id,
            lease.holders,
            lease.head_url,
            lease.ttl,
            Arc::clone(&self.inner.leases),
            Arc::clone(&self.inner.peers),
        );
        let span = tracing::info_span!("result", query_id = %pending.query_id, trace_id = %trace.trace_id());
        let stream = span
            .in_scope(|| datafusion::physical_plan::execute_stream(pending.plan, pending.task_ctx))
            .map_err(AgentError::DataFusion)?;
        let metrics = self.inner.metrics.clone();
        metrics.tickets_served.inc();
        metrics.results_streaming.inc();
        let guard = StreamingGuard {
            streaming: metrics.results_streaming.clone(),
            span: span.clone(),
            started: std::time::Instant::now(),
            bytes: 0,
            outcome: "dropped",
        };
        let bytes_sent = metrics.flight_bytes_sent.clone();
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(stream.schema())
            .build(stream.map_err(|error| FlightError::ExternalError(Box::new(error))))
            .map(flight_result);
        let flight = ResultStream {
            inner: flight.boxed(),
            guard,
            bytes_sent,
            _keep_alive: keep_alive,
        };
        drop(span);
        Ok(Response::new(flight.boxed()))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let trace = incoming_trace(request.metadata());
        let action = request.into_inner();
        if matches!(
            action.r#type.as_str(),
            RESERVE_ACTION | RENEW_ACTION | RELEASE_ACTION
        ) {
            let body = self.lease_action(&action)?;
            let result = arrow_flight::Result { body: body.into() };
            return Ok(Response::new(futures::stream::iter([Ok(result)]).boxed()));
        }
        if action.r#type != HANDOVER_ACTION {
            return Err(Status::unimplemented(format!(
                "unknown action {}",
                action.r#type
            )));
        }
        let handover = HandoverRequest::decode(action.body)
            .map_err(|error| AgentError::BadRequest(format!("hand-over: {error}")))?;
        let span = tracing::info_span!("handover", query_id = %handover.query_id, trace_id = %trace.trace_id());
        let response = span.in_scope(|| self.accept_handover(handover, trace))?;
        tracing::debug!(parent: &span, "plan handed over");
        let result = arrow_flight::Result {
            body: response.encode_to_vec().into(),
        };
        Ok(Response::new(futures::stream::iter([Ok(result)]).boxed()))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let action = ActionType {
            r#type: HANDOVER_ACTION.to_string(),
            description: "keep a planned query under a ticket for DoGet".to_string(),
        };
        Ok(Response::new(futures::stream::iter([Ok(action)]).boxed()))
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

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "a taskmanager plans nothing; ask a jobmanager",
        ))
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

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}
