//! The [`Route`] service: picks a shard per query, retries failed attempts elsewhere, and
//! quarantines a statement that two members failed under (`quarantine.rs`).

use super::hedge::{self, Hedge, Hedging};
use super::quarantine::{self, Failure, Quarantine};
use super::ring::RingCache;
use super::sideline::Sideline;
use super::together::Together;
use crate::config::RoutingConfig;
use crate::error::{BoxError, GatewayError};
use crate::metrics::GatewayMetrics;
use crate::query::{QueryRequest, QueryResult, Routed};
use flotilla_cluster::Membership;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tower::{Service, ServiceExt};
use tracing::Instrument;

/// State shared by every clone of the route service.
pub(super) struct Shared {
    pub(super) shards: Arc<dyn Membership>,
    pub(super) ring: RingCache,
    pub(super) in_flight: Mutex<HashMap<String, usize>>,
    pub(super) quarantine: Quarantine,
    pub(super) hedging: Hedging,
    pub(super) sideline: Sideline,
    pub(super) together: Together,
    pub(super) config: RoutingConfig,
    pub(super) metrics: GatewayMetrics,
}

/// Routes [`QueryRequest`]s to shards; the inner service runs one attempt on one shard.
#[derive(Clone)]
pub struct Route<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Route<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }
}

impl<S> Service<QueryRequest> for Route<S>
where
    S: Service<Routed, Response = QueryResult, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = QueryResult;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<QueryResult, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per shard: each attempt waits for its own clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: QueryRequest) -> Self::Future {
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { shared.route(inner, request).await.map_err(BoxError::from) })
    }
}

// === impl Shared ===

impl Shared {
    async fn route<S>(&self, inner: S, request: QueryRequest) -> Result<QueryResult, GatewayError>
    where
        S: Service<Routed, Response = QueryResult, Error = BoxError> + Clone,
    {
        let healthy = self.shards.healthy();
        if healthy.is_empty() {
            return Err(GatewayError::NoShard(
                "every shard is down or none is configured".into(),
            ));
        }
        let fingerprint = quarantine::fingerprint(&request.sql);
        if let Some(remaining) = self.quarantine.remaining(fingerprint) {
            return Err(GatewayError::Quarantined(format!(
                "this statement is quarantined for {:.0} s more: two members failed while it ran, so it is taken for a query of death (routing.quarantine_ms)",
                remaining.as_secs_f64().ceil()
            )));
        }
        let candidates = self.ring.candidates(&request.ring_key(), &healthy);
        self.hedging.deposit();
        // Shards that failed this query; a TaskManager failure does not count against its shard.
        let mut failed: Vec<String> = Vec::new();
        // Members that failed while this statement ran on them.
        let mut failed_under: Vec<String> = Vec::new();
        // TaskManagers that failed this query: later attempts avoid them when they can.
        let mut avoid: Vec<String> = Vec::new();
        // Shards that saw no TaskManager up (their own view, perhaps stale): asked last.
        let mut poolless: Vec<String> = Vec::new();
        let shard_attempts = self.config.max_attempts.max(1);
        let mut taskmanager_retries = 0;
        let mut reruns = 0;
        let mut last_error = None;
        let statement = Together::key(&request);
        for attempt in 0.. {
            let passed = [failed.as_slice(), poolless.as_slice()].concat();
            let Some((shard, _together)) = self.pick(statement, &candidates, &passed, &failed)
            else {
                break;
            };
            let mut avoiding = avoid.clone();
            avoiding.extend(self.sideline.sidelined());
            let primary = self.attempt(
                inner.clone(),
                shard.clone(),
                &request,
                avoiding.clone(),
                "forward",
                attempt,
            );
            // Where the first attempt waits when its hedge is due, if it got that far.
            let waited_on = std::sync::OnceLock::new();
            let hedged_on = std::sync::OnceLock::new();
            let hedge = {
                let (inner, mut tried, mut avoid) = (inner.clone(), failed.clone(), avoiding);
                let (shard, candidates, request, waited_on, hedged_on) =
                    (&shard, &candidates, &request, &waited_on, &hedged_on);
                move || {
                    if !self.hedging.withdraw() {
                        self.metrics.hedges.with_label_values(&["refused"]).inc();
                        return None;
                    }
                    self.metrics.hedges.with_label_values(&["sent"]).inc();
                    tried.push(shard.clone());
                    let target = self
                        .choose(candidates, &tried)
                        .unwrap_or_else(|| shard.clone());
                    let placed = waited_on.get_or_init(|| request.timeline.taskmanagers());
                    avoid.extend(placed.iter().cloned());
                    let target = hedged_on.get_or_init(|| target).clone();
                    Some(self.attempt(inner, target, request, avoid, "hedge", attempt))
                }
            };
            let delay = self.hedging.delay(fingerprint);
            let hedge::Raced {
                result,
                hedge: hedged,
                latency,
                hedge_error,
            } = hedge::race(primary, delay, hedge).await;
            if let (Some(error), Some(target)) = (&hedge_error, hedged_on.get()) {
                // The hedge ran the statement too: a member it broke counts like the first's.
                self.count_hedge_failure(error, target, &mut failed, &mut failed_under, &mut avoid)
                    .await;
            }
            if hedged == Hedge::Won {
                self.metrics.hedges.with_label_values(&["won"]).inc();
                if let Some(placed) = waited_on.get() {
                    self.sideline.strike(placed);
                }
            }
            let error = match result {
                Ok(result) => {
                    self.hedging.record(fingerprint, hedged, latency);
                    return Ok(result);
                }
                Err(error) => error,
            };
            let retry = match &error {
                // Nothing reached the client and read-only SQL is idempotent: plan it again (the
                // shard leases around the failed TaskManager, which refuses calls now).
                GatewayError::TaskManagerUnavailable {
                    taskmanager,
                    message,
                } => {
                    quarantine::charge_taskmanager(
                        taskmanager,
                        message,
                        &mut failed_under,
                        &mut avoid,
                    )
                    .await;
                    taskmanager_retries += 1;
                    (taskmanager_retries <= self.config.taskmanager_retries)
                        .then_some("taskmanager")
                }
                // The shard answered that its pool has no TaskManager up (one restarting, the
                // other draining, or the shard's own view stale): the query waits a backoff and
                // asks again, another shard first, rather than counting the shard as failed.
                GatewayError::Remote(body)
                    if body.code == flotilla_protocol::ErrorCode::Unavailable =>
                {
                    poolless.push(shard.clone());
                    taskmanager_retries += 1;
                    (taskmanager_retries <= self.config.taskmanager_retries)
                        .then_some("taskmanager")
                }
                error if error.is_retryable() => {
                    if let GatewayError::ShardUnavailable { message, .. } = error {
                        let failure = quarantine::blame(message, &shard).await;
                        if failure == Failure::Died {
                            failed_under.push(shard.clone());
                        }
                        // One broken stream is no evidence against a shard that still answers:
                        // an unreachable or dead shard is, and so are several statements'
                        // broken streams.
                        if matches!(failure, Failure::MemberDown | Failure::Died)
                            || self.quarantine.strike(&shard, fingerprint)
                        {
                            self.shards.mark_down(&shard, message);
                        }
                    }
                    failed.push(shard.clone());
                    (failed.len() < shard_attempts).then_some("shard")
                }
                _ => None,
            };
            if failed_under.len() >= 2 {
                return Err(self.give_up(fingerprint, &failed_under, error));
            }
            let Some(reason) = retry else {
                return Err(error);
            };
            // Back-to-back faults are run again, with backoff, while the budget and the
            // deadline allow: a meltdown is not doubled by re-runs.
            reruns += 1;
            let pause = self.hedging.backoff(reruns);
            if !self.hedging.withdraw() || request.timeline.elapsed() + pause >= request.timeout {
                self.metrics.retries_refused.inc();
                return Err(error);
            }
            tracing::warn!(shard = %shard, %error, reason, ?pause, "attempt failed before the first byte; running the query again");
            tokio::time::sleep(pause).await;
            self.metrics.retries.with_label_values(&[reason]).inc();
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| GatewayError::NoShard("no shard left to try".into())))
    }

    /// Records a failed hedge on `shard` as a failed attempt: its shard (when unreachable) or
    /// TaskManager is not tried again, and a member that died under it counts towards
    /// quarantine.
    async fn count_hedge_failure(
        &self,
        error: &GatewayError,
        shard: &str,
        failed: &mut Vec<String>,
        failed_under: &mut Vec<String>,
        avoid: &mut Vec<String>,
    ) {
        match error {
            GatewayError::ShardUnavailable { message, .. } => {
                failed.push(shard.to_string());
                if quarantine::blame(message, shard).await == Failure::Died {
                    failed_under.push(shard.to_string());
                }
            }
            GatewayError::TaskManagerUnavailable {
                taskmanager,
                message,
            } => quarantine::charge_taskmanager(taskmanager, message, failed_under, avoid).await,
            _ => {}
        }
    }

    /// One attempt of `request` on `shard` (`kind`: forward or hedge), counted in flight
    /// against the shard while it runs.
    async fn attempt<S>(
        &self,
        inner: S,
        shard: String,
        request: &QueryRequest,
        avoid: Vec<String>,
        kind: &'static str,
        attempt: usize,
    ) -> Result<QueryResult, GatewayError>
    where
        S: Service<Routed, Response = QueryResult, Error = BoxError> + Clone,
    {
        let _in_flight = InFlight::enter(self, &shard);
        self.metrics
            .shard_queries
            .with_label_values(&[shard.as_str()])
            .inc();
        request.timeline.attempt(&shard);
        let span = tracing::info_span!("forward", shard = %shard, attempt, kind);
        let routed = Routed {
            shard,
            request: request.clone(),
            avoid,
        };
        inner
            .oneshot(routed)
            .instrument(span)
            .await
            .map_err(GatewayError::from_boxed)
    }

    /// Returns the first untried candidate whose load is within the bound: in-flight below
    /// `load_factor × (total + 1) / shards`, rounded up (consistent hashing with bounded loads).
    pub(super) fn choose(&self, candidates: &[String], tried: &[String]) -> Option<String> {
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let load = |shard: &String| in_flight.get(shard).copied().unwrap_or(0);
        let total: usize = candidates.iter().map(load).sum();
        let bound = (self.config.load_factor * (total + 1) as f64 / candidates.len() as f64).ceil();
        let mut untried = candidates
            .iter()
            .filter(|shard| !tried.contains(shard))
            .peekable();
        let first = untried.peek().map(|shard| (*shard).clone())?;
        let chosen = untried
            .find(|shard| (load(shard) as f64) < bound)
            .cloned()
            .unwrap_or_else(|| first.clone());
        if tried.is_empty() {
            let decision = if chosen == first { "affinity" } else { "spill" };
            self.metrics
                .routing_decisions
                .with_label_values(&[decision])
                .inc();
        }
        Some(chosen)
    }
}

/// Counts a query against a shard while an attempt on it runs.
struct InFlight<'a> {
    shared: &'a Shared,
    shard: String,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, shard: &str) -> Self {
        let mut in_flight = shared
            .in_flight
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *in_flight.entry(shard.to_string()).or_default() += 1;
        shared
            .metrics
            .shard_in_flight
            .with_label_values(&[shard])
            .inc();
        Self {
            shared,
            shard: shard.to_string(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .shared
            .in_flight
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = in_flight.get_mut(&self.shard) {
            *count = count.saturating_sub(1);
        }
        self.shared
            .metrics
            .shard_in_flight
            .with_label_values(&[self.shard.as_str()])
            .dec();
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
pub(super) mod tests;
