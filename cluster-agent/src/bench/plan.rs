//! `cluster-agent bench plan`: where a shard's time goes for one query, step by step.

use super::PlanArgs;
use crate::catalog::CatalogConfig;
use std::time::Instant;

/// Times each step a shard and the head take for one query, in-process and sequentially.
pub(super) async fn plan(args: PlanArgs) -> anyhow::Result<()> {
    use crate::jobmanager::planner::Planner;
    let ctx = super::reference(&args.data_dir).await?;
    let catalog = CatalogConfig::tpch(&args.data_dir);
    let planner = Planner::new(
        &catalog,
        &crate::config::JobManagerConfig::default(),
        crate::config::MemoryConfig::default().max_call_bytes(),
    )
    .await?;
    let workers = vec![
        "http://127.0.0.1:1".to_string(),
        "http://127.0.0.1:2".to_string(),
    ];
    let sql = args.sql.as_str();
    let runs = args.runs.max(1);
    let logical = planner.prepare(sql).await?;
    let planned = planner.plan(&logical, &workers).await?;
    let task_ctx = ctx.state().task_ctx();
    let shown: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let shown = shown
        .get(..70)
        .map_or(shown.clone(), |head| format!("{head}..."));
    println!("`{shown}`: mean of {runs} sequential runs per step");
    println!(
        "encoded plan {} bytes, {} session options shipped, widest stage {} task(s)",
        planned.plan.len(),
        planned.options.len(),
        planned.width
    );
    time_step("in-process sql + collect", runs, async || {
        super::in_process(&ctx, sql).await.map(drop)
    })
    .await?;
    time_step("shard: parse + logical plan", runs, async || {
        Ok(planner.prepare(sql).await.map(drop)?)
    })
    .await?;
    time_step(
        "shard: optimize + physical plan + encode",
        runs,
        async || Ok(planner.plan(&logical, &workers).await.map(drop)?),
    )
    .await?;
    time_step("head: decode plan", runs, async || {
        Ok(crate::codec::decode_plan(&planned.plan, &task_ctx).map(drop)?)
    })
    .await?;
    Ok(())
}

/// Runs `step` `runs` times in a row and prints its mean time.
async fn time_step(
    name: &str,
    runs: usize,
    step: impl AsyncFn() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for _ in 0..runs {
        step().await?;
    }
    let mean_us = started.elapsed().as_secs_f64() * 1e6 / runs as f64;
    println!("{name:<40} {mean_us:>9.1} us");
    Ok(())
}
