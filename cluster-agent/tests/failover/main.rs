//! Fail-over, drain and cancel, with real processes: a shard killed under load costs no query, a
//! result outlives its shard, a TaskManager lost before the first byte is retried and one lost
//! after it is an error (never a short result), a rolling restart fails nothing, and cancel,
//! disconnect and timeout stop a query's tasks and return its slots.

mod cancel;
#[path = "../common/mod.rs"]
mod common;
mod in_ticket;
mod shards;
mod taskmanagers;

use common::{Federation, Process, state};
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
    flotilla_cluster::spawn_instrumented(
        async move { steady_load(&url, rate, duration, answers).await },
    )
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

async fn gateway_counter(url: &str, name: &str) -> f64 {
    common::metric_sum(&format!("{url}/metrics"), name).await
}

fn kill9(process: &mut Process) -> Instant {
    let at = Instant::now();
    process.kill();
    at
}

async fn states(taskmanagers: &[Process]) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    for taskmanager in taskmanagers {
        all.push(state(taskmanager).await);
    }
    all
}
