//! The [`Route`] service: picks a shard per query and retries failed attempts elsewhere.

use super::ring::RingCache;
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
        let candidates = self.ring.candidates(&request.ring_key(), &healthy);
        // Shards that failed this query; a TaskManager failure does not count against its shard.
        let mut failed: Vec<String> = Vec::new();
        let shard_attempts = self.config.max_attempts.max(1);
        let mut taskmanager_retries = 0;
        let mut last_error = None;
        for attempt in 0.. {
            let Some(shard) = self.choose(&candidates, &failed) else {
                break;
            };
            let result = {
                let _in_flight = InFlight::enter(self, &shard);
                self.metrics
                    .shard_queries
                    .with_label_values(&[shard.as_str()])
                    .inc();
                request.timeline.attempt(&shard);
                let routed = Routed {
                    shard: shard.clone(),
                    request: request.clone(),
                };
                let span = tracing::info_span!("forward", shard = %shard, attempt);
                inner.clone().oneshot(routed).instrument(span).await
            };
            let error = match result {
                Ok(result) => return Ok(result),
                Err(error) => GatewayError::from_boxed(error),
            };
            let retry = match &error {
                // Nothing reached the client and read-only SQL is idempotent: plan it again (the
                // shard leases around the failed TaskManager, which refuses calls now).
                GatewayError::TaskManagerUnavailable { .. } => {
                    taskmanager_retries += 1;
                    (taskmanager_retries <= self.config.taskmanager_retries)
                        .then_some("taskmanager")
                }
                error if error.is_retryable() => {
                    if let GatewayError::ShardUnavailable { message, .. } = error {
                        self.shards.mark_down(&shard, message);
                    }
                    failed.push(shard.clone());
                    (failed.len() < shard_attempts).then_some("shard")
                }
                _ => None,
            };
            let Some(reason) = retry else {
                return Err(error);
            };
            tracing::warn!(shard = %shard, %error, reason, "attempt failed before the first byte; running the query again");
            self.metrics.retries.with_label_values(&[reason]).inc();
            last_error = Some(error);
        }
        Err(last_error.unwrap_or_else(|| GatewayError::NoShard("no shard left to try".into())))
    }

    /// Returns the first untried candidate whose load is within the bound: in-flight below
    /// `load_factor × (total + 1) / shards`, rounded up (consistent hashing with bounded loads).
    fn choose(&self, candidates: &[String], tried: &[String]) -> Option<String> {
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
mod tests {
    use super::*;
    use flotilla_cluster::StaticMembership;
    use flotilla_protocol::QueryId;

    fn shared(shards: &[&str]) -> Shared {
        Shared {
            shards: StaticMembership::new(shards.iter().map(|shard| shard.to_string())),
            ring: RingCache::new(64),
            in_flight: Mutex::new(HashMap::new()),
            config: RoutingConfig::default(),
            metrics: GatewayMetrics::new(&prometheus::Registry::new()).unwrap(),
        }
    }

    #[test]
    fn bounded_load_skips_a_hot_shard() {
        let shared = shared(&["a", "b"]);
        let candidates = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            shared.choose(&candidates, &[]).as_deref(),
            Some("a"),
            "affinity first"
        );
        shared.in_flight.lock().unwrap().insert("a".into(), 4);
        // total 4, bound = ceil(1.25 × 5 / 2) = 4: "a" (4) is at the bound, so spill to "b".
        assert_eq!(shared.choose(&candidates, &[]).as_deref(), Some("b"));
        assert_eq!(
            shared.choose(&candidates, &["b".into()]).as_deref(),
            Some("a")
        );
        assert_eq!(shared.choose(&candidates, &["a".into(), "b".into()]), None);
    }

    #[tokio::test]
    async fn retries_the_next_shard_when_one_fails_before_answering() {
        let shared = Arc::new(shared(&["a", "b"]));
        let (mock, mut handle) = tower_test::mock::pair::<Routed, QueryResult>();
        let route = Route::new(mock, Arc::clone(&shared));
        let request = QueryRequest::new(QueryId::new(), "select 1");
        let call = flotilla_cluster::spawn_instrumented(route.oneshot(request));
        let (first, respond) = handle.next_request().await.unwrap();
        respond.send_error(GatewayError::ShardUnavailable {
            shard: first.shard.clone(),
            message: "connection refused".into(),
        });
        let (second, respond) = handle.next_request().await.unwrap();
        assert_ne!(
            first.shard, second.shard,
            "the retry goes to the other shard"
        );
        respond.send_response(QueryResult {
            shard: second.shard.clone(),
            taskmanager: "tm".into(),
            messages: Box::pin(futures::stream::empty()),
        });
        let result = call.await.unwrap().unwrap();
        assert_eq!(result.shard, second.shard);
        assert_eq!(
            shared.shards.healthy(),
            vec![second.shard],
            "the failed shard is marked down"
        );
    }

    #[tokio::test]
    async fn reruns_a_query_whose_taskmanager_failed_a_bounded_number_of_times() {
        let shared = Arc::new(shared(&["a", "b"]));
        let retries = shared.config.taskmanager_retries;
        let (mock, mut handle) = tower_test::mock::pair::<Routed, QueryResult>();
        let route = Route::new(mock, Arc::clone(&shared));
        let call = flotilla_cluster::spawn_instrumented(
            route.oneshot(QueryRequest::new(QueryId::new(), "select 1")),
        );
        let lost = |respond: tower_test::mock::SendResponse<QueryResult>| {
            respond.send_error(GatewayError::TaskManagerUnavailable {
                taskmanager: "tm".into(),
                message: "connection reset".into(),
            })
        };
        let (first, respond) = handle.next_request().await.unwrap();
        lost(respond);
        for _ in 0..retries {
            let (again, respond) = handle.next_request().await.unwrap();
            assert_eq!(again.shard, first.shard, "the shard is not to blame");
            lost(respond);
        }
        let error = GatewayError::from_boxed(call.await.unwrap().unwrap_err());
        assert!(matches!(error, GatewayError::TaskManagerUnavailable { .. }));
        assert_eq!(shared.shards.healthy().len(), 2, "no shard marked down");
        assert_eq!(
            shared
                .metrics
                .retries
                .with_label_values(&["taskmanager"])
                .get(),
            retries as u64
        );
    }

    #[tokio::test]
    async fn does_not_retry_sql_errors() {
        let shared = Arc::new(shared(&["a", "b"]));
        let (mock, mut handle) = tower_test::mock::pair::<Routed, QueryResult>();
        let route = Route::new(mock, Arc::clone(&shared));
        let request = QueryRequest::new(QueryId::new(), "selec");
        let call = flotilla_cluster::spawn_instrumented(route.oneshot(request));
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_error(GatewayError::Remote(flotilla_protocol::ErrorBody::new(
            flotilla_protocol::ErrorCode::SqlSyntax,
            "bad",
        )));
        let error = GatewayError::from_boxed(call.await.unwrap().unwrap_err());
        assert_eq!(error.code(), flotilla_protocol::ErrorCode::SqlSyntax);
        assert_eq!(shared.shards.healthy().len(), 2);
    }
}
