//! The [`ShardClient`] service, the innermost service of the query stack.
//!
//! ```text
//!  Routed ──GetFlightInfo(cmd)──▶ shard ──▶ FlightInfo { ticket, TaskManager location }
//!         ──DoGet(ticket)───────▶ TaskManager ──▶ schema, first batch (awaited here), rest...
//! ```
//! An endpoint without a location (the shard's answer to a question about its catalog) is
//! redeemed at the shard itself, as Flight prescribes.

use crate::control::Timeline;
use crate::error::{BoxError, GatewayError};
use crate::query::{QueryResult, Routed};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightDescriptor, Ticket};
use flotilla_cluster::ClusterSecret;
use flotilla_cluster::keys::Signed;
use flotilla_protocol::{
    CACHE_TICKET_PREFIX, ErrorBody, ErrorCode, HANDOVER_TICKET_PREFIX, QueryCommand,
    QueryPlacement, TraceContext,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::Channel;
use tower::Service;
use tracing::Instrument;

/// Largest Flight message accepted from a TaskManager.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Runs one query attempt against the shard named in the [`Routed`] request.
#[derive(Clone)]
pub struct ShardClient {
    channels: Arc<Mutex<HashMap<String, Signed<Channel>>>>,
    first_result_timeout: Duration,
    secret: ClusterSecret,
}

impl ShardClient {
    /// Creates a client that reuses one HTTP/2 connection per shard or TaskManager.
    /// Connections obey `cluster.connect_timeout_ms` and keep-alives through `secret`.
    pub fn new(first_result_timeout: Duration, secret: ClusterSecret) -> Self {
        Self {
            channels: Arc::default(),
            first_result_timeout,
            secret,
        }
    }

    fn client(&self, address: &str) -> Result<FlightServiceClient<Signed<Channel>>, GatewayError> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let channel = self
                    .secret
                    .endpoint(address)
                    .map_err(|error| {
                        GatewayError::Internal(format!("bad address {address}: {error}"))
                    })?
                    .connect_lazy();
                let channel = self.secret.signed(channel);
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// An internal gRPC request carrying the W3C `traceparent` of a new span of `trace` (its
    /// channel signs it).
    fn internal<T>(&self, message: T, trace: &TraceContext) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        flotilla_cluster::inject_child_trace(request.metadata_mut(), trace);
        request
    }

    async fn attempt(self, routed: Routed) -> Result<QueryResult, GatewayError> {
        let Routed {
            shard,
            request,
            avoid,
        } = routed;
        let timeline = request.timeline;
        let mut command = QueryCommand {
            query_id: request.query_id,
            sql: request.sql,
            tenant: request.tenant,
            pool: request.pool,
            params: request.params,
            avoid,
            no_cache: request.no_cache,
            via_handover: false,
        };
        // A kept result its TaskManager no longer holds (evicted, not kept after all, or the
        // TaskManager restarted): asked again at once, the shard forgets it and runs the
        // statement. A hand-over in a ticket its TaskManager refused before the first byte (no
        // free slot): asked again for a hand-over by call, which waits in the shard's queue.
        // Neither is a fault, so no backoff and nothing spent from the retry budget.
        for _ in 0..3 {
            match self.try_plan_and_fetch(&shard, &command, &timeline).await {
                Err(Fetch::Gone(taskmanager)) => command.avoid.push(taskmanager),
                Err(Fetch::Refused) => command.via_handover = true,
                Err(Fetch::Failed(error)) => return Err(error),
                Ok(result) => return Ok(result),
            }
        }
        Err(GatewayError::Internal(format!(
            "shard {shard} named results or hand-overs its TaskManagers refused, three times"
        )))
    }

    /// Plans `command` on `shard` and fetches its result up to the first batch.
    async fn try_plan_and_fetch(
        &self,
        shard: &str,
        command: &QueryCommand,
        timeline: &Timeline,
    ) -> Result<QueryResult, Fetch> {
        let shard = shard.to_string();
        let descriptor = FlightDescriptor::new_cmd(command.to_bytes());
        let info = self
            .client(&shard)?
            .get_flight_info(self.internal(descriptor, &timeline.trace()))
            .await
            .map_err(|status| shard_error(&shard, &status))?
            .into_inner();
        let endpoint =
            info.endpoint.into_iter().next().ok_or_else(|| {
                GatewayError::Internal(format!("shard {shard} named no endpoint"))
            })?;
        let ticket = endpoint
            .ticket
            .ok_or_else(|| GatewayError::Internal(format!("shard {shard} sent no ticket")))?;
        let placement = QueryPlacement::from_bytes(&endpoint.app_metadata);
        // No location: the shard answered itself (the catalog) and serves the result too.
        let located = endpoint
            .location
            .into_iter()
            .next()
            .map(|location| location.uri);
        let cache = (!placement.cache.is_empty()).then(|| crate::query::CacheReport {
            outcome: placement.cache.clone(),
            table_versions: placement.table_versions.join(", "),
        });
        timeline.planned(located.as_deref(), placement.taskmanagers);
        timeline.cache(cache.as_ref());
        let source = located.clone().unwrap_or_else(|| shard.clone());
        let taskmanager = source.as_str();

        let span = tracing::info_span!("fetch", taskmanager = %taskmanager);
        let mut messages = self
            .client(taskmanager)?
            .do_get(self.internal(
                Ticket {
                    ticket: ticket.ticket.clone(),
                },
                &timeline.trace(),
            ))
            .instrument(span.clone())
            .await
            .map_err(|status| {
                let code = error_code(&status);
                let refused = [ErrorCode::TicketNotFound, ErrorCode::ClusterBusy];
                if ticket.ticket.starts_with(CACHE_TICKET_PREFIX.as_bytes())
                    && code == Some(ErrorCode::TicketNotFound)
                {
                    return Fetch::Gone(taskmanager.to_string());
                }
                if ticket.ticket.starts_with(HANDOVER_TICKET_PREFIX)
                    && code.is_some_and(|code| refused.contains(&code))
                {
                    return Fetch::Refused;
                }
                Fetch::Failed(taskmanager_error(taskmanager, &status))
            })?
            .into_inner();
        // Read up to the first record batch (or the end): the schema and dictionaries come
        // first, and a query that fails before producing data fails here, as an error the
        // client gets with its status, not as a broken stream.
        let mut head = Vec::new();
        loop {
            let message = messages
                .message()
                .instrument(span.clone())
                .await
                .map_err(|status| taskmanager_error(taskmanager, &status))?;
            let Some(message) = message else { break };
            let is_batch = is_record_batch(&message);
            head.push(Ok(message));
            if is_batch {
                break;
            }
        }
        if head.is_empty() {
            return Err(Fetch::Failed(GatewayError::Internal(format!(
                "{taskmanager} sent an empty result"
            ))));
        }
        let messages = futures::stream::iter(head).chain(messages).boxed();
        Ok(QueryResult {
            shard,
            taskmanager: located,
            cache,
            messages,
        })
    }
}

impl ShardClient {
    /// A probe of members for the route layer's sideline: `ListActions`, the cheapest call a
    /// member answers; true when it answered within the time given.
    pub fn prober(&self) -> crate::route::Probe {
        let client = self.clone();
        std::sync::Arc::new(move |member: String, within: Duration| {
            let client = client.clone();
            Box::pin(async move {
                let Ok(mut flight) = client.client(&member) else {
                    return false;
                };
                let call = flight.list_actions(arrow_flight::Empty {});
                matches!(tokio::time::timeout(within, call).await, Ok(Ok(_)))
            })
        })
    }

    /// Calls `DoAction(kind, body)` on `shard` and returns the first result's body: what the
    /// Flight SQL front door asks shards besides queries (describe a statement, list tables).
    /// Bounded by the first-result timeout.
    pub(crate) async fn action(
        &self,
        shard: &str,
        kind: &str,
        body: Vec<u8>,
        trace: &TraceContext,
    ) -> Result<bytes::Bytes, GatewayError> {
        let action = arrow_flight::Action {
            r#type: kind.to_string(),
            body: body.into(),
        };
        let call = async {
            let mut results = self
                .client(shard)?
                .do_action(self.internal(action, trace))
                .await
                .map_err(|status| shard_error(shard, &status))?
                .into_inner();
            let first = results
                .message()
                .await
                .map_err(|status| shard_error(shard, &status))?;
            first.map(|result| result.body).ok_or_else(|| {
                GatewayError::Internal(format!("shard {shard} answered `{kind}` with nothing"))
            })
        };
        tokio::time::timeout(self.first_result_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(GatewayError::Timeout(
                    self.first_result_timeout.as_millis() as u64
                ))
            })
    }
}

/// Why an attempt did not get its result's first batch.
enum Fetch {
    /// The `cache:` ticket's TaskManager does not hold that result (any more).
    Gone(String),
    /// The hand-over the ticket carried was refused (no free slot, or presented before).
    Refused,
    Failed(GatewayError),
}

impl From<GatewayError> for Fetch {
    fn from(error: GatewayError) -> Self {
        Self::Failed(error)
    }
}

/// The error code of a TaskManager's own answer; None for a transport failure.
fn error_code(status: &tonic::Status) -> Option<ErrorCode> {
    (!status.details().is_empty()).then(|| ErrorBody::from(status).code)
}

/// Returns the row count of a Flight message carrying a record batch.
pub(crate) fn batch_rows(message: &arrow_flight::FlightData) -> Option<u64> {
    let header = arrow_ipc::root_as_message(&message.data_header).ok()?;
    let batch = header.header_as_record_batch()?;
    u64::try_from(batch.length()).ok()
}

/// Says whether a Flight message carries a record batch (rather than a schema or dictionary).
fn is_record_batch(message: &arrow_flight::FlightData) -> bool {
    arrow_ipc::root_as_message(&message.data_header)
        .map(|header| header.header_type() == arrow_ipc::MessageHeader::RecordBatch)
        .unwrap_or(false)
}

/// A transport failure's message with its causes (`transport error: connection reset`): what
/// broke decides whether the member or the statement is to blame (`route/quarantine.rs`).
fn transport_message(status: &tonic::Status) -> String {
    let mut message = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// A status with Flotilla details is the shard's answer; one without is a transport failure.
fn shard_error(shard: &str, status: &tonic::Status) -> GatewayError {
    if status.details().is_empty() {
        GatewayError::ShardUnavailable {
            shard: shard.to_string(),
            message: transport_message(status),
        }
    } else {
        GatewayError::Remote(ErrorBody::from(status))
    }
}

/// A transport failure, an `unavailable` answer (the head lost a worker TaskManager) or a
/// ticket the TaskManager no longer holds (it restarted, or the fetch came after its window)
/// means the query may be run again; any other answer is the query's own error.
fn taskmanager_error(taskmanager: &str, status: &tonic::Status) -> GatewayError {
    if status.details().is_empty() {
        return GatewayError::TaskManagerUnavailable {
            taskmanager: taskmanager.to_string(),
            message: transport_message(status),
        };
    }
    let body = ErrorBody::from(status);
    if body.code.is_retryable() || body.code == ErrorCode::TicketNotFound {
        return GatewayError::TaskManagerUnavailable {
            taskmanager: taskmanager.to_string(),
            message: body.message,
        };
    }
    GatewayError::Remote(body)
}

impl Service<Routed> for ShardClient {
    type Response = QueryResult;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<QueryResult, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, routed: Routed) -> Self::Future {
        let client = self.clone();
        let timeout = self.first_result_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, client.attempt(routed)).await {
                Ok(result) => result.map_err(BoxError::from),
                Err(_) => Err(GatewayError::Timeout(timeout.as_millis() as u64).into()),
            }
        })
    }
}
