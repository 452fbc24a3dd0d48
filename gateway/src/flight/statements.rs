//! Statements over Flight SQL: `GetFlightInfo` runs the query through the same tower stack as
//! HTTP and parks its result under a sealed ticket (`tickets.rs`); `DoGet` on this gateway
//! streams it, on another runs the ticket's statement again; `CancelFlightInfo` ends it.

use super::auth::client_status;
use super::results::{Pending, query_of};
use super::state::FlightSql;
use super::tickets::Statement;
use crate::control::{Protocol, Timeline};
use crate::error::GatewayError;
use crate::outcome::{Outcome, record_end};
use crate::query::{CacheReport, Messages, QueryRequest, first_batch};
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

/// A query's bookkeeping from its start.
pub(super) struct Begun {
    pub(super) query_id: QueryId,
    pub(super) timeline: Arc<Timeline>,
    pub(super) span: tracing::Span,
    /// Records its end; until the result waits or streams, a dropped call is `cancelled`.
    pub(super) outcome: Outcome,
}

/// A statement run to its first batch.
pub(super) struct Started {
    pub(super) schema: Schema,
    pub(super) messages: Messages,
    pub(super) cache: Option<CacheReport>,
}

impl FlightSql {
    /// Runs `sql` with `params` for the caller of `metadata` up to its first batch and parks
    /// its result here; the answer has the result's exact schema (read from its first message)
    /// and a sealed ticket any gateway of the cluster serves (no location: the client comes
    /// back to the address it called).
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
        let begun = self.begin(metadata);
        let started = async {
            let tenant = caller.tenant_for(text(TENANT_HEADER).as_deref())?;
            let timeout =
                crate::query::query_timeout(text(TIMEOUT_HEADER).as_deref(), self.inner.timeout)?;
            let statement = Statement {
                tenant,
                sql,
                params,
                routing_key: text(ROUTING_KEY_HEADER).unwrap_or_default(),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                no_cache: crate::query::wants_fresh(text("cache-control").as_deref()),
                ..Statement::default()
            };
            let started = self.run(&statement, &begun).await?;
            let info = FlightInfo::new()
                .try_with_schema(&started.schema)
                .map_err(|error| GatewayError::Internal(format!("result schema: {error}")))?;
            Ok::<_, GatewayError>((statement, started, info))
        }
        .instrument(begun.span.clone())
        .await;
        let (mut statement, started, info) = match started {
            Ok(started) => started,
            Err(error) => return Err(self.failed(begun, error)),
        };
        statement.schema = info.schema.to_vec();
        let pending = Pending::new(statement.tenant.clone(), started.messages, begun.outcome);
        statement.handle = self.inner.results.insert(begun.query_id, pending);
        let ticket = TicketStatementQuery {
            statement_handle: self.inner.tickets.seal(&statement).into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let mut response =
            tonic::Response::new(info.with_endpoint(endpoint).with_descriptor(descriptor));
        cache_headers(response.metadata_mut(), started.cache.as_ref());
        Ok(response)
    }

    /// Streams the result of `ticket` to the caller of `metadata`: the parked result when
    /// this gateway issued the ticket, else a new run of the statement it carries.
    pub(super) async fn fetch(
        &self,
        metadata: &MetadataMap,
        ticket: &[u8],
    ) -> Result<tonic::Response<BoxStream<'static, Result<FlightData, Status>>>, Status> {
        let caller = self.caller(metadata)?;
        let served = |how: &str| {
            self.inner
                .metrics
                .flight_tickets
                .with_label_values(&[how])
                .inc()
        };
        let refused = |why: &str| {
            served("refused");
            ErrorBody::new(ErrorCode::TicketNotFound, why).to_client_status()
        };
        let statement = self.inner.tickets.open(ticket).map_err(|reason| {
            tracing::info!(%reason, "Flight SQL ticket refused");
            refused(
                "the ticket is not one this cluster issued, or it expired (flight.ticket_ttl_ms)",
            )
        })?;
        if !caller.sees(&statement.tenant) {
            return Err(refused("the ticket is not one this cluster issued to you"));
        }
        if let Some(pending) = self
            .inner
            .results
            .take_if(&statement.handle, |tenant| caller.sees(tenant))
        {
            served("parked");
            pending.outcome.timeline.first_byte();
            return Ok(tonic::Response::new(stream(
                pending.messages,
                pending.outcome,
            )));
        }
        if self.inner.results.is_spent(&statement.handle) {
            return Err(refused(
                "the ticket is already fetched, cancelled or expired on the gateway that issued it",
            ));
        }
        served("rerun");
        self.rerun(metadata, statement).await
    }

    /// A query's id, timeline, span and outcome, in the trace of `metadata`.
    pub(super) fn begin(&self, metadata: &MetadataMap) -> Begun {
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
        let outcome = Outcome::new(
            self.inner.metrics.clone(),
            Arc::clone(&timeline),
            span.clone(),
        );
        Begun {
            query_id,
            timeline,
            span,
            outcome,
        }
    }

    /// Runs `statement` through the query stack up to its first batch: as on HTTP, the
    /// tenant's limits apply from the first message, and the query's status is known once its
    /// first batch (or its end) has arrived.
    pub(super) async fn run(
        &self,
        statement: &Statement,
        begun: &Begun,
    ) -> Result<Started, GatewayError> {
        begun.timeline.describe(&statement.tenant, &statement.sql);
        let request = QueryRequest {
            query_id: begun.query_id,
            sql: statement.sql.clone(),
            params: statement.params.clone(),
            routing_key: Some(statement.routing_key.clone()).filter(|key| !key.is_empty()),
            tenant: statement.tenant.clone(),
            pool: DEFAULT_POOL.to_string(),
            timeout: statement.timeout(),
            timeline: Arc::clone(&begun.timeline),
            no_cache: statement.no_cache,
        };
        let result = self
            .inner
            .queries
            .clone()
            .oneshot(request)
            .await
            .map_err(GatewayError::from_boxed)?;
        let limited = self
            .inner
            .limits
            .of(&statement.tenant)
            .apply(result.messages);
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
        Ok(Started {
            schema,
            messages,
            cache: result.cache,
        })
    }

    /// Records the end of a query that failed before its result streamed; the client's status.
    pub(super) fn failed(&self, begun: Begun, error: GatewayError) -> Status {
        if begun.timeline.tenant().is_empty() {
            self.inner.running.remember(Arc::clone(&begun.timeline));
        }
        let code = error.code();
        let message = error.to_string();
        record_end(
            &self.inner.metrics,
            &begun.timeline,
            code.as_str(),
            Some(&message),
            &begun.span,
        );
        error
            .to_body()
            .with_query_id(begun.query_id)
            .to_client_status()
    }

    /// Ends the query of `ticket` if the caller of `metadata` may see it: a result waiting for
    /// its `DoGet` is dropped, a streaming one is cancelled through the registry. A ticket of
    /// another gateway is not running here.
    pub(super) fn cancel(
        &self,
        metadata: &MetadataMap,
        ticket: &[u8],
    ) -> Result<Cancelled, Status> {
        let caller = self.caller(metadata)?;
        let Ok(statement) = self.inner.tickets.open(ticket) else {
            return Ok(Cancelled::NotRunning);
        };
        let handle = statement.handle.as_slice();
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

/// What the result cache did, in the response metadata as on HTTP.
pub(super) fn cache_headers(headers: &mut MetadataMap, cache: Option<&CacheReport>) {
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

/// The sealed ticket in a `FlightInfo`'s first endpoint.
pub(super) fn ticket_of(info: &FlightInfo) -> Result<Vec<u8>, Status> {
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
pub(super) fn stream(
    messages: Messages,
    outcome: Outcome,
) -> BoxStream<'static, Result<FlightData, Status>> {
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
