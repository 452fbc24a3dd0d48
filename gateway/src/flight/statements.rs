//! Statements over Flight SQL: `GetFlightInfo` runs the query through the same tower stack as
//! HTTP and keeps its result under a ticket; `DoGet` streams it; `CancelFlightInfo` ends it.

use super::auth::client_status;
use super::results::{Pending, query_of};
use super::state::FlightSql;
use crate::control::{Protocol, Timeline};
use crate::error::GatewayError;
use crate::outcome::{Outcome, record_end};
use crate::query::{Messages, QueryRequest, first_batch};
use arrow_flight::sql::{Any, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{
    CancelStatus, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket,
};
use arrow_schema::Schema;
use flotilla_protocol::{
    CACHE_HEADER, DEFAULT_POOL, ErrorBody, ErrorCode, QueryId, ROUTING_KEY_HEADER,
    TABLE_VERSIONS_HEADER, TENANT_HEADER, TIMEOUT_HEADER, TRACEPARENT_HEADER, TraceContext,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use std::sync::Arc;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tower::ServiceExt;
use tracing::Instrument;

/// What `CancelFlightInfo` says of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cancelled {
    /// It was running or waiting for its `DoGet`, and is ended.
    Yes,
    /// It is not running here (finished, or never was).
    NotRunning,
}

impl FlightSql {
    /// Runs `sql` with `params` for the caller of `metadata`: the answer names a ticket for
    /// this gateway (no location) and the result's exact schema, read from its first message.
    pub(super) async fn start(
        &self,
        metadata: &MetadataMap,
        sql: String,
        params: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<tonic::Response<FlightInfo>, Status> {
        let caller = self.caller(metadata)?;
        self.check_size(sql.len())?;
        let text = |name: &str| {
            metadata
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string)
        };
        let trace = trace_of(metadata);
        let query_id = QueryId::new();
        let timeline = Arc::new(Timeline::with_protocol(
            query_id,
            trace,
            Protocol::FlightSql,
        ));
        let span = tracing::info_span!(
            "query",
            query_id = %query_id,
            trace_id = %trace.trace_id(),
            protocol = "flight_sql"
        );
        // Until the result waits under its ticket, a client that gives up the call (dropping
        // this future) leaves the query recorded as `cancelled`.
        let outcome = Outcome::new(
            self.inner.metrics.clone(),
            Arc::clone(&timeline),
            span.clone(),
        );
        let started = async {
            let tenant = caller.tenant_for(text(TENANT_HEADER).as_deref())?;
            let timeout =
                crate::query::query_timeout(text(TIMEOUT_HEADER).as_deref(), self.inner.timeout)?;
            timeline.describe(&tenant, &sql);
            let request = QueryRequest {
                query_id,
                sql,
                params,
                routing_key: text(ROUTING_KEY_HEADER).filter(|key| !key.is_empty()),
                tenant: tenant.clone(),
                pool: DEFAULT_POOL.to_string(),
                timeout,
                timeline: Arc::clone(&timeline),
                no_cache: crate::query::wants_fresh(text("cache-control").as_deref()),
            };
            let result = self
                .inner
                .queries
                .clone()
                .oneshot(request)
                .await
                .map_err(GatewayError::from_boxed)?;
            // As on HTTP, the limits apply from the first message, and the query's status is
            // known once its first batch (or its end) has arrived.
            let limited = self.inner.limits.of(&tenant).apply(result.messages);
            let (head, rest) = first_batch(limited).await?;
            let schema = head
                .first()
                .map(Schema::try_from)
                .transpose()
                .map_err(|error| GatewayError::Internal(format!("result schema: {error}")))?
                .ok_or_else(|| GatewayError::Internal("the result has no schema".into()))?;
            let messages = futures::stream::iter(head.into_iter().map(Ok))
                .chain(rest)
                .boxed();
            Ok::<_, GatewayError>((schema, tenant, messages, result.cache))
        }
        .instrument(span.clone())
        .await;
        let (schema, handle, cache) = match started {
            Ok((schema, tenant, messages, cache)) => {
                let pending = Pending::new(tenant, messages, outcome);
                (schema, self.inner.results.insert(query_id, pending), cache)
            }
            Err(error) => {
                if timeline.tenant().is_empty() {
                    self.inner.running.remember(Arc::clone(&timeline));
                }
                let code = error.code();
                let message = error.to_string();
                record_end(
                    &self.inner.metrics,
                    &timeline,
                    code.as_str(),
                    Some(&message),
                    &span,
                );
                return Err(error.to_body().with_query_id(query_id).to_client_status());
            }
        };
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map(|info| info.with_endpoint(endpoint).with_descriptor(descriptor))
            .map_err(|error| client_status(&GatewayError::Internal(error.to_string())))?;
        // What the result cache did, in the response metadata as on HTTP.
        let mut response = tonic::Response::new(info);
        let headers = response.metadata_mut();
        for (name, value) in cache.iter().flat_map(|cache| {
            [
                (CACHE_HEADER, &cache.outcome),
                (TABLE_VERSIONS_HEADER, &cache.table_versions),
            ]
        }) {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        }
        Ok(response)
    }

    /// Streams the result of `handle` to the caller of `metadata`, once.
    pub(super) fn fetch(
        &self,
        metadata: &MetadataMap,
        handle: &[u8],
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let caller = self.caller(metadata)?;
        let Some(pending) = self
            .inner
            .results
            .take_if(handle, |tenant| caller.sees(tenant))
        else {
            let error = ErrorBody::new(
                ErrorCode::TicketNotFound,
                "the ticket is unknown, expired (flight.ticket_ttl_ms) or already fetched",
            );
            return Err(error.to_client_status());
        };
        pending.outcome.timeline.first_byte();
        Ok(stream(pending.messages, pending.outcome))
    }

    /// Ends the query of `handle` if the caller of `metadata` may see it: a result waiting for
    /// its `DoGet` is dropped, a streaming one is cancelled through the registry.
    pub(super) fn cancel(
        &self,
        metadata: &MetadataMap,
        handle: &[u8],
    ) -> Result<Cancelled, Status> {
        let caller = self.caller(metadata)?;
        if let Some(pending) = self
            .inner
            .results
            .take_if(handle, |tenant| caller.sees(tenant))
        {
            tracing::info!(parent: &pending.outcome.span, "query cancelled before its DoGet");
            return Ok(Cancelled::Yes);
        }
        let Some(query_id) = query_of(handle) else {
            return Ok(Cancelled::NotRunning);
        };
        let running = &self.inner.running;
        let visible = running
            .tenant_of(&query_id)
            .is_some_and(|tenant| caller.sees(&tenant));
        if visible && running.cancel(&query_id) {
            tracing::info!(%query_id, "query cancelled by CancelFlightInfo");
            return Ok(Cancelled::Yes);
        }
        Ok(Cancelled::NotRunning)
    }
}

/// `CloseSession`'s answer (Flight's `CloseSessionResult`, which arrow-flight does not
/// generate): status `CLOSED`.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct CloseSessionResult {
    #[prost(int32, tag = "1")]
    pub(super) status: i32,
}

/// `CloseSessionResult.Status.CLOSED`.
pub(super) const SESSION_CLOSED: i32 = 1;

pub(super) fn cancel_status(cancelled: Cancelled) -> CancelStatus {
    match cancelled {
        Cancelled::Yes => CancelStatus::Cancelled,
        Cancelled::NotRunning => CancelStatus::NotCancellable,
    }
}

/// The statement handle in a `FlightInfo`'s first ticket.
pub(super) fn handle_of(info: &FlightInfo) -> Result<Vec<u8>, Status> {
    let bad = || client_status(&GatewayError::BadRequest("not a Flotilla statement".into()));
    let ticket = info
        .endpoint
        .first()
        .and_then(|endpoint| endpoint.ticket.as_ref())
        .ok_or_else(bad)?;
    let any = Any::decode(ticket.ticket.as_ref()).map_err(|_| bad())?;
    let statement: TicketStatementQuery = any.unpack().ok().flatten().ok_or_else(bad)?;
    Ok(statement.statement_handle.to_vec())
}

/// The trace a call belongs to: the client's W3C `traceparent` goes on through the gateway;
/// without one, a trace starts here.
pub(super) fn trace_of(metadata: &MetadataMap) -> TraceContext {
    metadata
        .get(TRACEPARENT_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::root, |parent| parent.child())
}

/// The client's stream: counts rows and bytes, turns errors into client statuses, and records
/// the outcome when it ends or is dropped.
fn stream(messages: Messages, outcome: Outcome) -> BoxStream<'static, Result<FlightData, Status>> {
    futures::stream::unfold(
        (messages, Some(outcome)),
        |(mut messages, mut outcome)| async move {
            let tracked = outcome.as_mut()?;
            match messages.next().await {
                Some(Ok(message)) => {
                    let metrics = &tracked.metrics;
                    if let Some(rows) = crate::shard::batch_rows(&message) {
                        tracked.timeline.add_rows(rows);
                        metrics.rows_streamed.inc_by(rows);
                    }
                    let bytes = (message.data_header.len() + message.data_body.len()) as u64;
                    tracked.timeline.add_bytes(bytes);
                    metrics.bytes_streamed.inc_by(bytes);
                    Some((Ok(message), (messages, outcome)))
                }
                Some(Err(status)) => {
                    let body = ErrorBody::from(&status);
                    tracked.failed(Some(body.code));
                    tracing::warn!(parent: &tracked.span, code = %body.code, error = %body.message, "result failed after its first message");
                    let status = body.with_query_id(tracked.timeline.query_id()).to_client_status();
                    // Recorded now; the stream ends after this item.
                    drop(outcome.take());
                    Some((Err(status), (messages, None)))
                }
                None => {
                    tracked.code = "ok";
                    drop(outcome.take());
                    None
                }
            }
        },
    )
    .boxed()
}
