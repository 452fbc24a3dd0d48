//! Tests of the route service: bounded loads, retries, queries of death.

use super::*;
use flotilla_cluster::StaticMembership;
use flotilla_protocol::QueryId;

pub(in crate::route) fn shared(shards: &[&str]) -> Shared {
    Shared {
        shards: StaticMembership::new(shards.iter().map(|shard| shard.to_string())),
        ring: RingCache::new(64),
        in_flight: Mutex::new(HashMap::new()),
        quarantine: Quarantine::new(std::time::Duration::from_secs(60), 3),
        hedging: super::super::hedge::Hedging::new(&RoutingConfig::default()),
        sideline: super::super::sideline::Sideline::new(
            std::sync::Arc::new(|_, _| Box::pin(async { true })),
            prometheus::IntCounter::new("sidelined", "test").unwrap(),
        ),
        together: super::super::together::Together::default(),
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
        taskmanager: Some("tm".into()),
        cache: None,
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
            message: "tcp connect error: connection refused".into(),
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
async fn a_shard_that_sees_no_taskmanager_up_is_passed_over_not_marked_down() {
    let shared = Arc::new(shared(&["a", "b"]));
    let (mock, mut handle) = tower_test::mock::pair::<Routed, QueryResult>();
    let route = Route::new(mock, Arc::clone(&shared));
    let call = flotilla_cluster::spawn_instrumented(
        route.oneshot(QueryRequest::new(QueryId::new(), "select 1")),
    );
    let none_up = |respond: tower_test::mock::SendResponse<QueryResult>| {
        respond.send_error(GatewayError::Remote(flotilla_protocol::ErrorBody::new(
            flotilla_protocol::ErrorCode::Unavailable,
            "no taskmanager of pool `default` is up",
        )))
    };
    let (first, respond) = handle.next_request().await.unwrap();
    none_up(respond);
    let (second, respond) = handle.next_request().await.unwrap();
    assert_ne!(second.shard, first.shard, "another shard's view is asked");
    none_up(respond);
    let (third, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        third.shard, first.shard,
        "with every shard passed, the first again"
    );
    respond.send_response(QueryResult {
        shard: third.shard.clone(),
        taskmanager: Some("tm".into()),
        cache: None,
        messages: Box::pin(futures::stream::empty()),
    });
    assert_eq!(call.await.unwrap().unwrap().shard, first.shard);
    assert_eq!(shared.shards.healthy().len(), 2, "no shard marked down");
}

/// Sends a query through `route` whose attempts all end with `fail(shard)`; returns the
/// error and the shards tried.
async fn failing_query(
    shared: &Arc<Shared>,
    sql: &str,
    fail: impl Fn(&str) -> GatewayError,
) -> (GatewayError, Vec<String>) {
    let (mock, mut handle) = tower_test::mock::pair::<Routed, QueryResult>();
    let route = Route::new(mock, Arc::clone(shared));
    let mut call =
        flotilla_cluster::spawn_instrumented(route.oneshot(QueryRequest::new(QueryId::new(), sql)));
    let mut tried = Vec::new();
    let error = loop {
        tokio::select! {
            result = &mut call => break result.unwrap().unwrap_err(),
            Some((routed, respond)) = handle.next_request() => {
                tried.push(routed.shard.clone());
                respond.send_error(fail(&routed.shard));
            }
        }
    };
    let error = GatewayError::from_boxed(error);
    (error, tried)
}

fn broken(shard: &str) -> GatewayError {
    GatewayError::ShardUnavailable {
        shard: shard.to_string(),
        message: "h2 protocol error: stream error received: unexpected internal error".into(),
    }
}

#[tokio::test]
async fn a_statement_two_members_died_under_is_quarantined() {
    // Addresses that take no connection: each shard died under the statement.
    let shared = Arc::new(shared(&["a", "b", "c"]));
    let (error, tried) = failing_query(&shared, "SELECT repeat('x', 2000000000)", broken).await;
    assert_eq!(tried.len(), 2, "tried at most twice: {tried:?}");
    assert_ne!(tried[0], tried[1]);
    assert_eq!(
        error.code(),
        flotilla_protocol::ErrorCode::Quarantined,
        "{error}"
    );
    assert!(error.to_string().contains("query of death"), "{error}");
    assert_eq!(shared.shards.healthy().len(), 1, "the dead shards are down");
    assert_eq!(shared.metrics.quarantined.get(), 1);
    // The same statement (any spacing or case) is refused without reaching a shard.
    let (error, tried) = failing_query(&shared, "select  REPEAT('x', 2000000000)", broken).await;
    assert!(tried.is_empty(), "{tried:?}");
    assert_eq!(error.code(), flotilla_protocol::ErrorCode::Quarantined);
}

#[tokio::test]
async fn a_stream_broken_by_a_shard_that_still_answers_blames_neither() {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addresses: Vec<String> = listeners
        .iter()
        .map(|listener| format!("http://{}", listener.local_addr().unwrap()))
        .collect();
    let names: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let shared = Arc::new(shared(&names));
    let (error, tried) = failing_query(&shared, "select 1", broken).await;
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(
        matches!(error, GatewayError::ShardUnavailable { .. }),
        "{error}"
    );
    assert_eq!(shared.metrics.quarantined.get(), 0);
    assert_eq!(
        shared.shards.healthy().len(),
        3,
        "one statement marks no shard down"
    );
    // Broken streams of three distinct statements are member-level evidence.
    for sql in ["select 2", "select 3"] {
        failing_query(&shared, sql, broken).await;
    }
    assert!(
        shared.shards.healthy().is_empty(),
        "{:?}",
        shared.shards.healthy()
    );
}

#[tokio::test]
async fn a_taskmanager_failing_twice_under_one_statement_ends_it_without_quarantine() {
    let shared = Arc::new(shared(&["a", "b"]));
    let lost = |_: &str| GatewayError::TaskManagerUnavailable {
        taskmanager: "tm".into(),
        message: "connection reset".into(),
    };
    let (error, tried) = failing_query(&shared, "select 1", lost).await;
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(matches!(error, GatewayError::TaskManagerUnavailable { .. }));
    assert_eq!(
        shared.metrics.quarantined.get(),
        0,
        "the same member both times"
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
