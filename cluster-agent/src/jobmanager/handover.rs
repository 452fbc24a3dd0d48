//! How a shard hands a query over: plan it, lease slots (or let a TaskManager reserve them),
//! and give the encoded plan to the query's head TaskManager, which keeps it under a ticket.

use super::cached::{Lookup, entry_id};
use super::introspection;
use super::leasing::{LeaseGuard, Leased};
use super::plan_cache::{PlanKey, reused_tables, snapshot_versions};
use super::planner::PlannedQuery;
use super::service::JobManager;
use crate::error::AgentError;
use crate::handover::{HANDOVER_ACTION, HandoverRequest, HandoverResponse};
use arrow_flight::{FlightEndpoint, FlightInfo, Ticket};
use datafusion::logical_expr::LogicalPlan;
use flotilla_protocol::{ErrorBody, ErrorCode, QueryCommand};
use prost::Message;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// How long a reserving hand-over may go unanswered before a rival is sent (the issue's
/// clamp(3 × p99, 25 ms, 150 ms) at its ceiling: hand-overs answer in about a millisecond).
const HANDOVER_HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(150);

// === impl JobManager ===

impl JobManager {
    /// Plans a query, leases slots for it, and hands it to one of the leased TaskManagers.
    ///
    /// The plan is sized for the TaskManagers the query could use; slots are then leased only
    /// on as many as its widest stage runs tasks on (one for a single-stage query). Records
    /// each step's time on the current `plan` span.
    pub(super) async fn plan_and_hand_over(
        &self,
        command: &QueryCommand,
    ) -> Result<FlightInfo, AgentError> {
        let inner = &self.inner;
        let mut step = Instant::now();
        let caching = match self.look_up_result(command).await {
            Lookup::Hit(info) => {
                record_step("cache_us", &mut step);
                return Ok(info);
            }
            Lookup::Run(caching) => caching,
        };
        if inner.versions.checks_every_query() {
            let changed = inner.versions.refresh().await;
            inner.plans.invalidate(&changed);
        }
        let mut logical = None;
        if introspection::may_read_catalog(&command.sql) {
            let plan = self.logical(command, &mut logical).await?;
            if introspection::reads_catalog(plan)? {
                return self.answer_from_catalog(plan).await;
            }
        }
        let targets = inner.leaser.planning_targets(command);
        let planned = if targets.is_empty() {
            // Leasing says why: no TaskManager of the pool is up. The SQL's own faults first.
            self.logical(command, &mut logical).await?;
            None
        } else {
            Some(self.planned(command, &mut logical, &targets).await?)
        };
        record_step("plan_us", &mut step);
        let mut entry = self.cache_entry(&caching, planned.as_deref()).await;
        let want = planned.as_ref().map_or(1, |planned| planned.width);
        if let (1, Some(planned)) = (want, &planned) {
            // A result to keep is handed over by call: readers of its entry must find it
            // running on the TaskManager as soon as the shard's index names it.
            let in_ticket = entry
                .is_none()
                .then(|| self.hand_over_in_ticket(command, planned))
                .flatten();
            let handed = match in_ticket {
                Some(info) => Some(info),
                None => {
                    self.hand_over_reserving(command, planned, entry_id(&entry))
                        .await?
                }
            };
            if let Some(info) = handed {
                record_step("handover_us", &mut step);
                return Ok(self.remember(caching, entry, info));
            }
        }
        let mut guard = LeaseGuard {
            leaser: Arc::clone(&inner.leaser),
            leased: inner.leaser.lease(command, want).await?,
            armed: true,
        };
        record_step("lease_us", &mut step);
        let planned = match planned {
            Some(planned) if planned.width <= guard.leased.holders.len() => planned,
            // TaskManagers showed up while the query waited for them, or fewer granted a lease
            // than the plan was sized for (one cut off or frozen): planned again for those that
            // did, since datafusion-distributed cannot run two tasks of one stage on one
            // TaskManager ("WorkerConnections stream ... already consumed").
            _ => {
                let planned = self
                    .planned(command, &mut logical, &guard.leased.holders)
                    .await?;
                // Planned again: its result is kept only if read from the same versions.
                if planned.reads.is_none()
                    || entry.as_ref().is_some_and(|entry| !entry.reads(&planned))
                {
                    entry = None;
                }
                planned
            }
        };
        let result = self
            .hand_over_leased(command, &planned, &guard.leased, entry_id(&entry))
            .await;
        // From a successful hand-over on, the head TaskManager owns the lease.
        guard.armed = result.is_err();
        result.map(|info| self.remember(caching, entry, info))
    }

    /// Returns the plan of `command` with its stages sized for `workers`: the cached one if it
    /// is current, else planned from `logical` (parsed and bound first if still None), and
    /// cached when it may be reused.
    async fn planned(
        &self,
        command: &QueryCommand,
        logical: &mut Option<LogicalPlan>,
        workers: &[String],
    ) -> Result<Arc<PlannedQuery>, AgentError> {
        let inner = &self.inner;
        let key = PlanKey::new(command, workers.len());
        let span = tracing::Span::current();
        if let Some(planned) = inner.plans.get(&key, &inner.versions) {
            span.record("cached", true);
            return Ok(planned);
        }
        span.record("cached", false);
        let logical = self.logical(command, logical).await?;
        // Read before planning lists the files: the plan is never older than these versions.
        // A Delta table's plan reads the commit its logical plan holds: that one.
        let snapshots = snapshot_versions(logical);
        let tables = reused_tables(logical).and_then(|names| {
            names
                .into_iter()
                .map(|name| {
                    let read = snapshots.get(&name).copied();
                    let version = read.or_else(|| inner.versions.version(&name))?;
                    Some((name, version))
                })
                .collect::<Option<Vec<_>>>()
        });
        let mut planned = inner.planner.plan(logical, workers).await?;
        planned.reads = tables.clone();
        let planned = Arc::new(planned);
        if let Some(tables) = tables {
            inner.plans.insert(key, Arc::clone(&planned), tables);
        }
        Ok(planned)
    }

    /// Returns `command`'s logical plan, parsed, checked and bound into `logical` unless it
    /// already was: everything that can be the SQL's fault fails here, before any lease.
    async fn logical<'a>(
        &self,
        command: &QueryCommand,
        logical: &'a mut Option<LogicalPlan>,
    ) -> Result<&'a LogicalPlan, AgentError> {
        match logical {
            Some(logical) => Ok(logical),
            None => {
                let step = Instant::now();
                let planner = &self.inner.planner;
                let bound = planner.bind(planner.prepare(&command.sql).await?, &command.params)?;
                tracing::Span::current().record("prepare_us", step.elapsed().as_micros() as u64);
                Ok(logical.insert(bound))
            }
        }
    }

    /// Hands a query that runs on one TaskManager over with a reservation: one round trip
    /// instead of two. None when there is no candidate or it has no free slot (the caller
    /// then leases, queueing if need be).
    ///
    /// A head silent for [`HANDOVER_HEDGE_AFTER`] gets a rival: the same hand-over to another
    /// TaskManager, within the shard's budget; the first to take the query wins, and the other
    /// call is dropped, returning what its head reserved.
    async fn hand_over_reserving(
        &self,
        command: &QueryCommand,
        planned: &PlannedQuery,
        cache_entry: &str,
    ) -> Result<Option<FlightInfo>, AgentError> {
        let leaser = &self.inner.leaser;
        let Some(head) = leaser.solo_head(command) else {
            return Ok(None);
        };
        let first_head = head.0.clone();
        let mut first = std::pin::pin!(self.hand_over_solo(command, planned, head, cache_entry));
        if let Ok(result) = tokio::time::timeout(HANDOVER_HEDGE_AFTER, first.as_mut()).await {
            return result;
        }
        let mut avoiding = command.clone();
        avoiding.avoid.push(first_head.clone());
        let rival = leaser
            .solo_head(&avoiding)
            .filter(|(head, ..)| *head != first_head);
        let Some(rival) = rival.filter(|_| leaser.hedge_allowed()) else {
            return first.await;
        };
        let mut second = std::pin::pin!(self.hand_over_solo(command, planned, rival, cache_entry));
        tokio::select! {
            result = first.as_mut() => match result {
                Ok(Some(info)) => Ok(Some(info)),
                _ => self.won(second.await),
            },
            result = second.as_mut() => match self.won(result) {
                Ok(Some(info)) => Ok(Some(info)),
                _ => first.await,
            },
        }
    }

    /// Counts a rival hand-over that took the query.
    fn won(
        &self,
        result: Result<Option<FlightInfo>, AgentError>,
    ) -> Result<Option<FlightInfo>, AgentError> {
        if let Ok(Some(_)) = result {
            self.inner
                .metrics
                .handover_hedges
                .with_label_values(&["won"])
                .inc();
        }
        result
    }

    /// One reserving hand-over to `head` (its lease id, the slots to reserve).
    async fn hand_over_solo(
        &self,
        command: &QueryCommand,
        planned: &PlannedQuery,
        (head, lease_id, slots): (String, String, u64),
        cache_entry: &str,
    ) -> Result<Option<FlightInfo>, AgentError> {
        let leaser = &self.inner.leaser;
        let workers = [head.clone()];
        let request = HandoverRequest {
            reserve_slots: slots,
            holder: leaser.node_id().to_string(),
            cache_entry: cache_entry.to_string(),
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
                Ok(Some(flight_info(response, &head, &workers)))
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
                Err(AgentError::from_body(error))
            }
        }
    }

    /// The hand-over of `planned` to `head`, under a lease held on `workers`.
    pub(super) fn handover_request(
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
            cache_entry: String::new(),
            issued_unix_ms: 0,
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
        self.inner
            .leaser
            .call(head, HANDOVER_ACTION, request.encode_to_vec())
            .instrument(span)
            .await
            .and_then(decode_handover)
    }

    async fn hand_over_leased(
        &self,
        command: &QueryCommand,
        planned: &PlannedQuery,
        leased: &Leased,
        cache_entry: &str,
    ) -> Result<FlightInfo, AgentError> {
        let mut step = Instant::now();
        let mut last_error = None;
        for head in &leased.holders {
            let request = HandoverRequest {
                cache_entry: cache_entry.to_string(),
                ..self.handover_request(command, planned, head, &leased.holders, &leased.lease_id)
            };
            match self.send_handover(head, &request).await {
                Ok(response) => {
                    record_step("handover_us", &mut step);
                    return Ok(flight_info(response, head, &leased.holders));
                }
                Err(error) if error.code == ErrorCode::Unavailable => {
                    tracing::warn!(taskmanager = %head, error = %error.message, "hand-over failed, trying the next taskmanager");
                    self.inner.leaser.mark_down(head, &error.message);
                    self.inner.metrics.handover_retries.inc();
                    last_error = Some(error.message);
                }
                Err(error) => return Err(AgentError::from_body(error)),
            }
        }
        Err(AgentError::NoTaskManager(last_error.unwrap_or_default()))
    }
}

fn decode_handover(body: bytes::Bytes) -> Result<HandoverResponse, ErrorBody> {
    HandoverResponse::decode(body)
        .map_err(|error| ErrorBody::new(ErrorCode::Internal, format!("hand-over answer: {error}")))
}

/// Where the gateway fetches a handed-over query's result (the head, with its ticket), and
/// where the query runs (`holders`, for the query's record).
pub(super) fn flight_info(
    response: HandoverResponse,
    head: &str,
    holders: &[String],
) -> FlightInfo {
    let placement = flotilla_protocol::QueryPlacement {
        taskmanagers: holders.to_vec(),
        ..flotilla_protocol::QueryPlacement::default()
    };
    let endpoint = FlightEndpoint::new()
        .with_ticket(Ticket::new(response.ticket))
        .with_location(head.to_string())
        .with_app_metadata(placement.to_bytes());
    FlightInfo::new().with_endpoint(endpoint)
}

/// Records the time since `step` as `field` of the current span, and restarts `step`.
fn record_step(field: &'static str, step: &mut Instant) {
    tracing::Span::current().record(field, step.elapsed().as_micros() as u64);
    *step = Instant::now();
}
