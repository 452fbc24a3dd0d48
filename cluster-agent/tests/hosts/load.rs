//! Open-loop load of the short queries with every answer checked against in-process DataFusion:
//! each query ends exact, with an explicit error (an error status, or a stream that does not end
//! cleanly), wrong, or unanswered; and the figures of a time window (failed %, latencies).

use crate::common::{self, compare};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Longest the load waits for one query; past it the query counts as unanswered.
const QUERY_LIMIT: Duration = Duration::from_secs(40);

/// The queries of the load with their answers from in-process DataFusion.
pub struct Answers {
    queries: Vec<(String, Vec<RecordBatch>, bool)>,
}

impl Answers {
    /// The short queries (`sql-samples/short`) and their answers.
    pub async fn short_mix() -> Arc<Answers> {
        let mut queries = Vec::new();
        for (_, sql) in common::short_samples() {
            let expected = common::reference_batches(&sql).await;
            let ordered = common::is_ordered(&sql);
            queries.push((sql, expected, ordered));
        }
        Arc::new(Answers { queries })
    }
}

/// How one query ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The exact answer.
    Exact,
    /// An explicit failure, by kind: an error code, or `transport`/`truncated` for a stream
    /// that did not end cleanly.
    Explicit(String),
    /// A complete-looking answer that differs from the reference.
    Wrong(String),
    /// No answer within [`QUERY_LIMIT`].
    Unanswered,
}

/// One query of the load.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    pub latency: Duration,
    pub verdict: Verdict,
    /// An explicit failure's message (empty otherwise), to attribute it.
    pub message: String,
}

/// Sends the mix at `rate` queries a second for `duration` from now, each checked; returns
/// every outcome, in the order sent.
pub async fn open_loop(
    url: &str,
    rate: f64,
    duration: Duration,
    answers: Arc<Answers>,
) -> Vec<Outcome> {
    let client = flotilla_client::Client::new(url).unwrap();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let count = (duration.as_secs_f64() * rate) as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for number in 0..count {
        let due = started + interval.mul_f64(number as f64);
        tokio::time::sleep_until(due).await;
        let client = client.clone();
        let answers = Arc::clone(&answers);
        tasks.spawn(async move {
            let (sql, expected, ordered) = &answers.queries[number % answers.queries.len()];
            let mut message = String::new();
            // Every other query bypasses the result cache: the drills exercise both the runs
            // (and which TaskManagers get work) and the kept results under the faults.
            let fresh = number % 2 == 1;
            let verdict = match tokio::time::timeout(QUERY_LIMIT, run(&client, sql, fresh)).await {
                Ok(Ok(batches)) if compare::same(&batches, expected, *ordered) => Verdict::Exact,
                Ok(Ok(batches)) => Verdict::Wrong(format!(
                    "{sql}: {} rows, expected {}",
                    rows(&batches),
                    rows(expected)
                )),
                Ok(Err(error)) => {
                    message = error.to_string();
                    Verdict::Explicit(kind(error))
                }
                Err(_) => Verdict::Unanswered,
            };
            (
                number,
                Outcome {
                    sent: due - started,
                    latency: due.elapsed(),
                    verdict,
                    message,
                },
            )
        });
    }
    let mut outcomes: Vec<(usize, Outcome)> = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.unwrap());
    }
    outcomes.sort_by_key(|(number, _)| *number);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

/// The kind of a failed query: its error code, or `transport`/`truncated` for a stream that
/// did not end cleanly.
pub fn kind(error: flotilla_client::Error) -> String {
    use flotilla_client::Error;
    match error {
        Error::Server { code, .. } => code.as_str().to_string(),
        Error::Transport(_) => "transport".to_string(),
        Error::Truncated(_) => "truncated".to_string(),
        other => format!("client: {other}"),
    }
}

/// Runs `sql` to the end of its stream; `fresh`: bypassing the result cache.
async fn run(
    client: &flotilla_client::Client,
    sql: &str,
    fresh: bool,
) -> Result<Vec<RecordBatch>, flotilla_client::Error> {
    let options = flotilla_client::QueryOptions {
        no_cache: fresh,
        ..Default::default()
    };
    let stream = client.query_with(sql, &options).await?;
    let mut batches = Vec::new();
    let mut stream = std::pin::pin!(stream);
    while let Some(batch) = stream.next().await {
        batches.push(batch?);
    }
    Ok(batches)
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The figures of the queries sent in one window of the load.
#[derive(Debug)]
pub struct Figures {
    pub sent: usize,
    pub failed: usize,
    pub wrong: usize,
    pub unanswered: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Queries that took longer than 200 ms, and than 1 s.
    pub over_200ms: usize,
    pub over_1s: usize,
    pub errors: BTreeMap<String, usize>,
}

impl Figures {
    /// The figures of the outcomes sent within `[from, to)`.
    pub fn of(outcomes: &[Outcome], from: Duration, to: Duration) -> Figures {
        let window: Vec<&Outcome> = outcomes
            .iter()
            .filter(|outcome| outcome.sent >= from && outcome.sent < to)
            .collect();
        let mut latencies: Vec<Duration> = window.iter().map(|outcome| outcome.latency).collect();
        latencies.sort();
        let quantile = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        let mut errors = BTreeMap::new();
        for outcome in &window {
            if let Verdict::Explicit(kind) = &outcome.verdict {
                *errors.entry(kind.clone()).or_default() += 1;
            }
        }
        Figures {
            sent: window.len(),
            failed: window
                .iter()
                .filter(|outcome| outcome.verdict != Verdict::Exact)
                .count(),
            wrong: window
                .iter()
                .filter(|outcome| matches!(outcome.verdict, Verdict::Wrong(_)))
                .count(),
            unanswered: window
                .iter()
                .filter(|outcome| outcome.verdict == Verdict::Unanswered)
                .count(),
            p50: quantile(0.5),
            p99: quantile(0.99),
            max: latencies.last().copied().unwrap_or_default(),
            over_200ms: latencies
                .iter()
                .filter(|latency| **latency > Duration::from_millis(200))
                .count(),
            over_1s: latencies
                .iter()
                .filter(|latency| **latency > Duration::from_secs(1))
                .count(),
            errors,
        }
    }

    /// Failed queries, in percent of those sent.
    pub fn failed_percent(&self) -> f64 {
        100.0 * self.failed as f64 / self.sent.max(1) as f64
    }

    /// One line for the test's output.
    pub fn line(&self, label: &str) -> String {
        format!(
            "{label}: {} sent, {} failed ({:.2} %), {} wrong, {} unanswered, p50 {:?}, p99 {:?}, max {:?}, > 200 ms {}, > 1 s {}, errors {:?}",
            self.sent,
            self.failed,
            self.failed_percent(),
            self.wrong,
            self.unanswered,
            self.p50,
            self.p99,
            self.max,
            self.over_200ms,
            self.over_1s,
            self.errors
        )
    }
}

/// Asserts what no noise can excuse: no wrong answer and no unanswered query; every failure
/// was explicit.
pub fn assert_exact_or_explicit(outcomes: &[Outcome]) {
    let bad: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| matches!(outcome.verdict, Verdict::Wrong(_) | Verdict::Unanswered))
        .collect();
    assert!(
        bad.is_empty(),
        "{} queries were wrong or unanswered, first: {:?}",
        bad.len(),
        bad.first()
    );
}
