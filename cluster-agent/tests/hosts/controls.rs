//! Controls for the fault drills: pressure that is not a fault must cost no sidelining and
//! stay within the extra-work budget. Every host under CPU stress (`stress-ng` on all cores of
//! the machine the hosts share), and one TaskManager slowed but alive (stopped 80 ms of every
//! 120 ms: a third of its speed, never silent for longer than a probe waits). Under 50
//! queries/s of the short mix, every answer checked; printed are the latencies, hedges sent /
//! won / refused and re-runs refused; asserted: no wrong or unanswered query, no member
//! sidelined, hedges within the budget (10 % of queries + 5/s), and the slowed TaskManager
//! still doing work.

use crate::cluster::{HostCluster, on_hosts};
use crate::common::metric_sum;
use crate::load::{Answers, Figures, assert_exact_or_explicit, open_loop};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// Queries a second of the load.
const RATE: f64 = 50.0;
/// Load before and after the pressure.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(3);
/// How long the pressure lasts.
const PRESSURE: Duration = Duration::from_secs(12);
/// The slowed TaskManager's cycle: stopped, then running.
const STOPPED: Duration = Duration::from_millis(80);
const RUNNING: Duration = Duration::from_millis(40);
/// The gateway's extra-work budget (`routing.extra_work_ratio`, `extra_work_per_second`) and
/// the window it counts over.
const BUDGET_RATIO: f64 = 0.1;
const BUDGET_PER_SECOND: f64 = 5.0;
const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// The gateway's counters a control reads before and after.
const COUNTERS: [&str; 5] = [
    "flotilla_gateway_hedges_total{outcome=\"sent\"}",
    "flotilla_gateway_hedges_total{outcome=\"won\"}",
    "flotilla_gateway_hedges_total{outcome=\"refused\"}",
    "flotilla_gateway_retries_refused_total",
    "flotilla_gateway_sidelined_total",
];

async fn counters(url: &str) -> [u64; 5] {
    let metrics = format!("{url}/metrics");
    let mut values = [0; 5];
    for (value, series) in values.iter_mut().zip(COUNTERS) {
        *value = metric_sum(&metrics, series).await as u64;
    }
    values
}

/// `stress-ng` on every core while alive; killed by its PID when dropped.
struct Stress(Child);

impl Stress {
    fn start(lasts: Duration) -> Stress {
        let child = Command::new("stress-ng")
            .args(["--cpu", "0", "--quiet", "--timeout"])
            .arg(format!("{}s", lasts.as_secs()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stress-ng (installed by scripts/install-test-hosts)");
        Stress(child)
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // Its workers are its children: a SIGTERM to the parent stops them all.
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Resumes a stopped member whatever happens to the test.
struct Resume(Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Slows member `pid` for `lasts`: stopped [`STOPPED`] of every [`STOPPED`] + [`RUNNING`].
async fn slow_down(pid: Pid, lasts: Duration) {
    let _resume = Resume(pid);
    let until = Instant::now() + lasts;
    let cycles = (lasts.as_millis() / (STOPPED + RUNNING).as_millis()) as usize;
    for _ in 0..cycles {
        if Instant::now() >= until {
            break;
        }
        kill(pid, Signal::SIGSTOP).unwrap();
        tokio::time::sleep(STOPPED).await;
        kill(pid, Signal::SIGCONT).unwrap();
        tokio::time::sleep(RUNNING).await;
    }
}

/// Runs the load with `pressure` applied for [`PRESSURE`] in the middle, prints the figures and
/// checks the control's assertions; `slowed` is a TaskManager that must keep working.
async fn control(
    cluster: &HostCluster,
    name: &str,
    pressure: impl Future<Output = ()>,
    slowed: Option<&str>,
) {
    let answers = Answers::short_mix().await;
    let url = cluster.url.clone();
    let before = counters(&url).await;
    let load = flotilla_cluster::spawn_instrumented(async move {
        open_loop(&url, RATE, BEFORE + PRESSURE + AFTER, answers).await
    });
    let started = Instant::now();
    tokio::time::sleep(BEFORE).await;
    let work_before = match slowed {
        Some(member) => cluster.work_done(member).await,
        None => None,
    };
    let pressure_started = started.elapsed();
    pressure.await;
    let pressure_ended = started.elapsed();
    let work_after = match slowed {
        Some(member) => cluster.work_done(member).await,
        None => None,
    };
    let outcomes = load.await.unwrap();
    let after = counters(&cluster.url).await;
    let [sent, won, refused, reruns_refused, sidelined] =
        std::array::from_fn(|index| after[index] - before[index]);

    let during = Figures::of(&outcomes, pressure_started, pressure_ended);
    println!("== {name}");
    println!(
        "hedges: {sent} sent ({:.1} % of {} queries), {won} won, {refused} refused by the budget; \
         re-runs refused {reruns_refused}; sidelined {sidelined}",
        100.0 * sent as f64 / outcomes.len().max(1) as f64,
        outcomes.len()
    );
    println!(
        "{}",
        Figures::of(&outcomes, Duration::ZERO, pressure_started).line("before")
    );
    println!("{}", during.line("during"));
    println!(
        "{}",
        Figures::of(&outcomes, pressure_ended, Duration::MAX).line("after ")
    );
    if let (Some(member), Some(before), Some(after)) = (slowed, work_before, work_after) {
        println!("{member} did {} units of work while slowed", after - before);
    }

    assert_exact_or_explicit(&outcomes);
    assert_eq!(sidelined, 0, "pressure that is no fault sidelined a member");
    let seconds = started.elapsed() + BUDGET_WINDOW;
    let budget = BUDGET_RATIO * outcomes.len() as f64 + BUDGET_PER_SECOND * seconds.as_secs_f64();
    assert!(
        sent as f64 <= budget,
        "{sent} hedges sent, more than the budget allows ({budget:.0})"
    );
    if let Some(member) = slowed {
        assert!(
            work_after > work_before,
            "{member}, slowed but alive, got no work ({work_before:?} -> {work_after:?})"
        );
    }
}

#[test]
fn every_host_under_cpu_stress_sidelines_no_one() {
    on_hosts(async |cluster| {
        let pressure = async {
            let stress = Stress::start(PRESSURE + Duration::from_secs(1));
            tokio::time::sleep(PRESSURE).await;
            drop(stress);
        };
        control(&cluster, "every host under CPU stress", pressure, None).await;
    });
}

#[test]
fn a_slowed_taskmanager_is_still_used_and_never_sidelined() {
    on_hosts(async |mut cluster| {
        let pid = Pid::from_raw(cluster.member("tm-1").pid());
        let pressure = slow_down(pid, PRESSURE);
        let name = "tm-1 slowed to a third (stopped 80 ms of every 120 ms)";
        control(&cluster, name, pressure, Some("tm-1")).await;
    });
}
