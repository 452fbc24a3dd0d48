//! The soak: a federation (a gateway with Flight SQL, two shards, two TaskManagers, separate
//! processes) under mixed load for `FLOTILLA_SOAK_SECONDS` (default 180: the CI version;
//! `load-tests/soak` runs 1800): the short mix open-loop, big results read at full speed and
//! slowly, cancels and Flight SQL prepared statements, every answer checked against in-process
//! DataFusion, while `jm-1` and `tm-1` are drained and started again in turn every few minutes.
//! The survivors (`gateway`, `jm-0`, `tm-0`) run throughout.
//!
//! Printed: each client's tally, the short mix's p99 in its first and last window, and per
//! process the growth of resident memory, open files and threads after the warm-up (targets:
//! under 1 MiB per 10 minutes, p99 last ≤ 1.2 × first). Asserted: no wrong or unanswered
//! answer, explicit errors ≤ 0.1 %, every restart serving again, slots, leases, tickets,
//! streams and in-flight queries back to 0 at the end, and no process's open files or
//! threads grown by more than a leak would explain.

#[path = "../common/mod.rs"]
mod common;
#[path = "../hosts/load.rs"]
mod load;

mod clients;
mod sampler;

use common::{Federation, FederationOptions};
use load::{Answers, Figures, assert_exact_or_explicit, open_loop};
use sampler::Sampler;
use std::time::Duration;
use tokio::time::Instant;

/// Queries a second of the short mix (`FLOTILLA_SOAK_RATE`): with the other clients, about half
/// of this 2-core machine's CPU in a debug build (the soak prints the share it used).
const RATE: f64 = 30.0;
/// The other clients' paces.
const BIG_EVERY: Duration = Duration::from_secs(10);
const SLOW_EVERY: Duration = Duration::from_secs(1);
const CANCEL_EVERY: Duration = Duration::from_secs(5);
const PREPARED_EVERY: Duration = Duration::from_millis(500);
/// How often every process is read.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Longest a drained member may take to exit, and the federation to settle after the load.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
const SETTLE_LIMIT: Duration = Duration::from_secs(20);
/// Open files and threads a process may end with beyond where its warm-up left it: more is a
/// leak, not a pool's churn.
const FD_SLACK: f64 = 64.0;
const THREAD_SLACK: f64 = 32.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_mixed_load_with_restarts_gives_exact_answers_and_leaks_nothing() {
    let length = Duration::from_secs(env_or("FLOTILLA_SOAK_SECONDS", 180));
    let rate = env_or("FLOTILLA_SOAK_RATE", RATE);
    // Restarts every few minutes (at least two in the CI version); the warm-up is a sixth of
    // the run (30 s to 5 min), the p99 windows a third (at most 5 min).
    let restart_every = (length / 7).clamp(Duration::from_secs(45), Duration::from_secs(240));
    let warm_up = (length / 6).clamp(Duration::from_secs(30), Duration::from_secs(300));
    let window = (length / 3).min(Duration::from_secs(300));
    let mut federation = Federation::start_with_options(FederationOptions {
        gateway_toml: "[flight]\nlisten = \"127.0.0.1:0\"\n".into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let flight_url = format!("http://{}", federation.gateway.addresses["flight"]);
    println!(
        "soak for {length:?}: {rate} short queries/s, a big result every {BIG_EVERY:?}, a slow \
         reader, a cancel every {CANCEL_EVERY:?}, a prepared statement every \
         {PREPARED_EVERY:?}; a restart every {restart_every:?}"
    );

    let answers = Answers::short_mix().await;
    let started = Instant::now();
    let until = started + length;
    let spawn = flotilla_cluster::spawn_instrumented::<clients::Running>;
    let short = flotilla_cluster::spawn_instrumented({
        let url = url.clone();
        async move { open_loop(&url, rate, length, answers).await }
    });
    let others = [
        (
            "big",
            spawn(Box::pin(clients::big(url.clone(), BIG_EVERY, false, until))),
        ),
        (
            "slow",
            spawn(Box::pin(clients::big(url.clone(), SLOW_EVERY, true, until))),
        ),
        (
            "cancel",
            spawn(Box::pin(clients::cancels(url.clone(), CANCEL_EVERY, until))),
        ),
        (
            "prepared",
            spawn(Box::pin(clients::prepared(
                flight_url,
                PREPARED_EVERY,
                until,
            ))),
        ),
    ];

    let mut sampler = Sampler::new();
    let cpu_before = sampler::machine_cpu();
    let mut restarts = Vec::new();
    let mut next_restart = started + restart_every;
    for _ in 0..=length.as_secs() / SAMPLE_EVERY.as_secs() {
        if Instant::now() >= until {
            break;
        }
        sampler.record(readings(&federation).await);
        if Instant::now() >= next_restart && until - Instant::now() > Duration::from_secs(20) {
            let member = if restarts.len() % 2 == 0 {
                "tm-1"
            } else {
                "jm-1"
            };
            let took = restart(&mut federation, member).await;
            println!(
                "{:>6.0?} {member} drained and serving again in {took:?}",
                started.elapsed()
            );
            restarts.push((member, took));
            next_restart += restart_every;
        }
        tokio::time::sleep_until((Instant::now() + SAMPLE_EVERY).min(until)).await;
    }

    let outcomes = short.await.unwrap();
    let cpu_after = sampler::machine_cpu();
    let mut tallies = Vec::new();
    for (name, client) in others {
        tallies.push((name, client.await.unwrap()));
    }
    let settled = settled(&federation).await;
    // Pools retire idle threads after 10 s: the last reading is taken after that.
    tokio::time::sleep(Duration::from_secs(12)).await;
    sampler.record(readings(&federation).await);

    let all = Figures::of(&outcomes, Duration::ZERO, Duration::MAX);
    let first = Figures::of(&outcomes, Duration::ZERO, window);
    let last = Figures::of(&outcomes, length.saturating_sub(window), Duration::MAX);
    println!("{}", all.line("short mix"));
    for outcome in outcomes.iter().filter(|o| !o.message.is_empty()).take(20) {
        println!("{:>8.1?} failed: {:.300}", outcome.sent, outcome.message);
    }
    println!(
        "short mix p99: first {window:?} {:?}, last {window:?} {:?} (ratio {:.2}; target ≤ 1.2)",
        first.p99,
        last.p99,
        last.p99.as_secs_f64() / first.p99.as_secs_f64().max(1e-6)
    );
    for (name, tally) in &tallies {
        println!(
            "{name}: {} calls, {} exact, {} wrong, {} unanswered, explicit {:?}",
            tally.calls(),
            tally.exact,
            tally.wrong.len(),
            tally.unanswered,
            tally.explicit
        );
    }
    println!(
        "the machine's CPU was {:.0} % busy under the load (test client included)",
        100.0 * (cpu_after.0 - cpu_before.0) / (cpu_after.1 - cpu_before.1).max(1.0)
    );
    // Only processes that lived through most of the run: a restarted member's short life
    // gives a slope of noise.
    let growth: Vec<_> = sampler
        .growth(warm_up)
        .into_iter()
        .filter(|process| process.span >= length.saturating_sub(warm_up) / 2)
        .collect();
    println!("growth after a warm-up of {warm_up:?} (per 10 minutes; first -> last reading):");
    for process in &growth {
        println!(
            "  {:<8} pid {:<7} over {:>6.0?}: RSS {:+7.2} MiB ({:.1} -> {:.1}), fds {:+6.1} \
             ({} -> {}), threads {:+6.1} ({} -> {}), CPU {:.0} % of a core{}",
            process.name,
            process.pid,
            process.span,
            process.rss_mib_per_10_min,
            process.rss_mib.0,
            process.rss_mib.1,
            process.fds_per_10_min,
            process.fds.0,
            process.fds.1,
            process.threads_per_10_min,
            process.threads.0,
            process.threads.1,
            100.0 * process.cpu,
            match (process.heap_mib_per_10_min, process.heap_mib) {
                (Some(slope), Some((first, last))) =>
                    format!(", heap {slope:+.2} MiB ({first:.1} -> {last:.1})"),
                _ => String::new(),
            }
        );
    }

    assert_exact_or_explicit(&outcomes);
    let calls = all.sent as u64 + tallies.iter().map(|(_, t)| t.calls()).sum::<u64>();
    let failed = all.failed as u64
        + tallies
            .iter()
            .map(|(_, t)| t.explicit.values().sum::<u64>())
            .sum::<u64>();
    println!("every client: {calls} calls, {failed} explicit errors");
    for (name, tally) in &tallies {
        assert!(
            tally.wrong.is_empty() && tally.unanswered == 0,
            "{name}: wrong {:?}, unanswered {}",
            tally.wrong.first(),
            tally.unanswered
        );
        assert!(tally.exact > 0, "{name}: no call succeeded");
    }
    assert!(
        failed * 1000 <= calls,
        "{failed} explicit errors of {calls} calls: more than 0.1 %"
    );
    assert!(
        settled,
        "slots, leases, tickets or queries left after the load"
    );
    for process in &growth {
        assert!(
            process.fds.1 <= process.fds.0 + FD_SLACK
                && process.threads.1 <= process.threads.0 + THREAD_SLACK,
            "{} grew from {} to {} open files and {} to {} threads",
            process.name,
            process.fds.0,
            process.fds.1,
            process.threads.0,
            process.threads.1
        );
    }
}

/// Each process's name, pid and live heap (`flotilla_memory_allocated_bytes`, where its
/// `/metrics` has it).
async fn readings(federation: &Federation) -> Vec<(&str, i32, Option<f64>)> {
    let mut all = Vec::new();
    for process in federation.processes() {
        let base = process
            .addresses
            .get("admin")
            .or_else(|| process.addresses.get("http"));
        let mut heap = None;
        if let Some(base) = base {
            let url = format!("http://{base}/metrics");
            let metrics = tokio::time::timeout(
                Duration::from_secs(2),
                common::try_http("GET", &url, &[], bytes::Bytes::new()),
            )
            .await;
            if let Ok(Ok(response)) = metrics {
                heap = String::from_utf8_lossy(&response.body)
                    .lines()
                    .find_map(|line| line.strip_prefix("flotilla_memory_allocated_bytes "))
                    .and_then(|value| value.trim().parse::<f64>().ok());
            }
        }
        all.push((process.name.as_str(), process.pid(), heap));
    }
    all
}

/// Drains `member` (`tm-1` or `jm-1`: SIGTERM, it finishes its work and exits), starts it again
/// and waits until the federation sees it; the time all that took.
async fn restart(federation: &mut Federation, member: &str) -> Duration {
    let asked = Instant::now();
    if member == "tm-1" {
        federation.taskmanagers[1].terminate(DRAIN_LIMIT).await;
        federation.restart_taskmanager(1);
    } else {
        federation.shards[1].terminate(DRAIN_LIMIT).await;
        federation.restart_shard(1);
    }
    tokio::task::block_in_place(|| federation.wait_converged());
    asked.elapsed()
}

/// Waits until no TaskManager holds a slot, lease, ticket, task or stream and no shard or
/// gateway a query; says whether that happened within [`SETTLE_LIMIT`].
async fn settled(federation: &Federation) -> bool {
    let metrics = format!("{}/metrics", federation.url());
    let settled = common::eventually(SETTLE_LIMIT, async || {
        let mut busy = common::metric_sum(&metrics, "flotilla_gateway_in_flight").await as u64;
        for taskmanager in &federation.taskmanagers {
            let state = common::state(taskmanager).await;
            for pointer in [
                "/slots/slots_used",
                "/slots/leases_active",
                "/pending_tickets",
                "/tasks_running",
                "/results_streaming",
            ] {
                busy += state.pointer(pointer).and_then(|v| v.as_u64()).unwrap_or(1);
            }
        }
        for shard in &federation.shards {
            let state = common::state(shard).await;
            for pointer in ["/in_flight", "/queued"] {
                busy += state.pointer(pointer).and_then(|v| v.as_u64()).unwrap_or(1);
            }
        }
        busy == 0
    })
    .await;
    if !settled {
        federation.dump_logs();
    }
    settled
}
