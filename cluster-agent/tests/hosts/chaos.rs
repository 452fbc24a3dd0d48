//! Chaos: for a bounded time, one random fault every few seconds (kill -9 and restart,
//! SIGSTOP/SIGCONT, a host cut off, a one-way cut) on a random TaskManager or shard, under
//! 50 queries/s of the short mix with every answer checked. Reports queries, exact, wrong (must
//! be 0), explicit errors by kind and each member's time to serve again.
//!
//! `FLOTILLA_CHAOS_SECONDS` sets the length (default 60; `load-tests/chaos` runs longer ones),
//! `FLOTILLA_CHAOS_SEED` replays a run (its seed is printed).

use crate::cluster::{AGENTS, HostCluster, on_hosts};
use crate::load::{Answers, Figures, assert_exact_or_explicit, open_loop};
use nix::sys::signal::Signal;
use std::time::Duration;
use tokio::time::Instant;

/// Members faults hit: the gateway is the test's only way in, so it is spared.
const TARGETS: [&str; 4] = AGENTS;
const RATE: f64 = 50.0;

/// A tiny deterministic generator (xorshift64*): the run is replayable from its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

#[test]
fn chaos_under_load_gives_only_exact_answers_or_explicit_errors() {
    let seconds = env_u64("FLOTILLA_CHAOS_SECONDS").unwrap_or(60);
    let seed = env_u64("FLOTILLA_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    println!("chaos for {seconds} s, FLOTILLA_CHAOS_SEED={seed}");
    on_hosts(async move |cluster| chaos(cluster, Duration::from_secs(seconds), Dice(seed)).await);
}

async fn chaos(mut cluster: HostCluster, length: Duration, mut dice: Dice) {
    let answers = Answers::short_mix().await;
    let url = cluster.url.clone();
    // The load runs a little longer than the faults: the last one is healed under load.
    let load_for = length + Duration::from_secs(8);
    let load = flotilla_cluster::spawn_instrumented(async move {
        open_loop(&url, RATE, load_for, answers).await
    });
    let started = Instant::now();
    // Each fault, its member's time to serve again, and its window: from its start until then.
    let mut recoveries = Vec::new();
    tokio::time::sleep(Duration::from_secs(2)).await;
    while started.elapsed() < length {
        let target = TARGETS[dice.below(TARGETS.len() as u64) as usize];
        let lasts = dice.millis(1_000, 6_000);
        let kind = dice.below(4);
        let label = match kind {
            0 => "kill -9",
            1 => "SIGSTOP",
            2 => "cut off",
            _ => "one-way cut",
        };
        let at = started.elapsed();
        match kind {
            0 => cluster.member(target).kill(),
            1 => cluster.signal(target, Signal::SIGSTOP),
            2 => cluster.world.set_link(cluster.world.host(target), false),
            _ => {
                let peer = TARGETS[dice.below(TARGETS.len() as u64) as usize];
                let peer = if peer == target { "gateway" } else { peer };
                let peer_ip = cluster.world.host(peer).ip;
                cluster.world.host(target).drop_outbound_to(peer_ip);
            }
        }
        tokio::time::sleep(lasts).await;
        match kind {
            0 => {
                let process = cluster.start_member(target);
                *cluster.member(target) = process;
            }
            1 => cluster.signal(target, Signal::SIGCONT),
            2 => cluster.world.set_link(cluster.world.host(target), true),
            _ => cluster.world.host(target).heal(),
        }
        let healed = Instant::now();
        let restarted = (kind == 0).then_some(0);
        let recovery = cluster
            .time_to_work(target, healed, Duration::from_secs(15), restarted)
            .await;
        println!("{at:>8.1?} {label:<12} {target} for {lasts:?}: serving again after {recovery:?}");
        if recovery.is_none_or(|recovery| recovery > Duration::from_secs(3)) {
            cluster.print_views().await;
        }
        recoveries.push((label, target, recovery, at..started.elapsed()));
        tokio::time::sleep(dice.millis(500, 2_000)).await;
    }
    let outcomes = load.await.unwrap();
    let all = Figures::of(&outcomes, Duration::ZERO, Duration::MAX);
    println!("{}", all.line("chaos"));
    let exact = all.sent - all.failed;
    println!(
        "queries {}, exact {exact}, wrong {}, unanswered {}, explicit errors {:?}",
        all.sent, all.wrong, all.unanswered, all.errors
    );
    for (label, target, _, window) in &recoveries {
        let failed = Figures::of(&outcomes, window.start, window.end);
        if failed.failed > 0 {
            println!(
                "{:>8.1?} {label:<12} {target}: {} of {} queries sent until it served again failed {:?}",
                window.start, failed.failed, failed.sent, failed.errors
            );
        }
    }
    // Each failure, when it was sent and what it said (bounded), to attribute it.
    let failures = outcomes
        .iter()
        .filter(|outcome| matches!(outcome.verdict, crate::load::Verdict::Explicit(_)));
    for outcome in failures.take(100) {
        println!(
            "{:>8.1?} failed after {:>7.1?}: {:.300}",
            outcome.sent, outcome.latency, outcome.message
        );
    }
    // A ticket nobody fetched holds its slots until the fetch window ends, a lease whose head
    // stopped renewing it until its TTL ends: suspects of `cluster_busy`.
    for name in crate::cluster::TASKMANAGERS {
        let tickets = cluster
            .metric(name, "flotilla_taskmanager_tickets_expired_total")
            .await;
        let leases = cluster
            .metric(name, "flotilla_taskmanager_leases_expired_total")
            .await;
        println!(
            "{name}: {tickets} tickets expired unfetched, {leases} leases expired, since its last start"
        );
    }
    // Extra work: hedges sent, won and refused, re-runs by reason and refused by the budget.
    let gateway = format!("{}/metrics", cluster.url);
    let mut extra = Vec::new();
    for series in [
        "flotilla_gateway_hedges_total{outcome=\"sent\"}",
        "flotilla_gateway_hedges_total{outcome=\"won\"}",
        "flotilla_gateway_hedges_total{outcome=\"refused\"}",
        "flotilla_gateway_retries_total{reason=\"shard\"}",
        "flotilla_gateway_retries_total{reason=\"taskmanager\"}",
        "flotilla_gateway_retries_refused_total",
        "flotilla_gateway_sidelined_total",
    ] {
        let value = crate::common::metric_sum(&gateway, series).await;
        extra.push(format!("{series} {value}"));
    }
    println!("gateway: {}", extra.join(", "));
    let slowest = recoveries
        .iter()
        .filter_map(|(_, _, recovery, _)| *recovery)
        .max();
    println!("{} faults; slowest recovery {slowest:?}", recoveries.len());
    if all.failed > 0 {
        cluster.dump_logs();
    }
    assert_exact_or_explicit(&outcomes);
    for (label, target, recovery, _) in &recoveries {
        assert!(
            recovery.is_some(),
            "{target} did not serve again after {label}"
        );
    }
    assert!(
        cluster.taskmanagers_idle(Duration::from_secs(15)).await,
        "a slot, lease or result stream leaked"
    );
}
