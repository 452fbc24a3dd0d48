//! Slot leasing for one shard: finds the TaskManagers of a query's pool, reserves slots on
//! them by power of two choices, queues the query (bounded in length and time) while none is
//! free, and returns the slots when the query fails before its hand-over.
//!
//! A TaskManager's free slots, as the choice sees them, are its gossiped free slots minus the
//! calls this shard has sent it and not had answered: a TaskManager that stops answering
//! (frozen, cut off) collects unanswered calls and stops being chosen at once, long before
//! keep-alives or gossip declare it down.

use super::candidates::{TaskManagers, one_per_host};
use super::metrics::JobManagerMetrics;
use super::unanswered::Unanswered;
use crate::config::JobManagerConfig;
use crate::error::AgentError;
use crate::flight_clients::{FlightClients, call_action};
use crate::lease::{LeaseIds, RELEASE_ACTION};
use flotilla_protocol::{ErrorCode, QueryCommand};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tower::retry::budget::{Budget, TpsBudget};

/// How long the other reservations of a batch may still take once one was granted.
const STRAGGLER_WAIT: Duration = Duration::from_millis(100);

/// Pause between attempts to return a lease to a TaskManager that could not be reached.
const RELEASE_RETRY: Duration = Duration::from_millis(250);

/// Reserves and returns TaskManager slots for one shard's queries.
pub(super) struct SlotLeaser {
    node_id: String,
    taskmanagers: TaskManagers,
    peers: FlightClients,
    config: JobManagerConfig,
    /// Queries waiting for free slots now.
    waiting: AtomicUsize,
    /// Signalled when this shard releases slots, so its queued queries retry at once.
    released: Notify,
    metrics: JobManagerMetrics,
    /// Calls sent to each TaskManager and not answered yet.
    unanswered: Unanswered,
    /// Extra hand-overs allowed: 10 % of the last 10 s of hand-overs plus 5 a second (tower's
    /// retry budget, as the gateway's hedges and re-runs use).
    budget: TpsBudget,
}

/// Slots a query holds: one lease id, on each of `holders`.
pub(super) struct Leased {
    pub(super) lease_id: String,
    pub(super) holders: Vec<String>,
}

/// Returns a query's slots unless it was disarmed: on an error, and also when the gateway
/// gives up on the call (cancel, timeout, disconnect, a hedge that lost) and tonic drops the
/// future holding it, before the hand-over or while reservations are still on the wire.
pub(super) struct LeaseGuard {
    pub(super) leaser: Arc<SlotLeaser>,
    pub(super) leased: Leased,
    pub(super) armed: bool,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if self.armed && !self.leased.holders.is_empty() {
            self.leaser.release(&self.leased);
        }
    }
}

impl SlotLeaser {
    pub(super) fn new(
        node_id: String,
        taskmanagers: TaskManagers,
        config: JobManagerConfig,
        metrics: JobManagerMetrics,
        secret: flotilla_cluster::ClusterSecret,
    ) -> Self {
        Self {
            node_id,
            taskmanagers,
            peers: FlightClients::new(Duration::from_millis(config.handover_timeout_ms), secret),
            config,
            waiting: AtomicUsize::new(0),
            released: Notify::new(),
            metrics,
            unanswered: Unanswered::default(),
            budget: TpsBudget::new(Duration::from_secs(10), 5, 0.1),
        }
    }

    /// Runs one Flight action on TaskManager `url`, counted as unanswered while it runs.
    pub(super) async fn call(
        &self,
        url: &str,
        action_type: &str,
        body: Vec<u8>,
    ) -> Result<bytes::Bytes, flotilla_protocol::ErrorBody> {
        let _open = self.unanswered.open(url);
        let result = call_action(&self.peers, url, action_type, body).await;
        if result
            .as_ref()
            .map_or_else(|error| error.code != ErrorCode::Unavailable, |_| true)
        {
            self.unanswered.answered(url);
        }
        result
    }

    /// Up to `limit` TaskManagers of `pool` that take work now, in power-of-two order of their
    /// free slots less the calls this shard is still waiting on. Neither those in `avoid` nor
    /// silent ones (`unanswered.rs`) while any other is left; when none is, only the one with
    /// the fewest open calls, preferring one that is not silent (a hedge whose first attempt
    /// waits on the whole pool runs where the shard last heard an answer).
    fn choose(&self, pool: &str, limit: usize, avoid: &[String]) -> Vec<String> {
        self.unanswered.with(|table| {
            let busy = |url: &str| table.open(url);
            let chosen = self
                .taskmanagers
                .choose(pool, limit.saturating_add(avoid.len()), &busy);
            let (mut fresh, rest): (Vec<_>, Vec<_>) = chosen
                .into_iter()
                .partition(|url| !avoid.contains(url) && !table.silent(url));
            if fresh.is_empty() {
                fresh.extend(
                    rest.into_iter()
                        .min_by_key(|url| (table.silent(url), busy(url))),
                );
            }
            fresh.truncate(limit);
            fresh
        })
    }

    /// Returns the lease TTL handed to the head, in milliseconds.
    pub(super) fn lease_ttl_ms(&self) -> u64 {
        self.config.lease_ttl_ms
    }

    /// The report table's counts, heap estimate and traffic (None with a fixed list).
    pub(super) fn table_figures(
        &self,
    ) -> Option<(
        flotilla_cluster::reports::Counts,
        usize,
        flotilla_cluster::reports::Traffic,
    )> {
        self.taskmanagers.table_figures()
    }

    /// Counts and one page of the TaskManagers (see [`TaskManagers::json`]).
    pub(super) fn taskmanagers_json(
        &self,
        filter: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> serde_json::Value {
        self.taskmanagers.json(filter, offset, limit)
    }

    /// Records a TaskManager that failed at the transport level: no work until it answers.
    pub(super) fn mark_down(&self, url: &str, reason: &str) {
        self.taskmanagers.membership().mark_down(url, reason);
    }

    /// Returns the TaskManagers a query of `pool` could run on now (at most
    /// `taskmanagers_per_query`, and one per host unless `spread_within_host`): what its plan
    /// is sized for.
    pub(super) fn planning_targets(&self, command: &QueryCommand) -> Vec<String> {
        let wanted = self.config.taskmanagers_per_query;
        let urls = self
            .choose(&command.pool, wanted.saturating_mul(4), &command.avoid)
            .into_iter();
        one_per_host(urls, !self.config.spread_within_host)
            .take(self.config.taskmanagers_per_query)
            .collect()
    }

    /// For a query that runs on one TaskManager: the one to hand it over to with a reservation
    /// (power of two choices), the lease id and the slots to reserve. None while this shard's
    /// queue holds queries (they go first) or when no TaskManager of the pool is up.
    pub(super) fn solo_head(&self, command: &QueryCommand) -> Option<(String, String, u64)> {
        if self.waiting.load(Ordering::Acquire) > 0 {
            return None;
        }
        self.budget.deposit();
        let head = self
            .choose(&command.pool, 1, &command.avoid)
            .into_iter()
            .next()?;
        Some((
            head,
            uuid::Uuid::new_v4().simple().to_string(),
            self.config.slots_per_query,
        ))
    }

    /// Says whether `url` takes work now as far as this shard knows: up in its table, not
    /// silent on calls.
    pub(super) fn serves(&self, url: &str) -> bool {
        let up = match &self.taskmanagers {
            TaskManagers::Static(membership) => {
                flotilla_cluster::Membership::healthy(membership.as_ref())
                    .iter()
                    .any(|member| member == url)
            }
            TaskManagers::Reports(reported) => reported.0.with_table(|table| table.is_up_at(url)),
        };
        up && !self.unanswered.with(|table| table.silent(url))
    }

    /// Takes one extra hand-over from the budget, counted; false when it is spent.
    pub(super) fn hedge_allowed(&self) -> bool {
        let allowed = self.budget.withdraw();
        let outcome = if allowed { "sent" } else { "refused" };
        self.metrics
            .handover_hedges
            .with_label_values(&[outcome])
            .inc();
        allowed
    }

    /// Counts a reservation a TaskManager refused.
    pub(super) fn count_refused(&self) {
        self.metrics.leases_refused.inc();
    }

    /// Returns this shard's node id, the holder of its leases.
    pub(super) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Reserves slots for a query on up to `want` (at most `taskmanagers_per_query`)
    /// TaskManagers of its pool, waiting in the bounded queue while none is free.
    pub(super) async fn lease(
        self: &Arc<Self>,
        command: &QueryCommand,
        want: usize,
    ) -> Result<Leased, AgentError> {
        let inner = self;
        let started = Instant::now();
        let max_wait = Duration::from_millis(inner.config.queue_max_wait_ms);
        let lease_id = uuid::Uuid::new_v4().simple().to_string();
        let mut queued: Option<Queued<'_>> = None;
        loop {
            // Enough candidates for refusals, never the whole pool.
            let wanted = want.clamp(1, inner.config.taskmanagers_per_query);
            let candidates =
                inner.choose(&command.pool, wanted.saturating_mul(4) + 4, &command.avoid);
            if candidates.is_empty() {
                return Err(AgentError::NoTaskManager(format!(
                    "no taskmanager of pool `{}` is up",
                    command.pool
                )));
            }
            let holders = self.reserve_on(command, &lease_id, candidates, want).await;
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

    /// Returns a query's slots when it fails before its hand-over (after it, the head does).
    /// Every holder is asked at once. One that cannot be reached is asked again until the lease
    /// would have expired anyway: one cut off for a moment (its answer lost, the slots reserved)
    /// gets its slots back when it is reachable again, not a whole TTL later, and the others
    /// get theirs at once, not after it.
    pub(super) fn release(self: &Arc<Self>, leased: &Leased) {
        let body = LeaseIds {
            lease_ids: vec![leased.lease_id.clone()],
            ttl_ms: 0,
        }
        .encode_to_vec();
        let expires = Instant::now() + Duration::from_millis(self.config.lease_ttl_ms);
        for url in leased.holders.clone() {
            let (leaser, body) = (Arc::clone(self), body.clone());
            flotilla_cluster::spawn_instrumented(async move {
                loop {
                    match leaser.call(&url, RELEASE_ACTION, body.clone()).await {
                        Ok(_) => break,
                        Err(error)
                            if error.code == ErrorCode::Unavailable
                                && Instant::now() + RELEASE_RETRY < expires =>
                        {
                            tokio::time::sleep(RELEASE_RETRY).await;
                        }
                        Err(error) => {
                            tracing::warn!(taskmanager = %url, error = %error.message, "lease release failed; it expires by TTL");
                            break;
                        }
                    }
                }
                leaser.released.notify_waiters();
            });
        }
    }
}

/// Counts a query in the slot queue while it waits.
struct Queued<'a>(&'a SlotLeaser);

impl<'a> Queued<'a> {
    fn enter(leaser: &'a SlotLeaser) -> Self {
        leaser.waiting.fetch_add(1, Ordering::AcqRel);
        leaser.metrics.queued.inc();
        Self(leaser)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.queued.dec();
    }
}

#[path = "reserve.rs"]
mod reserve;

#[cfg(test)]
#[path = "leasing_tests.rs"]
mod tests;
