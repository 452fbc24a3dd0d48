//! Fail-over, drain and cancel, with real processes: a shard killed under load costs no query, a
//! result outlives its shard, a TaskManager lost before the first byte is retried and one lost
//! after it is an error (never a short result), a rolling restart fails nothing, and cancel,
//! disconnect and timeout stop a query's tasks and return its slots.

mod common;

use common::{Federation, FederationOptions, Process, http, state, try_http};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Short queries with a few stages each; answers come from in-process DataFusion.
const SHORT_QUERIES: [&str; 3] = [
    "SELECT count(*) AS n FROM lineitem",
    "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY n_regionkey ORDER BY n_regionkey",
    "SELECT o_orderstatus, count(*) AS n, round(sum(o_totalprice), 2) AS total FROM orders GROUP BY o_orderstatus ORDER BY o_orderstatus",
];
/// A big streamed result: every lineitem once per region (5 × 60,175 rows at SF 0.01).
const BIG_RESULT: &str = "SELECT l.*, r.r_name FROM lineitem l CROSS JOIN region r";
/// Seconds of CPU before its only row: a join that fans out to about 36 million rows, each
/// then filtered.
const SLOW_FIRST_BYTE: &str = "SELECT count(*) AS n FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey WHERE a.l_quantity + b.l_quantity > 50 AND a.l_comment < b.l_comment";

/// The expected answer of each short query, formatted.
async fn expected_answers() -> Vec<(String, String)> {
    let mut answers = Vec::new();
    for sql in SHORT_QUERIES {
        let batches = common::reference_batches(sql).await;
        answers.push((sql.to_string(), format(&batches)));
    }
    answers
}

fn format(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

async fn reference_count(sql: &str) -> i64 {
    let batches = common::reference_batches(sql).await;
    let column = batches[0].column(0);
    column
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

/// Sends the short queries on a fixed schedule (`rate` per second, for `duration`), each
/// checked against its answer; returns how many ran and a description of each failure.
async fn steady_load(
    url: &str,
    rate: f64,
    duration: Duration,
    answers: Arc<Vec<(String, String)>>,
) -> (usize, Vec<String>) {
    let client = flotilla_client::Client::new(url).unwrap();
    let started = tokio::time::Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = tokio::task::JoinSet::new();
    let count = (duration.as_secs_f64() * rate) as usize;
    for n in 0..count {
        tokio::time::sleep_until(started + interval.mul_f64(n as f64)).await;
        let client = client.clone();
        let answers = Arc::clone(&answers);
        tasks.spawn(async move {
            let (sql, expected) = &answers[n % answers.len()];
            let run = async {
                let stream = client.query(sql).await.map_err(|error| error.to_string())?;
                let batches: Vec<RecordBatch> = stream
                    .map(|batch| batch.map_err(|error| error.to_string()))
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<_, _>>()?;
                let got = format(&batches);
                if &got == expected {
                    Ok(())
                } else {
                    Err(format!("wrong answer to {sql}:\n{got}"))
                }
            };
            match tokio::time::timeout(Duration::from_secs(60), run).await {
                Ok(result) => {
                    result.map_err(|error| format!("query {n} at {:?}: {error}", started.elapsed()))
                }
                Err(_) => Err(format!("query {n}: no answer within 60 s")),
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Err(failure) = joined.unwrap() {
            failures.push(failure);
        }
    }
    (count, failures)
}

/// Runs [`steady_load`] in the background.
fn spawn_load(
    url: &str,
    rate: f64,
    duration: Duration,
    answers: &Arc<Vec<(String, String)>>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let url = url.to_string();
    let answers = Arc::clone(answers);
    gateway::spawn_instrumented(async move { steady_load(&url, rate, duration, answers).await })
}

fn assert_none_failed(federation: &Federation, failures: &[String]) {
    if !failures.is_empty() {
        eprintln!("{} failed queries: {failures:#?}", failures.len());
        federation.dump_logs();
    }
    assert!(
        failures.is_empty(),
        "{} failed queries, first: {:?}",
        failures.len(),
        failures.first()
    );
}

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
    gateway::spawn_instrumented(async move {
        try_http("POST", &url, &[("accept", "application/json")], sql).await
    })
}

async fn gateway_counter(url: &str, name: &str) -> f64 {
    common::metric_sum(&format!("{url}/metrics"), name).await
}

fn kill9(process: &mut Process) -> Instant {
    let at = Instant::now();
    process.kill();
    at
}

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

async fn states(taskmanagers: &[Process]) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for taskmanager in taskmanagers {
        all.push(state(taskmanager).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_shard_under_load_fails_no_query() {
    let mut federation = Federation::start_with_options(FederationOptions {
        shards: 3,
        jobmanager_toml: "queue_max_wait_ms = 30000\nlease_ttl_ms = 3000\n".into(),
        ..FederationOptions::default()
    });
    let answers = Arc::new(expected_answers().await);
    let url = federation.url();
    let load = spawn_load(&url, 50.0, Duration::from_secs(12), &answers);
    tokio::time::sleep(Duration::from_secs(4)).await;
    kill9(&mut federation.shards[1]);
    let (sent, failures) = load.await.unwrap();
    let retries = gateway_counter(&url, "flotilla_gateway_retries_total").await;
    println!(
        "{sent} queries at 50/s, shard jm-1 killed -9 at 4 s: {} failed, {retries} retried",
        failures.len()
    );
    assert_none_failed(&federation, &failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streaming_result_outlives_its_shard() {
    let mut federation = Federation::start();
    let expected = reference_count(&format!("SELECT count(*) FROM ({BIG_RESULT})")).await;
    let client = flotilla_client::Client::new(&federation.url()).unwrap();
    let mut stream = client.query(BIG_RESULT).await.unwrap();
    let mut rows = stream.next().await.unwrap().unwrap().num_rows() as i64;
    // The result is still streaming from its TaskManager when the shards die.
    let streaming: i64 = states(&federation.taskmanagers)
        .await
        .iter()
        .map(|state| state["results_streaming"].as_i64().unwrap())
        .sum();
    assert_eq!(streaming, 1, "the result should still be streaming");
    for shard in &mut federation.shards {
        kill9(shard);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Some(batch) = stream.next().await {
        rows += batch.expect("the result survives its shard").num_rows() as i64;
    }
    println!("{rows} rows streamed after every shard was killed -9 (expected {expected})");
    assert_eq!(rows, expected);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_query() {
    let mut federation = Federation::start_with_options(FederationOptions {
        jobmanager_toml: "queue_max_wait_ms = 30000\n".into(),
        ..FederationOptions::default()
    });
    let answers = Arc::new(expected_answers().await);
    let url = federation.url();
    let secret = federation.secret.clone();
    let load = spawn_load(&url, 30.0, Duration::from_secs(16), &answers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let roles = [
        ("jobmanager", 0),
        ("jobmanager", 1),
        ("taskmanager", 0),
        ("taskmanager", 1),
    ];
    for (role, index) in roles {
        let process = if role == "jobmanager" {
            &mut federation.shards[index]
        } else {
            &mut federation.taskmanagers[index]
        };
        let drained = Instant::now();
        let answer = http(
            "POST",
            &format!("{}/admin/drain", process.admin_url()),
            &[("x-flotilla-cluster-secret", &secret)],
            "",
        )
        .await;
        assert_eq!(answer.status, 202);
        let status = tokio::task::block_in_place(|| process.child.wait().unwrap());
        assert!(status.success(), "{role} {index} exited with {status}");
        let exited = drained.elapsed();
        if role == "jobmanager" {
            federation.restart_shard(index);
        } else {
            federation.restart_taskmanager(index);
        }
        let process = if role == "jobmanager" {
            &federation.shards[index]
        } else {
            &federation.taskmanagers[index]
        };
        let grpc_url = process.grpc_url();
        let serving = common::eventually(Duration::from_secs(20), async || {
            let view = http("GET", &format!("{url}/v1/cluster"), &[], "")
                .await
                .json();
            view["members"].as_array().unwrap().iter().any(|member| {
                member["grpc_url"] == grpc_url.as_str()
                    && member["draining"] == false
                    && member["starting"] == false
            })
        })
        .await;
        assert!(serving, "{role} {index} did not come back");
        println!(
            "{role} {index}: drained and exited 0 in {exited:?}, serving again after {:?}",
            drained.elapsed()
        );
    }
    let (sent, failures) = load.await.unwrap();
    println!(
        "rolling restart of 2 shards and 2 taskmanagers took {:?}; {sent} queries at 30/s, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert_none_failed(&federation, &failures);
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
    let query = gateway::spawn_instrumented({
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
    let query = gateway::spawn_instrumented({
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
