//! `--ramp-p99-ms`: find the highest open-loop rate whose p99 stays under a bound.

use crate::args::Args;
use crate::report::Report;
use crate::run::run_once;
use serde::Serialize;

/// One step of a ramp.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// The rate asked for.
    pub target_qps: f64,
    /// Its figures.
    pub report: Report,
    /// Whether it met the bound: p99 under it, no failure, and ≥ 95 % of the rate reached.
    pub good: bool,
}

/// Runs the steps; returns whether any step met the bound.
pub(crate) async fn run(args: &Args) -> anyhow::Result<bool> {
    let bound = args.ramp_p99_ms.unwrap_or(f64::INFINITY);
    anyhow::ensure!(
        args.ramp_factor > 1.0 && args.ramp_factor.is_finite(),
        "--ramp-factor must be above 1"
    );
    let mut rate = args.rate.unwrap_or(10.0);
    let mut steps: Vec<Step> = Vec::new();
    println!(
        "ramp: p99 bound {bound} ms, steps of {:?}",
        args.duration.unwrap_or_default()
    );
    for _ in 0..args.ramp_steps.max(1) {
        let mut step_args = args.clone();
        step_args.rate = Some(rate);
        step_args.quiet = true;
        step_args.kill = None;
        let (report, _) = run_once(&step_args).await?;
        let good = is_good(&report, rate, bound);
        println!(
            "{:>8.1} q/s target: {} {}",
            rate,
            report.summary.line(),
            if good { "ok" } else { "over the bound" }
        );
        steps.push(Step {
            target_qps: rate,
            report,
            good,
        });
        if !good {
            break;
        }
        rate *= args.ramp_factor;
    }
    let best = steps.iter().rev().find(|step| step.good);
    match best {
        Some(step) => println!(
            "highest rate with p99 < {bound} ms: {:.1} q/s (achieved {:.1} q/s, p50 {:.2} ms, p99 {:.2} ms)",
            step.target_qps,
            step.report.summary.qps,
            step.report.summary.p50_ms,
            step.report.summary.p99_ms
        ),
        None => println!(
            "even the first step ({:.1} q/s) was over the bound",
            steps[0].target_qps
        ),
    }
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_vec_pretty(&steps)?)?;
        println!("steps written to {}", path.display());
    }
    Ok(best.is_some())
}

fn is_good(report: &Report, rate: f64, bound: f64) -> bool {
    report.summary.failed == 0 && report.summary.p99_ms < bound && report.summary.qps >= 0.95 * rate
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Sample;
    use std::time::Duration;

    fn report(qps: f64, latency_ms: f64, failed: bool) -> Report {
        let samples: Vec<Sample> = (0..qps as usize)
            .map(|i| Sample {
                intended_ms: i as f64,
                done_ms: i as f64 + latency_ms,
                outcome: if failed && i == 0 {
                    "unavailable".into()
                } else {
                    "ok".into()
                },
                rows: 1,
                bytes: 1,
            })
            .collect();
        Report::new("open", qps, Duration::from_secs(1), &samples, None)
    }

    #[test]
    fn a_step_is_good_under_the_bound_without_failures_at_the_rate() {
        assert!(is_good(&report(100.0, 5.0, false), 100.0, 10.0));
        assert!(
            !is_good(&report(100.0, 50.0, false), 100.0, 10.0),
            "p99 over"
        );
        assert!(
            !is_good(&report(100.0, 5.0, true), 100.0, 10.0),
            "a failure"
        );
        assert!(
            !is_good(&report(80.0, 5.0, false), 100.0, 10.0),
            "rate not reached"
        );
    }
}
