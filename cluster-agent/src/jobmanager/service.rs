//! The shard's Flight service: `GetFlightInfo(sql)` → plan → hand over → `FlightInfo(ticket,
//! TaskManager)`.

use super::metrics::JobManagerMetrics;
use super::planner::{PlannedQuery, Planner};
use crate::config::{Config, Role};
use crate::error::AgentError;
use crate::handover::{HANDOVER_ACTION, HandoverRequest, HandoverResponse};
use crate::node::{NodeHandle, serve_node};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use async_trait::async_trait;
use flotilla_protocol::{ErrorBody, ErrorCode, QueryCommand};
use futures::stream::BoxStream;
use gateway::{Membership, StaticMembership};
use prometheus::Registry;
use prost::Message;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
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
    taskmanagers: Arc<dyn Membership>,
    clients: Mutex<HashMap<String, FlightServiceClient<Channel>>>,
    next_head: AtomicUsize,
    handover_timeout: Duration,
    metrics: JobManagerMetrics,
}

/// Starts a shard on the configured addresses and returns its handle.
pub async fn start_jobmanager(config: Config, registry: Registry) -> anyhow::Result<NodeHandle> {
    let section = &config.jobmanager;
    if section.taskmanagers.is_empty() {
        anyhow::bail!("jobmanager.taskmanagers is empty: a shard needs at least one TaskManager");
    }
    config.catalog.validate().map_err(anyhow::Error::msg)?;
    let membership = StaticMembership::new(section.taskmanagers.clone());
    membership.spawn_prober(Duration::from_millis(section.probe_interval_ms.max(10)));
    let taskmanagers: Arc<dyn Membership> = membership;
    let planner = Planner::new(&config.catalog, section, Arc::clone(&taskmanagers)).await?;
    let jobmanager = JobManager {
        inner: Arc::new(Inner {
            node_id: config.node_id(Role::JobManager),
            planner,
            taskmanagers,
            clients: Mutex::new(HashMap::new()),
            next_head: AtomicUsize::new(0),
            handover_timeout: Duration::from_millis(section.handover_timeout_ms),
            metrics: JobManagerMetrics::new(&registry)?,
        }),
    };
    let router = tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(jobmanager.clone()));
    let state_view = jobmanager.clone();
    serve_node(
        Role::JobManager,
        section.listen,
        section.admin_listen,
        router,
        registry,
        Arc::new(move || state_view.state_json()),
        Arc::new(|| {}),
    )
    .await
}

// === impl JobManager ===

impl JobManager {
    fn state_json(&self) -> serde_json::Value {
        let inner = &self.inner;
        serde_json::json!({
            "id": inner.node_id,
            "in_flight": inner.metrics.in_flight.get(),
            "queries_planned": inner.metrics.queries_planned.get(),
            "response_bytes": inner.metrics.response_bytes.get(),
            "taskmanagers": inner.taskmanagers.members(),
        })
    }

    fn client(&self, address: &str) -> Result<FlightServiceClient<Channel>, AgentError> {
        let mut clients = self
            .inner
            .clients
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let channel = Channel::from_shared(address.to_string())
            .map_err(|error| AgentError::Internal(format!("taskmanager url {address}: {error}")))?
            .connect_timeout(self.inner.handover_timeout)
            .timeout(self.inner.handover_timeout)
            .connect_lazy();
        let client = FlightServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// Plans a query and hands it to one TaskManager, trying the next on transport failures.
    async fn plan_and_hand_over(&self, command: &QueryCommand) -> Result<FlightInfo, AgentError> {
        let workers = self.inner.taskmanagers.healthy();
        if workers.is_empty() {
            return Err(AgentError::NoTaskManager(
                "every taskmanager is down".into(),
            ));
        }
        let PlannedQuery { plan, options } = self.inner.planner.plan(&command.sql).await?;
        let start = self.inner.next_head.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..workers.len() {
            let head = &workers[(start + offset) % workers.len()];
            let request = HandoverRequest {
                query_id: command.query_id.to_string(),
                plan: plan.clone(),
                options: options.clone(),
                worker_urls: workers.clone(),
                head_url: head.clone(),
            };
            match self.hand_over(head, request).await {
                Ok(ticket) => {
                    let endpoint = FlightEndpoint::new()
                        .with_ticket(Ticket::new(ticket))
                        .with_location(head.clone());
                    return Ok(FlightInfo::new().with_endpoint(endpoint));
                }
                Err(error) if error.code == ErrorCode::Unavailable => {
                    tracing::warn!(taskmanager = %head, error = %error.message, "hand-over failed, trying the next taskmanager");
                    self.inner.taskmanagers.mark_down(head, &error.message);
                    self.inner.metrics.handover_retries.inc();
                    last_error = Some(error.message);
                }
                Err(error) => return Err(body_to_error(error)),
            }
        }
        Err(AgentError::NoTaskManager(last_error.unwrap_or_default()))
    }

    async fn hand_over(&self, head: &str, request: HandoverRequest) -> Result<Vec<u8>, ErrorBody> {
        let mut client = self.client(head).map_err(|error| error.to_body())?;
        let action = Action::new(HANDOVER_ACTION, request.encode_to_vec());
        let span = tracing::info_span!("handover", taskmanager = %head);
        let mut results = client
            .do_action(action)
            .instrument(span)
            .await
            .map_err(|status| ErrorBody::from(&status))?
            .into_inner();
        let result = results
            .message()
            .await
            .map_err(|status| ErrorBody::from(&status))?
            .ok_or_else(|| ErrorBody::new(ErrorCode::Internal, "empty hand-over answer"))?;
        let response = HandoverResponse::decode(result.body).map_err(|error| {
            ErrorBody::new(ErrorCode::Internal, format!("hand-over answer: {error}"))
        })?;
        Ok(response.ticket)
    }
}

/// Rebuilds an error received from a TaskManager so that it keeps its code.
fn body_to_error(body: ErrorBody) -> AgentError {
    match body.code {
        ErrorCode::SqlSyntax => AgentError::SqlSyntax(body.message),
        ErrorCode::SqlPlanning => AgentError::SqlPlanning(body.message),
        ErrorCode::BadRequest => AgentError::BadRequest(body.message),
        ErrorCode::Unavailable => AgentError::NoTaskManager(body.message),
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
