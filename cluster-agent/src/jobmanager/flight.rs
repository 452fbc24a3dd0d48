//! The shard's Flight service: `GetFlightInfo(sql)` → plan → hand over → `FlightInfo(ticket,
//! TaskManager)`; `DoAction` describes a statement or lists the catalog for the gateway's
//! Flight SQL front door; `DoGet` streams the catalog's answers. Every other Flight call is
//! refused: results are served by TaskManagers.

use super::service::JobManager;
use crate::error::AgentError;
use crate::flight_clients::CURRENT_TRACE;
use crate::member_flight::{FlightStream, MemberFlight};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightInfo, Ticket};
use async_trait::async_trait;
use flotilla_protocol::{
    CATALOG_ACTION, DESCRIBE_ACTION, QueryCommand, TASKMANAGERS_ACTION, TaskManagersRequest,
};
use prost::Message;
use std::sync::Arc;
use std::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Decrements the in-flight gauge however planning ends.
struct InFlightGuard(prometheus::IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

// === impl MemberFlight for JobManager ===

#[async_trait]
impl MemberFlight for JobManager {
    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let trace = flotilla_cluster::incoming_trace(request.metadata());
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
            cached = tracing::field::Empty,
            cache_us = tracing::field::Empty,
            prepare_us = tracing::field::Empty,
            lease_us = tracing::field::Empty,
            plan_us = tracing::field::Empty,
            handover_us = tracing::field::Empty,
        );
        let account = self
            .inner
            .memory_guard
            .account(&command.query_id.to_string());
        let planning = CURRENT_TRACE.scope(trace, self.plan_and_hand_over(&command));
        let result = crate::memory::TrackedFuture::new(planning, Arc::clone(&account))
            .instrument(span.clone())
            .await;
        // Planning is not cut short (what one call builds is bounded before it runs), but a
        // statement whose planning went past its share does not go on.
        let result = match account.stopped() {
            Some(reason) => Err(AgentError::DataFusion(
                datafusion::common::DataFusionError::ResourcesExhausted(reason.to_string()),
            )),
            None => result,
        };
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
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream<FlightData>>, Status> {
        // Only the catalog's answers are redeemed here (`introspection.rs`).
        match super::introspection::answer_stream(&request.get_ref().ticket) {
            Some(stream) => Ok(Response::new(stream?)),
            None => Err(Status::unimplemented(
                "results are served by taskmanagers, not by shards",
            )),
        }
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<FlightStream<arrow_flight::Result>>, Status> {
        let action = request.into_inner();
        if self.inner.drain.is_draining() {
            return Err(Status::unavailable(format!(
                "shard {} is draining",
                self.inner.node_id
            )));
        }
        let planner = &self.inner.planner;
        let body = match action.r#type.as_str() {
            DESCRIBE_ACTION => {
                let command = QueryCommand::from_bytes(&action.body)
                    .map_err(|error| AgentError::BadRequest(format!("query command: {error}")))?;
                let span = tracing::info_span!("describe", query_id = %command.query_id);
                planner
                    .describe(&command.sql)
                    .instrument(span)
                    .await?
                    .encode_to_vec()
            }
            CATALOG_ACTION => planner.catalog().await?,
            TASKMANAGERS_ACTION => {
                let asked: TaskManagersRequest =
                    serde_json::from_slice(&action.body).map_err(|error| {
                        AgentError::BadRequest(format!("taskmanagers request: {error}"))
                    })?;
                let listing = self.inner.leaser.taskmanagers_json(
                    asked.filter.as_deref(),
                    asked.offset,
                    asked.limit.clamp(1, 1000),
                );
                serde_json::to_vec(&listing).unwrap_or_default()
            }
            other => {
                return Err(AgentError::BadRequest(format!("unknown action `{other}`")).into());
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(result)
        }))))
    }
}
