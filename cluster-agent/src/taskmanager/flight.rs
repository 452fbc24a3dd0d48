//! The TaskManager's Flight service: `DoGet(ticket)` runs a handed-over query's head stage and
//! streams its result; `DoAction` takes hand-overs and lease actions.

use super::keeper::keep_leases;
use super::results::{ResultStream, StreamingGuard, flight_result};
use super::service::TaskManager;
use super::tickets::PendingQuery;
use crate::error::AgentError;
use crate::handover::{HANDOVER_ACTION, HandoverRequest};
use crate::lease::{RELEASE_ACTION, RENEW_ACTION, RESERVE_ACTION};
use crate::member_flight::{FlightStream, MemberFlight};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, ActionType, Empty, FlightData, FlightDescriptor, FlightInfo, Ticket};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

// === impl TaskManager ===

impl TaskManager {
    /// Streams a result kept in the result cache (waiting for its first run when it still
    /// runs): no plan, no slot. An entry this TaskManager does not hold is `ticket_not_found`
    /// before the first byte, and the gateway runs the query again.
    async fn serve_cached(
        &self,
        entry: &str,
        trace: &flotilla_protocol::TraceContext,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let inner = &self.inner;
        let span =
            tracing::info_span!("result", cache_entry = %entry, trace_id = %trace.trace_id());
        let wait = inner.tickets.ttl();
        let (stored, waited) = inner
            .results
            .get(entry, inner.fetch_window, wait)
            .instrument(span.clone())
            .await
            .map_err(|reason| {
                AgentError::TicketNotFound(format!(
                    "cached result {entry} is not held here ({reason})"
                ))
            })?;
        tracing::debug!(parent: &span, waited, bytes = stored.bytes, "result served from the cache");
        let metrics = &inner.metrics;
        metrics.tickets_served.inc();
        metrics.results_streaming.inc();
        let guard = StreamingGuard {
            streaming: metrics.results_streaming.clone(),
            span,
            started: std::time::Instant::now(),
            bytes: 0,
            outcome: "dropped",
        };
        let messages = stored.messages.clone().into_iter().map(Ok);
        let flight = ResultStream {
            inner: futures::stream::iter(messages).boxed(),
            guard,
            bytes_sent: metrics.flight_bytes_sent.clone(),
            filler: None,
            _keep_alive: (),
        };
        Ok(Response::new(flight.boxed()))
    }

    /// Runs a taken query's head stage and streams its result, keeping its slots leased until
    /// the stream ends.
    fn serve(
        &self,
        pending: PendingQuery,
        trace: &flotilla_protocol::TraceContext,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        // From the first fetch on, the head keeps the query's slots until the stream ends.
        let lease = pending.lease;
        let keep_alive = keep_leases(
            lease.lease_id,
            lease.holders,
            lease.head_url,
            lease.ttl,
            Arc::clone(&self.inner.leases),
            Arc::clone(&self.inner.peers),
        );
        let span = tracing::info_span!("result", query_id = %pending.query_id, trace_id = %trace.trace_id());
        // Charged from here: the tasks the head stage spawns as it starts inherit the account.
        let account = self.inner.memory_guard.account(&pending.query_id);
        let stream = crate::memory::charged(&account, || {
            span.in_scope(|| {
                datafusion::physical_plan::execute_stream(pending.plan, pending.task_ctx)
            })
        })
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
            .build(
                stream
                    .map_ok(super::compact::compact)
                    .map_err(|error| FlightError::ExternalError(Box::new(error))),
            )
            .map(flight_result);
        let flight = crate::memory::Tracked::new(flight, account, |reason: &str| {
            Err(super::results::memory_stop_status(reason))
        });
        if let Some(filler) = &pending.fill {
            filler.running();
        }
        let flight = ResultStream {
            inner: flight.boxed(),
            guard,
            bytes_sent,
            filler: pending.fill,
            _keep_alive: keep_alive,
        };
        drop(span);
        Ok(Response::new(flight.boxed()))
    }
}

// === impl MemberFlight for TaskManager ===

#[async_trait]
impl MemberFlight for TaskManager {
    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        let trace = flotilla_cluster::incoming_trace(request.metadata());
        let ticket = request.into_inner().ticket;
        if ticket.starts_with(flotilla_protocol::HANDOVER_TICKET_PREFIX) {
            let span = tracing::info_span!("handover", trace_id = %trace.trace_id());
            let pending = span.in_scope(|| self.take_ticket_handover(&ticket, trace))?;
            return self.serve(pending, &trace);
        }
        let ticket = String::from_utf8(ticket.to_vec())
            .map_err(|_| AgentError::BadRequest("ticket is not UTF-8".into()))?;
        if let Some(entry) = ticket.strip_prefix(flotilla_protocol::CACHE_TICKET_PREFIX) {
            return self.serve_cached(entry, &trace).await;
        }
        let pending = self
            .inner
            .tickets
            .take(&ticket)
            .ok_or_else(|| AgentError::TicketNotFound(ticket.clone()))?;
        if !self.inner.leases.is_valid(&pending.lease.lease_id) {
            return Err(AgentError::TicketNotFound(format!(
                "{ticket} (its slot lease expired before the result was fetched)"
            ))
            .into());
        }
        self.serve(pending, &trace)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<FlightStream<arrow_flight::Result>>, Status> {
        let trace = flotilla_cluster::incoming_trace(request.metadata());
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
    ) -> Result<Response<FlightStream<ActionType>>, Status> {
        let action = ActionType {
            r#type: HANDOVER_ACTION.to_string(),
            description: "keep a planned query under a ticket for DoGet".to_string(),
        };
        Ok(Response::new(futures::stream::iter([Ok(action)]).boxed()))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented(
            "a taskmanager plans nothing; ask a jobmanager",
        ))
    }
}
