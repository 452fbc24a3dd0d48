//! `cluster-agent bench`: Flotilla's full path next to its limit, in-process DataFusion on the
//! same files, measured in one run on one machine.
//!
//! ```text
//!  bench short  one query (or a mix, --mix DIR), N concurrent tasks, closed loop:
//!               SessionContext  vs  HTTP → gateway → shard → TaskManagers → gateway;
//!               then one task (sequential latency)
//!  bench tpch   each TPC-H query, median of --runs:          SessionContext  vs  the same path
//! ```
//! The federation (`--url`) must serve the same data as `--data-dir` (`cluster-agent local
//! --data-dir DIR` does). Both sides share the machine: the federation idles while the
//! in-process side runs, and the other way round.

mod plan;

use crate::catalog::CatalogConfig;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags of `cluster-agent bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// One short query, or a mix of them: throughput and latency, Flotilla vs in-process
    /// DataFusion.
    Short(ShortArgs),
    /// Each TPC-H query: Flotilla vs in-process DataFusion.
    Tpch(TpchArgs),
    /// Where a shard's time goes for one query (no federation needed): each planning step,
    /// sequentially, next to the whole query in-process.
    Plan(PlanArgs),
}

#[derive(Debug, Args)]
struct PlanArgs {
    /// The TPC-H data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The query.
    #[arg(long, default_value = "SELECT count(*) FROM nation")]
    sql: String,
    /// Timed runs of each step.
    #[arg(long, default_value_t = 2000)]
    runs: usize,
}

/// Where both sides find the data.
#[derive(Debug, Args)]
struct Target {
    /// The gateway of a federation serving `--data-dir`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The TPC-H data directory the federation serves.
    #[arg(long)]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ShortArgs {
    #[command(flatten)]
    target: Target,
    /// The query.
    #[arg(long, default_value = "SELECT count(*) FROM nation")]
    sql: String,
    /// A directory of `*.sql` files (e.g. `sql-samples/short`): each task and client runs them
    /// in turn, instead of `--sql`.
    #[arg(long)]
    mix: Option<PathBuf>,
    /// Concurrent tasks (in-process) and clients (Flotilla).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Measure Flotilla only, with `--concurrency` clients (every answer is still checked).
    #[arg(long)]
    flotilla_only: bool,
}

#[derive(Debug, Args)]
struct TpchArgs {
    #[command(flatten)]
    target: Target,
    /// Directory of `qNN.sql` files.
    #[arg(long, default_value = "sql-samples/tpch")]
    queries: PathBuf,
    /// Timed runs per query and side (after one warm-up run); the median counts.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Runs a benchmark and prints its table.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        Bench::Short(args) => short(args).await,
        Bench::Tpch(args) => tpch(args).await,
        Bench::Plan(args) => plan::plan(args).await,
    }
}

/// Throughput and latency of one closed-loop measurement.
struct Measured {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Queries that ended with an error.
    failed: u64,
    /// Queries answered, but not with in-process DataFusion's answer.
    wrong: u64,
}

impl Measured {
    fn row(&self, name: &str) -> String {
        format!(
            "{name:<34} {:>10.1} {:>10.3} {:>10.3} {:>8} {:>8}",
            self.qps, self.p50_ms, self.p99_ms, self.failed, self.wrong
        )
    }
}

/// Runs `query` from `tasks` concurrent tasks in a closed loop for `seconds`.
async fn closed_loop<F, Fut>(tasks: usize, seconds: u64, query: F) -> Measured
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send,
{
    let query = Arc::new(query);
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks.max(1) {
        let query = Arc::clone(&query);
        set.spawn(async move {
            let mut histogram = new_histogram();
            let (mut failed, mut wrong) = (0, 0);
            while Instant::now() < end {
                let sent = Instant::now();
                match query().await {
                    Ok(right) => {
                        histogram.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                        wrong += u64::from(!right);
                    }
                    Err(_) => failed += 1,
                }
            }
            (histogram, failed, wrong)
        });
    }
    let mut histogram = new_histogram();
    let (mut failed, mut wrong) = (0, 0);
    while let Some(joined) = set.join_next().await {
        if let Ok((part, part_failed, part_wrong)) = joined {
            let _ = histogram.add(&part);
            failed += part_failed;
            wrong += part_wrong;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Measured {
        qps: histogram.len() as f64 / elapsed,
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        failed,
        wrong,
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid")))
}

/// The in-process side: every TPC-H table of `data_dir`, one partition per core.
async fn reference(data_dir: &std::path::Path) -> anyhow::Result<SessionContext> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(false));
    CatalogConfig::tpch(data_dir)
        .register(&ctx)
        .await
        .with_context(|| format!("registering the tables of {}", data_dir.display()))?;
    Ok(ctx)
}

async fn in_process(ctx: &SessionContext, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

async fn flotilla(client: &flotilla_client::Client, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    flotilla_with(client, sql, false).await
}

/// Runs `sql` through the gateway; `fresh`: bypassing the result cache.
async fn flotilla_with(
    client: &flotilla_client::Client,
    sql: &str,
    fresh: bool,
) -> anyhow::Result<Vec<RecordBatch>> {
    let options = flotilla_client::QueryOptions {
        no_cache: fresh,
        ..Default::default()
    };
    let stream = client.query_with(sql, &options).await?;
    Ok(stream.try_collect().await?)
}

async fn short(args: ShortArgs) -> anyhow::Result<()> {
    let ctx = Arc::new(reference(&args.target.data_dir).await?);
    let client = flotilla_client::Client::new(&args.target.url)?;
    let (shown, queries) = match &args.mix {
        Some(dir) => {
            let queries = sql_files(dir)?.into_iter().map(|(_, sql)| sql).collect();
            (format!("mix {}", dir.display()), queries)
        }
        None => (format!("query `{}`", args.sql), vec![args.sql.clone()]),
    };
    // Every Flotilla answer is checked against in-process DataFusion's.
    let mut expected = std::collections::HashMap::new();
    for sql in &queries {
        expected.insert(sql.clone(), canonical(&in_process(&ctx, sql).await?)?);
        let got = canonical(&flotilla(&client, sql).await?)?;
        anyhow::ensure!(
            expected[sql] == got,
            "Flotilla's answer differs from in-process DataFusion's: {sql}"
        );
    }
    let expected = Arc::new(expected);
    let queries: Arc<[String]> = queries.into();
    println!(
        "short {shown}: closed loop, {} s per measurement, 2 cores shared by both sides",
        args.seconds
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "", "q/s", "p50 ms", "p99 ms", "failed", "wrong"
    );
    let rounds: &[usize] = if args.flotilla_only {
        &[args.concurrency][..]
    } else {
        &[args.concurrency, 1][..]
    };
    for &tasks in rounds {
        let mut flotilla_rows = Vec::new();
        for (fresh, name) in [(true, "no cache"), (false, "result cache")] {
            let (client, next, expected) =
                (client.clone(), in_turn(&queries), Arc::clone(&expected));
            let remote = closed_loop(tasks, args.seconds, move || {
                let (client, sql, expected) = (client.clone(), next(), Arc::clone(&expected));
                async move {
                    let answer = flotilla_with(&client, &sql, fresh).await?;
                    Ok(canonical(&answer)? == expected[&sql])
                }
            })
            .await;
            println!(
                "{}",
                remote.row(&format!("Flotilla {name}, {tasks} clients"))
            );
            anyhow::ensure!(
                remote.wrong == 0,
                "{} answers differed from DataFusion's",
                remote.wrong
            );
            flotilla_rows.push((name, remote));
        }
        if args.flotilla_only {
            continue;
        }
        let local = {
            let (ctx, next) = (Arc::clone(&ctx), in_turn(&queries));
            closed_loop(tasks, args.seconds, move || {
                let (ctx, sql) = (Arc::clone(&ctx), next());
                async move { in_process(&ctx, &sql).await.map(|_| true) }
            })
            .await
        };
        println!("{}", local.row(&format!("in-process, {tasks} tasks")));
        for (name, remote) in &flotilla_rows {
            println!(
                "{:<34} {:>10.2} {:>10.2} {:>10.2}",
                format!("ratio {name} / in-process"),
                remote.qps / local.qps,
                remote.p50_ms / local.p50_ms,
                remote.p99_ms / local.p99_ms
            );
        }
    }
    Ok(())
}

/// An answer as sorted text lines: equal for equal rows in any order.
fn canonical(batches: &[RecordBatch]) -> anyhow::Result<String> {
    let text = datafusion::arrow::util::pretty::pretty_format_batches(batches)?.to_string();
    let mut lines: Vec<&str> = text.lines().skip(3).collect();
    lines.sort_unstable();
    Ok(lines.join("\n"))
}

/// Returns a function that hands out `queries` one after the other, round and round.
fn in_turn(queries: &Arc<[String]>) -> impl Fn() -> String + Send + Sync + 'static {
    let queries = Arc::clone(queries);
    let next = std::sync::atomic::AtomicUsize::new(0);
    move || {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        queries[n % queries.len()].clone()
    }
}

/// Reads the `*.sql` files of `dir`, by name: (file stem, SQL).
fn sql_files(dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no .sql file in {}", dir.display());
    files
        .iter()
        .map(|file| {
            let name = file
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sql = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            Ok((name, sql))
        })
        .collect()
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Median of `runs` timed runs after one warm-up, in milliseconds; also the row count.
async fn median_ms<F, Fut>(runs: usize, run: F) -> anyhow::Result<(f64, usize)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<RecordBatch>>>,
{
    let warm = run().await?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        run().await?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], rows(&warm)))
}

async fn tpch(args: TpchArgs) -> anyhow::Result<()> {
    let ctx = reference(&args.target.data_dir).await?;
    let client = flotilla_client::Client::new(&args.target.url)?;
    let queries = sql_files(&args.queries)?;
    println!(
        "TPC-H over {}: median of {} runs after a warm-up, in ms",
        args.target.data_dir.display(),
        args.runs
    );
    println!(
        "{:<6} {:>12} {:>12} {:>8} {:>8}",
        "query", "in-process", "Flotilla", "ratio", "rows"
    );
    let (mut local_total, mut remote_total) = (0.0, 0.0);
    for (name, sql) in queries {
        let (local, local_rows) = median_ms(args.runs, || in_process(&ctx, &sql)).await?;
        let (remote, remote_rows) = median_ms(args.runs, || flotilla(&client, &sql)).await?;
        anyhow::ensure!(
            local_rows == remote_rows,
            "{name}: Flotilla answered {remote_rows} rows, in-process DataFusion {local_rows}"
        );
        println!(
            "{name:<6} {local:>12.1} {remote:>12.1} {:>8.2} {local_rows:>8}",
            remote / local
        );
        local_total += local;
        remote_total += remote;
    }
    println!(
        "{:<6} {local_total:>12.1} {remote_total:>12.1} {:>8.2}",
        "total",
        remote_total / local_total
    );
    Ok(())
}
