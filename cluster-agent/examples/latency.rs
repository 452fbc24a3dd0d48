//! Sequential latency of one short query: through a running federation (gateway → shard →
//! TaskManager → gateway, with the Rust client) versus in-process DataFusion on the same files.
//!
//! `cargo run --release -p cluster-agent --example latency -- http://127.0.0.1:8080 data/tpch-sf0.1 [count] [sql]`

use futures::TryStreamExt;
use std::time::{Duration, Instant};

fn percentile(samples: &mut [Duration], quantile: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * quantile).round() as usize;
    samples[index]
}

fn report(name: &str, samples: &mut [Duration]) -> Duration {
    let p50 = percentile(samples, 0.50);
    let p99 = percentile(samples, 0.99);
    println!(
        "{name:<28} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    p50
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let data = args.next().unwrap_or_else(|| "data/tpch-sf0.1".into());
    let count: usize = args
        .next()
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(500);
    let sql = args
        .next()
        .unwrap_or_else(|| "SELECT count(*) FROM nation".into());
    let warmup = (count / 10).max(10);

    let client = flotilla_client::Client::new(&url)?;
    let mut federation = Vec::with_capacity(count);
    for round in 0..warmup + count {
        let started = Instant::now();
        let batches: Vec<_> = client.query(&sql).await?.try_collect().await?;
        let elapsed = started.elapsed();
        assert!(!batches.is_empty());
        if round >= warmup {
            federation.push(elapsed);
        }
    }

    let ctx = datafusion::prelude::SessionContext::new();
    for table in cluster_agent::TPCH_TABLES {
        ctx.register_parquet(table, format!("{data}/{table}/"), Default::default())
            .await?;
    }
    let mut in_process = Vec::with_capacity(count);
    for round in 0..warmup + count {
        let started = Instant::now();
        let batches = ctx.sql(&sql).await?.collect().await?;
        let elapsed = started.elapsed();
        assert!(!batches.is_empty());
        if round >= warmup {
            in_process.push(elapsed);
        }
    }

    println!("query: {sql}");
    let through = report("flotilla full path", &mut federation);
    let local = report("in-process DataFusion", &mut in_process);
    println!(
        "ratio p50 full path / in-process: {:.2}",
        through.as_secs_f64() / local.as_secs_f64()
    );
    Ok(())
}
