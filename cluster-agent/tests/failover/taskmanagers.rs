//! TaskManagers lost: before the first byte the query is retried; after it the client gets an
//! error, never a short result.

use super::{BIG_RESULT, SLOW_FIRST_BYTE, gateway_counter, kill9, reference_count, states};
use crate::common::{self, Federation, Process, state, try_http};
use futures::StreamExt;
use std::time::{Duration, Instant};

/// Hand-overs so far on each TaskManager of `indexes`.
async fn handovers(taskmanagers: &[Process], indexes: &[usize]) -> Vec<i64> {
    let mut counts = Vec::with_capacity(indexes.len());
    for &index in indexes {
        counts.push(
            state(&taskmanagers[index]).await["handovers_total"]
                .as_i64()
                .unwrap(),
        );
    }
    counts
}

/// Waits (at most 30 s) until a TaskManager of `indexes` took a hand-over beyond `before`: the
/// head of the query just sent. Returns its index.
async fn wait_for_head(taskmanagers: &[Process], indexes: &[usize], before: &[i64]) -> usize {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no hand-over seen"
        );
        let now = handovers(taskmanagers, indexes).await;
        if let Some(position) = (0..now.len()).find(|&position| now[position] > before[position]) {
            return indexes[position];
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Posts `sql` for JSON in the background; the whole response, or why it broke.
fn spawn_json_query(
    url: &str,
    sql: &'static str,
) -> tokio::task::JoinHandle<Result<common::HttpResponse, String>> {
    let url = format!("{url}/v1/query");
    flotilla_cluster::spawn_instrumented(async move {
        try_http("POST", &url, &[("accept", "application/json")], sql).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taskmanager_lost_before_the_first_byte_is_retried() {
    let mut federation = Federation::start_with(3, 2);
    let expected = reference_count(SLOW_FIRST_BYTE).await;
    let url = federation.url();
    let all: Vec<usize> = (0..federation.taskmanagers.len()).collect();
    let before = handovers(&federation.taskmanagers, &all).await;
    let started = Instant::now();
    let query = spawn_json_query(&url, SLOW_FIRST_BYTE);
    // Find the head (the TaskManager the plan was handed to) and kill it while it computes.
    let head = wait_for_head(&federation.taskmanagers, &all, &before).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !query.is_finished(),
        "the query must still be computing when its head dies"
    );
    kill9(&mut federation.taskmanagers[head]);
    let response = query.await.unwrap().expect("a complete response");
    let elapsed = started.elapsed();
    if response.status != 200 {
        federation.dump_logs();
    }
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()[0]["n"], expected);
    let retries = gateway_counter(
        &url,
        "flotilla_gateway_retries_total{reason=\"taskmanager\"}",
    )
    .await;
    println!(
        "head tm-{head} killed -9 before the first byte; the query was run again ({retries} retries) and answered in {elapsed:?}"
    );
    assert!(retries >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_taskmanager_lost_mid_stream_is_an_error_never_a_short_result() {
    let mut federation = Federation::start_with(3, 2);
    let expected = reference_count(&format!("SELECT count(*) FROM ({BIG_RESULT})")).await;
    let url = federation.url();

    // The Rust client: an error, never Ok with fewer rows.
    let client = flotilla_client::Client::new(&url).unwrap();
    let mut stream = client.query(BIG_RESULT).await.unwrap();
    let mut rows = stream.next().await.unwrap().unwrap().num_rows() as i64;
    let now = states(&federation.taskmanagers).await;
    let head = (0..now.len())
        .find(|&index| now[index]["results_streaming"] == 1)
        .expect("one TaskManager streams the result");
    kill9(&mut federation.taskmanagers[head]);
    let mut error = None;
    while let Some(batch) = stream.next().await {
        match batch {
            Ok(batch) => rows += batch.num_rows() as i64,
            Err(failure) => {
                error = Some(failure);
                break;
            }
        }
    }
    let error =
        error.unwrap_or_else(|| panic!("the stream ended cleanly after {rows} of {expected} rows"));
    println!("Rust client: {rows} of {expected} rows, then `{error}`");
    assert!(rows < expected);

    // JSON over plain HTTP: the response is aborted (never a closed array).
    let live: Vec<usize> = (0..federation.taskmanagers.len())
        .filter(|&index| index != head)
        .collect();
    let before = handovers(&federation.taskmanagers, &live).await;
    let response = spawn_json_query(&url, BIG_RESULT);
    let second_head = wait_for_head(&federation.taskmanagers, &live, &before).await;
    // Let the first bytes reach the client.
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill9(&mut federation.taskmanagers[second_head]);
    match response.await.unwrap() {
        Err(error) => println!("JSON over HTTP: the response was aborted: {error}"),
        Ok(response) => {
            // Killed before the first byte: then the retry must have answered it completely.
            assert_eq!(response.status, 200);
            let rows = response.json().as_array().unwrap().len() as i64;
            assert_eq!(rows, expected, "a complete response must hold every row");
            println!("JSON over HTTP: the head died before the first byte; retried, {rows} rows");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_nobody_fetched_does_not_hold_a_draining_taskmanager() {
    let mut federation = Federation::start_with(1, 1);
    let shard = federation.shards[0].grpc_url();
    // A shard's plan whose DoGet never comes (its client went away): the ticket would wait for
    // its TTL (60 s) and hold the drain for its whole timeout (30 s).
    let (_head, _ticket) = common::internal::plan(&shard, &federation.secret).await;
    assert_eq!(
        state(&federation.taskmanagers[0]).await["pending_tickets"],
        1
    );

    let taskmanager = &mut federation.taskmanagers[0];
    let asked = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(taskmanager.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exited = loop {
        if let Some(status) = taskmanager.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "still draining after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = asked.elapsed();
    println!("the TaskManager stopped {took:?} after SIGTERM ({exited})");
    assert!(exited.success(), "{exited}");
    assert!(
        took < Duration::from_secs(10),
        "the abandoned ticket held the drain for {took:?}"
    );
    let log = std::fs::read_to_string(&taskmanager.log).unwrap();
    assert!(!log.contains("drain timeout reached"), "{log}");
}
