//! `cluster-agent simulate`: thousands of TaskManagers reporting to tens of shards in one
//! process, in virtual time, with the real report encoder, decoder, reporter and shard table
//! (`flotilla_cluster::reports`). Prints per role bytes and datagrams per second, the largest
//! datagram, how long a join, a crash and a freeze take to reach every shard, and false downs
//! under loss and pauses.
//!
//! Timeline: every TaskManager starts at 0 (random phase); the steady state is measured from
//! 8 s on; one more TaskManager joins at 10 s; one crashes at 12 s; one freezes from 14 s to
//! 19 s; `--pause-fraction` of the others pause 2 s each at random times from 20 s on.

mod gossip;
mod world;

use flotilla_cluster::reports::{ReportsConfig, Traffic};
use std::time::{Duration, Instant};
use world::{Fate, World};

/// Bytes of IPv4 and UDP headers per datagram.
const HEADERS: u64 = 28;

/// What `simulate` runs.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// TaskManagers.
    #[arg(long, default_value_t = 1000)]
    taskmanagers: usize,
    /// Shards.
    #[arg(long, default_value_t = 50)]
    shards: usize,
    /// Virtual seconds to run (at least 30).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Share of datagrams lost, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Share of TaskManagers that pause for 2 s, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pause_fraction: f64,
    /// `reports.interval_ms`.
    #[arg(long)]
    interval_ms: Option<u64>,
    /// `reports.suspect_after_ms`.
    #[arg(long)]
    suspect_after_ms: Option<u64>,
    /// Seed of the random phases, losses and pauses.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `reports` (TaskManagers report to the shards), or `gossip`: the design before it, every
    /// member in one chitchat cluster (the baseline; slow past a few hundred members).
    #[arg(long, default_value = "reports")]
    design: String,
}

/// Runs the simulation and prints its report.
pub async fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    match args.design.as_str() {
        "reports" => {}
        "gossip" => return gossip::run(args.taskmanagers, args.shards, args.seconds.max(3)).await,
        other => anyhow::bail!("--design is `reports` or `gossip`, not `{other}`"),
    }
    anyhow::ensure!(
        args.taskmanagers >= 2 && args.shards >= 1,
        "need 2 TaskManagers and a shard"
    );
    anyhow::ensure!((0.0..1.0).contains(&args.loss), "--loss is a share below 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.pause_fraction),
        "--pause-fraction is a share"
    );
    let mut config = ReportsConfig::default();
    config.interval_ms = args.interval_ms.unwrap_or(config.interval_ms).max(10);
    config.suspect_after_ms = args.suspect_after_ms.unwrap_or(config.suspect_after_ms);
    let seconds = args.seconds.max(30);
    let end = Duration::from_secs(seconds);
    let steady = Duration::from_secs(8);
    let (joiner, crasher, freezer) = (args.taskmanagers, 0, 1);
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut fates = vec![Fate::default(); args.taskmanagers + 1];
    fates[joiner].joins_at = Duration::from_secs(10);
    fates[crasher].crashes_at = Some(Duration::from_secs(12));
    fates[freezer].paused = Some((Duration::from_secs(14), Duration::from_secs(19)));
    let paused = ((args.taskmanagers - 2) as f64 * args.pause_fraction).round() as usize;
    let mut candidates: Vec<usize> = (2..args.taskmanagers).collect();
    rng.shuffle(&mut candidates);
    for &index in candidates.iter().take(paused) {
        let from = Duration::from_millis(rng.u64(20_000..(seconds - 3) * 1000));
        fates[index].paused = Some((from, from + Duration::from_secs(2)));
    }
    let started = Instant::now();
    let mut world = World::new(
        fates,
        args.shards,
        Duration::from_millis(config.interval_ms),
        config.times(),
        args.loss,
        args.seed,
    );
    let join = world.watch(joiner, Duration::from_secs(10));
    let crash = world.watch(crasher, Duration::from_secs(12));
    let freeze = world.watch(freezer, Duration::from_secs(14));
    let unfreeze = world.watch(freezer, Duration::from_secs(19));
    world.run_until(steady);
    let (tm_before, shard_before) = totals(&world, args.taskmanagers);
    world.run_until(end);
    let (tm_after, shard_after) = totals(&world, args.taskmanagers);
    let window = (end - steady).as_secs_f64();
    let elapsed = started.elapsed();

    println!(
        "simulate: {} TaskManagers, {} shards, {seconds} s virtual ({:.1} s real), report every {} ms, suspect after {} ms, loss {:.1} %, {paused} TaskManagers paused 2 s",
        args.taskmanagers,
        args.shards,
        elapsed.as_secs_f64(),
        config.interval_ms,
        config.suspect_after_ms,
        args.loss * 100.0
    );
    let per = |after: &Traffic, before: &Traffic, count: usize| {
        let sent = (after.sent - before.sent) as f64 / window / count as f64;
        let sent_bytes = (after.sent_bytes - before.sent_bytes) as f64 / window / count as f64;
        let received = (after.received - before.received) as f64 / window / count as f64;
        let received_bytes =
            (after.received_bytes - before.received_bytes) as f64 / window / count as f64;
        (sent, sent_bytes, received, received_bytes)
    };
    for (role, after, before, count) in [
        ("per TaskManager", &tm_after, &tm_before, args.taskmanagers),
        ("per shard", &shard_after, &shard_before, args.shards),
    ] {
        let (sent, sent_bytes, received, received_bytes) = per(after, before, count);
        println!(
            "  {role:16} sends {:>9.0} B/s ({:>9.0} B/s with UDP/IP headers) in {sent:>7.1} datagrams/s; receives {:>9.0} B/s ({:>9.0} with headers) in {received:>7.1} datagrams/s",
            sent_bytes,
            sent_bytes + sent * HEADERS as f64,
            received_bytes,
            received_bytes + received * HEADERS as f64,
        );
    }
    println!(
        "  largest datagram {} bytes; {} datagrams lost",
        tm_after.largest.max(shard_after.largest),
        world.lost
    );
    println!(
        "  join seen by every shard after    {}",
        slowest(&world.watches[join].usable)
    );
    println!(
        "  crash passed over by every shard  {}",
        slowest(&world.watches[crash].suspected)
    );
    println!(
        "  freeze passed over by every shard {}",
        slowest(&world.watches[freeze].suspected)
    );
    println!(
        "  used again by every shard after it resumed {}",
        slowest(&world.watches[unfreeze].usable)
    );
    let pair_time = (args.taskmanagers * args.shards) as f64 * seconds as f64;
    println!(
        "  false downs: {} live ones forgotten; {} times a shard passed over a live TaskManager for a while ({:.4} % of TaskManager-shard time)",
        world.false_forgets,
        world.false_suspicions,
        100.0 * world.false_suspicion_time.as_secs_f64() / pair_time
    );
    let (choice_ns, table_bytes) = choice_cost(&mut world);
    println!(
        "  choosing 8 TaskManagers for a query: {choice_ns:.0} ns; table {} KiB per shard ({} known)",
        table_bytes / 1024,
        world.shards[0].table().len()
    );
    Ok(())
}

/// Sums the traffic of the first `count` TaskManagers, and of every shard.
fn totals(world: &World, count: usize) -> (Traffic, Traffic) {
    let sum = |traffic: &mut Traffic, other: &Traffic| {
        traffic.sent += other.sent;
        traffic.sent_bytes += other.sent_bytes;
        traffic.received += other.received;
        traffic.received_bytes += other.received_bytes;
        traffic.largest = traffic.largest.max(other.largest);
    };
    let mut taskmanagers = Traffic::default();
    for reporter in &world.taskmanagers[..count] {
        sum(&mut taskmanagers, &reporter.traffic);
    }
    let mut shards = Traffic::default();
    for shard in &world.shards {
        sum(&mut shards, &shard.traffic);
    }
    (taskmanagers, shards)
}

/// The slowest shard's time, or how many never got there.
fn slowest(times: &[Option<Duration>]) -> String {
    let missing = times.iter().filter(|time| time.is_none()).count();
    if missing > 0 {
        return format!("never, on {missing} of {} shards", times.len());
    }
    let slowest = times.iter().flatten().max().copied().unwrap_or_default();
    format!("{} ms", slowest.as_millis())
}

/// Real time of one query's choice on shard 0's table, and the table's size.
fn choice_cost(world: &mut World) -> (f64, usize) {
    let table = world.shards[0].table();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut random = || rng.usize(..);
    let rounds = 20_000;
    let started = Instant::now();
    let mut chosen = 0;
    for _ in 0..rounds {
        chosen += table.choose("default", 8, &|_| 0, &mut random).len();
    }
    let per = started.elapsed().as_nanos() as f64 / f64::from(rounds);
    std::hint::black_box(chosen);
    (per, table.approx_bytes())
}
