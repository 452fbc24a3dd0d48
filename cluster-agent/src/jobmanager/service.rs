//! The shard's Flight service: `GetFlightInfo(sql)` → plan → hand over → `FlightInfo(ticket,
//! TaskManager)`.

use super::leasing::{Leased, SlotLeaser, TaskManagers};
use super::metrics::JobManagerMetrics;
use super::planner::{PlannedQuery, Planner};
use crate::config::{Config, Role};
use crate::error::AgentError;
use crate::flight_clients::{CURRENT_TRACE, call_action, incoming_trace};
use crate::handover::{HANDOVER_ACTION, HandoverRequest, HandoverResponse};
use crate::node::{Drain, Lifecycle, NodeHandle, NodeListeners, Views, serve_node};
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use flotilla_protocol::{ErrorBody, ErrorCode, NodeInfo, NodeLoad, NodeRole, QueryCommand};
use futures::stream::BoxStream;
use gateway::{Gossip, GossipMembership, StaticMembership};
use prometheus::Registry;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    leaser: Arc<SlotLeaser>,
    metrics: JobManagerMetrics,
    drain: Drain,
}

/// Starts a shard on the configured addresses, joins gossip, and returns its handle.
pub async fn start_jobmanager(config: Config, registry: Registry) -> anyhow::Result<NodeHandle> {
    let section = &config.jobmanager;
    config.catalog.validate().map_err(anyhow::Error::msg)?;
    config.cluster.warn_if_open();
    // Read once (it loads the internal TLS files); every internal caller and check clones it.
    let secret = config.cluster.secret();
    if section.taskmanagers_per_query == 0 || section.slots_per_query == 0 {
        anyhow::bail!("jobmanager.taskmanagers_per_query and slots_per_query must be at least 1");
    }
    let listeners =
        NodeListeners::bind(Role::JobManager, section.listen, section.admin_listen).await?;
    let node_id = config.node_id(Role::JobManager);
    let metrics = JobManagerMetrics::new(&registry)?;
    let in_flight = metrics.in_flight.clone();
    let gossip_discovery = section.taskmanagers.is_empty();
    let gossip = Gossip::start(
        config.cluster.gossip(&config.gossip),
        NodeInfo {
            // Gateways send it nothing until it knows a TaskManager to run queries on.
            starting: gossip_discovery,
            ..listeners.node_info(node_id.clone(), Role::JobManager, None, &config.cluster)
        },
        Arc::new(move || NodeLoad {
            in_flight: in_flight.get().max(0) as u64,
            ..NodeLoad::default()
        }),
    )
    .await?;
    let taskmanagers = if gossip_discovery {
        gateway::spawn_instrumented(announce_ready(
            gossip.clone(),
            Duration::from_millis(section.startup_wait_ms),
        ));
        TaskManagers::Gossip(GossipMembership::new(gossip.clone(), NodeRole::TaskManager))
    } else {
        let membership = StaticMembership::new(section.taskmanagers.clone());
        membership.spawn_prober(Duration::from_millis(section.probe_interval_ms.max(10)));
        TaskManagers::Static(membership)
    };
    let planner = Planner::new(&config.catalog, section).await?;
    let jobmanager = JobManager {
        inner: Arc::new(Inner {
            node_id: node_id.clone(),
            planner,
            leaser: Arc::new(SlotLeaser::new(
                node_id,
                taskmanagers,
                section.clone(),
                metrics.clone(),
                secret.clone(),
            )),
            metrics,
            drain: Drain::default(),
        }),
    };
    let router = crate::node::grpc_server(&config.cluster)?.add_service(
        FlightServiceServer::with_interceptor(jobmanager.clone(), secret.clone()),
    );
    let state_view = jobmanager.clone();
    let in_flight = jobmanager.inner.metrics.in_flight.clone();
    let lifecycle = Lifecycle {
        drain: jobmanager.inner.drain.clone(),
        idle: Arc::new(move || in_flight.get() <= 0),
        drain_timeout: Duration::from_millis(config.node.drain_timeout_ms),
        secret: secret.clone(),
    };
    serve_node(
        Role::JobManager,
        listeners,
        gossip,
        router,
        registry,
        Views {
            state: Arc::new(move || state_view.state_json()),
            refresh: Arc::new(|| {}),
        },
        lifecycle,
    )
    .await
}

/// Announces the shard ready once gossip shows it a TaskManager, or after `wait` anyway (its
/// queries then fail with `no_taskmanager`, which says more than no shard at all).
async fn announce_ready(gossip: Gossip, wait: Duration) {
    let started = Instant::now();
    let mut view = gossip.subscribe();
    let seen = tokio::time::timeout(
        wait,
        view.wait_for(|peers| {
            peers.iter().any(|peer| {
                peer.info.role == NodeRole::TaskManager
                    && !peer.info.draining
                    && !peer.info.starting
            })
        }),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    gossip.set_ready().await;
    tracing::info!(
        taskmanager_seen = seen,
        waited_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
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
            "taskmanagers": inner.leaser.membership().members(),
        })
    }

    /// Plans a query, leases slots for it, and hands it to one of the leased TaskManagers.
    ///
    /// The plan is sized for the TaskManagers the query could use; slots are then leased only
    /// on as many as its widest stage runs tasks on (one for a single-stage query). Records
    /// each step's time on the current `plan` span.
    async fn plan_and_hand_over(&self, command: &QueryCommand) -> Result<FlightInfo, AgentError> {
        let inner = &self.inner;
        let mut step = Instant::now();
        let logical = inner.planner.prepare(&command.sql).await?;
        record_step("prepare_us", &mut step);
        let targets = inner.leaser.planning_targets(&command.pool);
        let planned = if targets.is_empty() {
            None // Leasing says why: no TaskManager of the pool is up.
        } else {
            Some(inner.planner.plan(&logical, &targets).await?)
        };
        record_step("plan_us", &mut step);
        let want = planned.as_ref().map_or(1, |planned| planned.width);
        if let (1, Some(planned)) = (want, &planned)
            && let Some(info) = self.hand_over_reserving(command, planned).await?
        {
            record_step("handover_us", &mut step);
            return Ok(info);
        }
        let mut guard = LeaseGuard {
            leaser: Arc::clone(&inner.leaser),
            leased: inner.leaser.lease(command, want).await?,
            armed: true,
        };
        record_step("lease_us", &mut step);
        let planned = match planned {
            Some(planned) => planned,
            // TaskManagers showed up while the query waited for them.
            None => inner.planner.plan(&logical, &guard.leased.holders).await?,
        };
        let result = self.hand_over_leased(command, planned, &guard.leased).await;
        // From a successful hand-over on, the head TaskManager owns the lease.
        guard.armed = result.is_err();
        result
    }

    /// Hands a query that runs on one TaskManager over with a reservation: one round trip
    /// instead of two. None when there is no candidate or it has no free slot (the caller
    /// then leases, queueing if need be).
    async fn hand_over_reserving(
        &self,
        command: &QueryCommand,
        planned: &PlannedQuery,
    ) -> Result<Option<FlightInfo>, AgentError> {
        let leaser = &self.inner.leaser;
        let Some((head, lease_id, slots)) = leaser.solo_head(&command.pool) else {
            return Ok(None);
        };
        let workers = [head.clone()];
        let request = HandoverRequest {
            reserve_slots: slots,
            holder: leaser.node_id().to_string(),
            ..self.handover_request(command, planned, &head, &workers, &lease_id)
        };
        // Dropped mid-call (the gateway gave up): release what the head may have reserved.
        let mut guard = LeaseGuard {
            leaser: Arc::clone(leaser),
            leased: Leased {
                lease_id,
                holders: vec![head.clone()],
            },
            armed: true,
        };
        match self.send_handover(&head, &request).await {
            Ok(response) => {
                guard.armed = false;
                // The slots were free at once: this query waited for none.
                self.inner.metrics.lease_wait_seconds.observe(0.0);
                Ok(Some(flight_info(response, &head)))
            }
            Err(error) if error.code == ErrorCode::ClusterBusy => {
                guard.armed = false;
                leaser.count_refused();
                Ok(None)
            }
            Err(error) if error.code == ErrorCode::Unavailable => {
                leaser.mark_down(&head, &error.message);
                Ok(None)
            }
            Err(error) => {
                // The head gave back what it reserved before it answered.
                guard.armed = false;
                Err(body_to_error(error))
            }
        }
    }

    /// The hand-over of `planned` to `head`, under a lease held on `workers`.
    fn handover_request(
        &self,
        command: &QueryCommand,
        planned: &PlannedQuery,
        head: &str,
        workers: &[String],
        lease_id: &str,
    ) -> HandoverRequest {
        HandoverRequest {
            query_id: command.query_id.to_string(),
            plan: planned.plan.clone(),
            options: planned.options.clone(),
            worker_urls: workers.to_vec(),
            head_url: head.to_string(),
            lease_id: lease_id.to_string(),
            lease_ttl_ms: self.inner.leaser.lease_ttl_ms(),
            reserve_slots: 0,
            holder: String::new(),
        }
    }

    /// Sends a hand-over to `head` and decodes its answer.
    async fn send_handover(
        &self,
        head: &str,
        request: &HandoverRequest,
    ) -> Result<HandoverResponse, ErrorBody> {
        let span =
            tracing::info_span!("handover", taskmanager = %head, reserve = request.reserve_slots);
        call_action(
            self.inner.leaser.peers(),
            head,
            HANDOVER_ACTION,
            request.encode_to_vec(),
        )
        .instrument(span)
        .await
        .and_then(decode_handover)
    }

    async fn hand_over_leased(
        &self,
        command: &QueryCommand,
        planned: PlannedQuery,
        leased: &Leased,
    ) -> Result<FlightInfo, AgentError> {
        let mut step = Instant::now();
        let mut last_error = None;
        for head in &leased.holders {
            let request =
                self.handover_request(command, &planned, head, &leased.holders, &leased.lease_id);
            match self.send_handover(head, &request).await {
                Ok(response) => {
                    record_step("handover_us", &mut step);
                    return Ok(flight_info(response, head));
                }
                Err(error) if error.code == ErrorCode::Unavailable => {
                    tracing::warn!(taskmanager = %head, error = %error.message, "hand-over failed, trying the next taskmanager");
                    self.inner.leaser.mark_down(head, &error.message);
                    self.inner.metrics.handover_retries.inc();
                    last_error = Some(error.message);
                }
                Err(error) => return Err(body_to_error(error)),
            }
        }
        Err(AgentError::NoTaskManager(last_error.unwrap_or_default()))
    }
}

fn decode_handover(body: bytes::Bytes) -> Result<HandoverResponse, ErrorBody> {
    HandoverResponse::decode(body)
        .map_err(|error| ErrorBody::new(ErrorCode::Internal, format!("hand-over answer: {error}")))
}

/// Where the gateway fetches a handed-over query's result: the head, with its ticket.
fn flight_info(response: HandoverResponse, head: &str) -> FlightInfo {
    let endpoint = FlightEndpoint::new()
        .with_ticket(Ticket::new(response.ticket))
        .with_location(head.to_string());
    FlightInfo::new().with_endpoint(endpoint)
}

/// Records the time since `step` as `field` of the current span, and restarts `step`.
fn record_step(field: &'static str, step: &mut Instant) {
    tracing::Span::current().record(field, step.elapsed().as_micros() as u64);
    *step = Instant::now();
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

/// Returns a query's slots unless its hand-over succeeded: on an error, and also when the
/// gateway gives up on the call (cancel, timeout, disconnect) and tonic drops this future.
struct LeaseGuard {
    leaser: Arc<SlotLeaser>,
    leased: Leased,
    armed: bool,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.armed {
            self.leaser.release(&self.leased);
        }
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
        let trace = incoming_trace(request.metadata());
        let descriptor = request.into_inner();
        if self.inner.drain.is_draining() {
            // A bare status reads as a transport failure: the gateway marks this shard down
            // and runs the query on the next one.
            return Err(Status::unavailable(format!(
                "shard {} is draining",
                self.inner.node_id
            )));
        }
        let command = QueryCommand::from_bytes(&descriptor.cmd)
            .map_err(|error| AgentError::BadRequest(format!("query command: {error}")))?;
        let metrics = &self.inner.metrics;
        metrics.in_flight.inc();
        let _in_flight = InFlightGuard(metrics.in_flight.clone());
        let started = Instant::now();
        let span = tracing::info_span!(
            "plan",
            query_id = %command.query_id,
            trace_id = %trace.trace_id(),
            prepare_us = tracing::field::Empty,
            lease_us = tracing::field::Empty,
            plan_us = tracing::field::Empty,
            handover_us = tracing::field::Empty,
        );
        let result = CURRENT_TRACE
            .scope(trace, self.plan_and_hand_over(&command))
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
