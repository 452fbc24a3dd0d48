//! Cancel, disconnect and timeout stop a query's tasks and return its slots.

use super::{BIG_RESULT, SLOW_FIRST_BYTE, states};
use crate::common::{self, Federation, Process, http, state, try_http};
use futures::StreamExt;
use std::time::{Duration, Instant};

/// Waits until every TaskManager has no slot leased, no task running and no result streaming;
/// returns how long that took.
async fn wait_all_idle(taskmanagers: &[Process], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        let mut idle = true;
        for taskmanager in taskmanagers {
            let state = state(taskmanager).await;
            if state["slots"]["slots_used"] != 0
                || state["tasks_running"] != 0
                || state["results_streaming"] != 0
            {
                idle = false;
            }
        }
        if idle {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_disconnect_and_timeout_stop_tasks_and_return_slots() {
    let federation = Federation::start();
    let url = federation.url();
    let busy = async || {
        let now = states(&federation.taskmanagers).await;
        now.iter().any(|state| state["slots"]["slots_used"] != 0)
            && now
                .iter()
                .any(|state| state["tasks_running"] != 0 || state["results_streaming"] != 0)
    };

    // DELETE /v1/query/{id} before the first byte (the client named the query).
    let query_id = uuid::Uuid::new_v4().to_string();
    let query = flotilla_cluster::spawn_instrumented({
        let url = url.clone();
        let query_id = query_id.clone();
        async move {
            try_http(
                "POST",
                &format!("{url}/v1/query"),
                &[("x-flotilla-query-id", query_id.as_str())],
                SLOW_FIRST_BYTE,
            )
            .await
        }
    });
    assert!(
        common::eventually(Duration::from_secs(30), busy).await,
        "the query never ran"
    );
    let running = http("GET", &format!("{url}/v1/queries"), &[], "")
        .await
        .json();
    assert_eq!(running["running"][0]["query_id"], query_id.as_str());
    let cancelled = http("DELETE", &format!("{url}/v1/query/{query_id}"), &[], "").await;
    assert_eq!(cancelled.status, 200);
    let idle = wait_all_idle(&federation.taskmanagers, Duration::from_secs(5)).await;
    let response = query.await.unwrap().unwrap();
    assert_eq!(response.status, 499);
    assert_eq!(response.error_code(), "cancelled");
    let again = http("DELETE", &format!("{url}/v1/query/{query_id}"), &[], "").await;
    assert_eq!(again.status, 404, "an ended query cannot be cancelled");
    println!("DELETE: slots and tasks back after {idle:?}");
    assert!(
        idle.is_some_and(|idle| idle < Duration::from_secs(1)),
        "slots or tasks left 1 s after DELETE: {:#?}",
        states(&federation.taskmanagers).await
    );

    // A client that disconnects mid-stream.
    let client = flotilla_client::Client::new(&url).unwrap();
    let mut stream = client.query(BIG_RESULT).await.unwrap();
    stream.next().await.unwrap().unwrap();
    assert!(busy().await);
    drop(stream);
    drop(client);
    let idle = wait_all_idle(&federation.taskmanagers, Duration::from_secs(5)).await;
    println!("disconnect mid-stream: slots and tasks back after {idle:?}");
    assert!(idle.is_some_and(|idle| idle < Duration::from_secs(1)));

    // A client that disconnects before the first byte.
    let query = flotilla_cluster::spawn_instrumented({
        let url = url.clone();
        async move { try_http("POST", &format!("{url}/v1/query"), &[], SLOW_FIRST_BYTE).await }
    });
    assert!(
        common::eventually(Duration::from_secs(30), busy).await,
        "the query never ran"
    );
    query.abort();
    let idle = wait_all_idle(&federation.taskmanagers, Duration::from_secs(5)).await;
    println!("disconnect before the first byte: slots and tasks back after {idle:?}");
    assert!(idle.is_some_and(|idle| idle < Duration::from_secs(1)));

    // A timeout asked for by the request (lower than the default).
    let started = Instant::now();
    let response = try_http(
        "POST",
        &format!("{url}/v1/query"),
        &[("x-flotilla-timeout-ms", "300")],
        SLOW_FIRST_BYTE,
    )
    .await
    .unwrap();
    assert_eq!(
        response.status,
        504,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.error_code(), "query_timeout");
    let answered = started.elapsed();
    let idle = wait_all_idle(&federation.taskmanagers, Duration::from_secs(5)).await;
    println!("timeout 300 ms: answered after {answered:?}, slots and tasks back {idle:?} later");
    assert!(
        answered < Duration::from_secs(2),
        "the timeout answered after {answered:?}"
    );
    assert!(idle.is_some_and(|idle| idle < Duration::from_secs(1)));
    let bad = try_http(
        "POST",
        &format!("{url}/v1/query"),
        &[("x-flotilla-timeout-ms", "soon")],
        "SELECT 1",
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
}
