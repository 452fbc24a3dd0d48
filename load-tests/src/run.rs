//! The runner: closed or open loop, progress once a second, an optional SIGKILL at a set time.

use crate::args::{Args, Kill};
use crate::mix::{DEFAULT_SQL, Mix};
use crate::report::{Report, Sample, Summary};
use flotilla_client::{Client, Error, QueryOptions};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Longest the tool waits for one query before recording `client_timeout`.
const QUERY_LIMIT: Duration = Duration::from_secs(120);
/// Most queries an open loop keeps outstanding; beyond that a due query is recorded as
/// `client_overloaded` instead of being sent (the gateway is far behind the schedule).
const MAX_OUTSTANDING: usize = 10_000;

struct Shared {
    client: Client,
    mix: Mix,
    tenants: Vec<String>,
    routing_keys: Vec<String>,
    started: Instant,
    samples: mpsc::UnboundedSender<Sample>,
}

/// Runs the load described by `args` (a ramp when `--ramp-p99-ms` is given), printing
/// progress and the report; returns whether it passed (no failed query; for a ramp, a step
/// within the bound).
pub async fn run(args: Args) -> anyhow::Result<bool> {
    if args.ramp_p99_ms.is_some() {
        return crate::ramp::run(&args).await;
    }
    let (report, samples) = run_once(&args).await?;
    print!("{}", report.text());
    if let Some(path) = &args.out {
        let mut document = serde_json::to_value(&report)?;
        document["samples"] = serde_json::to_value(&samples)?;
        std::fs::write(path, serde_json::to_vec_pretty(&document)?)?;
        println!("report written to {}", path.display());
    }
    Ok(report.summary.failed == 0)
}

/// Runs one load, printing progress lines unless `--quiet`; returns the report and samples.
pub(crate) async fn run_once(args: &Args) -> anyhow::Result<(Report, Vec<Sample>)> {
    check_target(args)?;
    anyhow::ensure!(
        args.duration.is_some() || args.requests.is_some(),
        "give --duration and/or --requests: every run is bounded"
    );
    let mix = match (&args.sql, args.queries.is_empty()) {
        (Some(sql), _) => Mix::single(sql),
        (None, true) => Mix::single(DEFAULT_SQL),
        (None, false) => Mix::from_files(&args.queries)?,
    };
    let (samples, mut received) = mpsc::unbounded_channel();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        client: Client::new(&args.url)?,
        mix,
        tenants: args.tenant.clone(),
        routing_keys: args.routing_key.clone(),
        started,
        samples,
    });
    let end = args.duration.map(|duration| started + duration);
    let limit = args.requests.unwrap_or(u64::MAX);

    let mut faults = JoinSet::new();
    if let Some(kill) = args.kill {
        faults.spawn(fault(kill, started));
    }
    let (mode, load, load_task) = match (args.clients, args.rate) {
        (_, Some(rate)) => {
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
            let task = open_loop(Arc::clone(&shared), rate, end, limit);
            ("open", rate, task)
        }
        (clients, None) => {
            let clients = clients.unwrap_or(1).max(1);
            let task = closed_loop(Arc::clone(&shared), clients, end, limit);
            ("closed", clients as f64, task)
        }
    };
    drop(shared);
    // SIGINT or SIGTERM ends the load early; the report covers the queries answered so far
    // (those in flight are dropped).
    let load_task = async move {
        tokio::select! {
            () = load_task => {}
            () = stop_signal() => eprintln!("stopped by a signal: reporting the queries answered so far"),
        }
    };

    // Collect samples (the channel closes when every query is done) with a line a second.
    let quiet = args.quiet;
    let collect = async move {
        let mut all: Vec<Sample> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = 0;
        loop {
            tokio::select! {
                sample = received.recv() => match sample {
                    Some(sample) => all.push(sample),
                    None => break,
                },
                _ = tick.tick() => {
                    if !quiet {
                        let second = Summary::of(&all[last..], Duration::from_secs(1));
                        println!("{:>5.0}s {}", started.elapsed().as_secs_f64(), second.line());
                    }
                    last = all.len();
                }
            }
        }
        all
    };
    let (samples, ()) = tokio::join!(collect, load_task);
    let span = started.elapsed();
    // A fault not yet due when the load ended never happens.
    let fault_ms = faults.try_join_next().and_then(Result::ok);
    faults.abort_all();
    let report = Report::new(mode, load, span, &samples, fault_ms);
    Ok((report, samples))
}

/// Resolves on SIGINT or SIGTERM (never, if neither can be watched).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Refuses a gateway that is not on loopback unless `--allow-remote`.
fn check_target(args: &Args) -> anyhow::Result<()> {
    let host = args
        .url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[")
        || host.starts_with("127.")
        || args.url.contains("[::1]");
    anyhow::ensure!(
        loopback || args.allow_remote,
        "{} is not a loopback address; pass --allow-remote to load it",
        args.url
    );
    Ok(())
}

/// SIGKILLs the process at its time; returns that time (ms into the run).
async fn fault(kill: Kill, started: Instant) -> f64 {
    tokio::time::sleep_until(started + kill.at).await;
    let at = started.elapsed().as_secs_f64() * 1000.0;
    let pid = nix::unistd::Pid::from_raw(kill.pid);
    match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
        Ok(()) => println!("killed pid {} at {:.0} ms", kill.pid, at),
        Err(error) => println!("could not kill pid {}: {error}", kill.pid),
    }
    at
}

fn closed_loop(
    shared: Arc<Shared>,
    clients: usize,
    end: Option<Instant>,
    limit: u64,
) -> futures::future::BoxFuture<'static, ()> {
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let shared = Arc::clone(&shared);
        let issued = Arc::clone(&issued);
        tasks.spawn(async move {
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= limit || end.is_some_and(|end| Instant::now() >= end) {
                    return;
                }
                one(&shared, n, Instant::now()).await;
            }
        });
    }
    Box::pin(async move { while tasks.join_next().await.is_some() {} })
}

fn open_loop(
    shared: Arc<Shared>,
    rate: f64,
    end: Option<Instant>,
    limit: u64,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let mut tasks = JoinSet::new();
        let within = end.map(|end| end.duration_since(shared.started));
        for (n, offset) in (0..).zip(schedule(rate, within, limit)) {
            let intended = shared.started + offset;
            tokio::time::sleep_until(intended).await;
            while tasks.try_join_next().is_some() {}
            if tasks.len() >= MAX_OUTSTANDING {
                record(&shared, intended, "client_overloaded", 0, 0);
                continue;
            }
            let shared = Arc::clone(&shared);
            tasks.spawn(async move { one(&shared, n, intended).await });
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// The open loop's send times, as offsets from the start: one every `1 / rate` seconds, fixed
/// in advance (a slow answer never delays the next send, so latency counts from here), before
/// `within` and at most `limit` of them.
fn schedule(rate: f64, within: Option<Duration>, limit: u64) -> impl Iterator<Item = Duration> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    (0..limit)
        .map(move |n| interval.mul_f64(n as f64))
        .take_while(move |offset| within.is_none_or(|within| *offset < within))
}

/// Runs query number `n`, due at `intended`, and records it.
async fn one(shared: &Shared, n: u64, intended: Instant) {
    let (_, sql) = shared.mix.pick(n);
    let pick = |values: &[String]| {
        (!values.is_empty()).then(|| values[(n % values.len() as u64) as usize].clone())
    };
    let options = QueryOptions {
        tenant: pick(&shared.tenants),
        routing_key: pick(&shared.routing_keys),
        ..QueryOptions::default()
    };
    let fetch = async {
        let mut stream = match shared.client.query_with(sql, &options).await {
            Ok(stream) => stream,
            Err(error) => return (outcome(&error), 0, 0),
        };
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            match batch {
                Ok(batch) => rows += batch.num_rows() as u64,
                Err(error) => return (outcome(&error), rows, stream.bytes_received()),
            }
        }
        ("ok".to_string(), rows, stream.bytes_received())
    };
    let (outcome, rows, bytes) = match tokio::time::timeout(QUERY_LIMIT, fetch).await {
        Ok(done) => done,
        Err(_) => ("client_timeout".to_string(), 0, 0),
    };
    record(shared, intended, &outcome, rows, bytes);
}

fn record(shared: &Shared, intended: Instant, outcome: &str, rows: u64, bytes: u64) {
    let ms = |at: Instant| at.duration_since(shared.started).as_secs_f64() * 1000.0;
    let _ = shared.samples.send(Sample {
        intended_ms: ms(intended),
        done_ms: ms(Instant::now()),
        outcome: outcome.to_string(),
        rows,
        bytes,
    });
}

fn outcome(error: &Error) -> String {
    match error {
        Error::Server { code, .. } => code.as_str().to_string(),
        Error::Transport(_) => "transport".into(),
        Error::Truncated(_) => "truncated".into(),
        Error::Arrow(_) => "invalid_arrow".into(),
        Error::InvalidUrl { .. } => "invalid_url".into(),
        Error::InvalidCertificate(_) => "invalid_certificate".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_open_loop_schedule_is_fixed_by_rate_duration_and_count() {
        let offsets: Vec<Duration> = schedule(4.0, Some(Duration::from_secs(1)), 1000).collect();
        assert_eq!(
            offsets,
            [0, 250, 500, 750].map(Duration::from_millis),
            "evenly spaced, none at or after the end"
        );
        assert_eq!(schedule(1000.0, None, 7).count(), 7, "bounded by count");
        assert_eq!(
            schedule(100.0, Some(Duration::from_secs(30)), 50).count(),
            50,
            "the smaller bound wins"
        );
        let offsets: Vec<Duration> =
            schedule(3.0, Some(Duration::from_millis(2100)), 100).collect();
        assert_eq!(offsets.len(), 7);
        assert!(
            (offsets[6].as_secs_f64() - 2.0).abs() < 1e-6,
            "no drift: the n-th send is at n / rate"
        );
    }

    #[test]
    fn only_loopback_unless_allowed() {
        let args = |url: &str, allow: bool| {
            let mut args = Args::parse_from(["flotilla-load", "--url", url, "--duration", "1s"]);
            args.allow_remote = allow;
            args
        };
        assert!(check_target(&args("http://127.0.0.1:8080", false)).is_ok());
        assert!(check_target(&args("http://localhost:1", false)).is_ok());
        assert!(check_target(&args("http://[::1]:1", false)).is_ok());
        assert!(check_target(&args("http://10.0.0.5:8080", false)).is_err());
        assert!(check_target(&args("http://10.0.0.5:8080", true)).is_ok());
    }
}
