//! Samples in, figures out: an HDR-histogram summary, errors by code, and the windows around
//! a fault.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One query as the load tool saw it.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// When it was meant to be sent, from the start of the run (open loop: the schedule;
    /// closed loop: when it was sent).
    pub intended_ms: f64,
    /// When its last byte (or its error) arrived, from the start of the run.
    pub done_ms: f64,
    /// `ok`, a server error code, or `transport` / `truncated` / `invalid_arrow`.
    pub outcome: String,
    /// Result rows received.
    pub rows: u64,
    /// Result bytes received (Arrow IPC).
    pub bytes: u64,
}

impl Sample {
    /// Latency from the intended send time, in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        (self.done_ms - self.intended_ms).max(0.0)
    }

    fn failed(&self) -> bool {
        self.outcome != "ok"
    }
}

/// Figures over a set of samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Queries finished.
    pub queries: u64,
    /// Queries that failed.
    pub failed: u64,
    /// Finished queries per second over the span.
    pub qps: f64,
    /// Latency percentiles in milliseconds (successful queries).
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest latency.
    pub max_ms: f64,
    /// Failures by code.
    pub errors: BTreeMap<String, u64>,
    /// Result rows received.
    pub rows: u64,
    /// Result bytes received.
    pub bytes: u64,
}

impl Summary {
    /// Summarizes samples over a span of `span` (for the rate).
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>, span: Duration) -> Self {
        let mut histogram = latency_histogram();
        let mut summary = Self::default();
        for sample in samples {
            summary.queries += 1;
            summary.rows += sample.rows;
            summary.bytes += sample.bytes;
            if sample.failed() {
                summary.failed += 1;
                *summary.errors.entry(sample.outcome.clone()).or_default() += 1;
            } else {
                let micros = (sample.latency_ms() * 1000.0).round().max(1.0) as u64;
                histogram.saturating_record(micros);
            }
        }
        if span > Duration::ZERO {
            summary.qps = summary.queries as f64 / span.as_secs_f64();
        }
        if !histogram.is_empty() {
            let ms = |micros: u64| micros as f64 / 1000.0;
            summary.p50_ms = ms(histogram.value_at_quantile(0.50));
            summary.p90_ms = ms(histogram.value_at_quantile(0.90));
            summary.p99_ms = ms(histogram.value_at_quantile(0.99));
            summary.p999_ms = ms(histogram.value_at_quantile(0.999));
            summary.max_ms = ms(histogram.max());
        }
        summary
    }

    /// One line: `queries failed qps p50 p99 max`.
    pub fn line(&self) -> String {
        format!(
            "{:>7} queries {:>5} failed {:>8.1} q/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms",
            self.queries,
            self.failed,
            self.qps,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        )
    }
}

/// Latencies from 1 µs to 10 min, 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid")))
}

/// Figures for the queries sent in one time window around a fault.
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// `before`, `during` (±1 s around the fault) or `after`.
    pub name: String,
    /// Start of the window, ms from the start of the run.
    pub from_ms: f64,
    /// End of the window.
    pub to_ms: f64,
    /// Its figures.
    pub summary: Summary,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `closed` or `open`.
    pub mode: String,
    /// Clients (closed loop) or the target rate (open loop).
    pub load: f64,
    /// The run's length in seconds.
    pub seconds: f64,
    /// Every query.
    pub summary: Summary,
    /// When a fault was injected, ms from the start of the run.
    pub fault_ms: Option<f64>,
    /// Before, during and after the fault.
    pub windows: Vec<Window>,
    /// Time from the fault until throughput was back to ≥ 90 % of its rate before.
    pub recovery_ms: Option<f64>,
}

impl Report {
    /// Builds the report; `fault_ms` adds the windows and the recovery time.
    pub fn new(
        mode: &str,
        load: f64,
        span: Duration,
        samples: &[Sample],
        fault_ms: Option<f64>,
    ) -> Self {
        let mut report = Self {
            mode: mode.to_string(),
            load,
            seconds: span.as_secs_f64(),
            summary: Summary::of(samples, span),
            fault_ms,
            windows: Vec::new(),
            recovery_ms: None,
        };
        if let Some(fault) = fault_ms {
            let end = span.as_secs_f64() * 1000.0;
            let bounds = [
                ("before", 0.0, (fault - 1000.0).max(0.0)),
                (
                    "during",
                    (fault - 1000.0).max(0.0),
                    (fault + 1000.0).min(end),
                ),
                ("after", (fault + 1000.0).min(end), end),
            ];
            for (name, from, to) in bounds {
                let inside = samples
                    .iter()
                    .filter(|sample| sample.intended_ms >= from && sample.intended_ms < to);
                report.windows.push(Window {
                    name: name.to_string(),
                    from_ms: from,
                    to_ms: to,
                    summary: Summary::of(
                        inside,
                        Duration::from_secs_f64((to - from).max(0.0) / 1000.0),
                    ),
                });
            }
            report.recovery_ms = recovery_ms(samples, fault, end);
        }
        report
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{} loop, {} {}, {:.1} s\nall     {}\n",
            self.mode,
            self.load,
            if self.mode == "open" {
                "q/s target"
            } else {
                "clients"
            },
            self.seconds,
            self.summary.line()
        );
        for window in &self.windows {
            text.push_str(&format!("{:<7} {}\n", window.name, window.summary.line()));
        }
        if let Some(fault) = self.fault_ms {
            text.push_str(&format!("fault at {:.0} ms; ", fault));
            match self.recovery_ms {
                Some(recovery) => text.push_str(&format!(
                    "throughput back to >= 90 % of before {:.0} ms after it\n",
                    recovery
                )),
                None => text.push_str("throughput never got back to 90 % of before\n"),
            }
        }
        if !self.summary.errors.is_empty() {
            text.push_str("errors:");
            for (code, count) in &self.summary.errors {
                text.push_str(&format!(" {code}={count}"));
            }
            text.push('\n');
        }
        text.push_str(&format!(
            "received {} rows, {} bytes\n",
            self.summary.rows, self.summary.bytes
        ));
        text
    }
}

/// The first moment at or after the fault from which successful completions over the next
/// second reach 90 % of the rate in the second before the fault's window (10 ms steps).
fn recovery_ms(samples: &[Sample], fault: f64, end: f64) -> Option<f64> {
    let mut done: Vec<f64> = samples
        .iter()
        .filter(|sample| !sample.failed())
        .map(|sample| sample.done_ms)
        .collect();
    done.sort_by(f64::total_cmp);
    let count = |from: f64, to: f64| {
        let start = done.partition_point(|at| *at < from);
        let stop = done.partition_point(|at| *at < to);
        (stop - start) as f64
    };
    let baseline_from = (fault - 2000.0).max(0.0);
    let baseline =
        count(baseline_from, fault - 1000.0) / ((fault - 1000.0 - baseline_from) / 1000.0);
    if !(baseline.is_finite() && baseline > 0.0) {
        return None;
    }
    let mut at = fault;
    while at + 1000.0 <= end {
        if count(at, at + 1000.0) >= 0.9 * baseline {
            return Some(at - fault);
        }
        at += 10.0;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(intended_ms: f64, latency: f64, outcome: &str) -> Sample {
        Sample {
            intended_ms,
            done_ms: intended_ms + latency,
            outcome: outcome.into(),
            rows: 1,
            bytes: 10,
        }
    }

    #[test]
    fn percentiles_and_errors() {
        let mut samples: Vec<Sample> = (1..=100)
            .map(|i| sample(i as f64, i as f64, "ok"))
            .collect();
        samples.push(sample(5.0, 1.0, "unavailable"));
        let summary = Summary::of(&samples, Duration::from_secs(1));
        assert_eq!(summary.queries, 101);
        assert_eq!(summary.failed, 1);
        assert_eq!(summary.errors["unavailable"], 1);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{}", summary.p50_ms);
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{}", summary.p99_ms);
        assert!((summary.max_ms - 100.0).abs() < 0.1);
        assert_eq!(summary.rows, 101);
    }

    #[test]
    fn open_loop_latency_counts_from_the_intended_time() {
        // Sent late because the client stalled: the stall is part of the latency.
        let late = Sample {
            intended_ms: 100.0,
            done_ms: 350.0,
            outcome: "ok".into(),
            rows: 0,
            bytes: 0,
        };
        assert_eq!(late.latency_ms(), 250.0);
    }

    #[test]
    fn windows_and_recovery_around_a_fault() {
        // 100 q/s for 10 s; nothing completes from 5.0 s to 5.3 s, then the backlog drains.
        let mut samples = Vec::new();
        for i in 0..1000 {
            let intended = i as f64 * 10.0;
            let latency = if (5000.0..5300.0).contains(&intended) {
                5300.0 - intended + 5.0
            } else {
                5.0
            };
            samples.push(sample(intended, latency, "ok"));
        }
        let report = Report::new(
            "open",
            100.0,
            Duration::from_secs(10),
            &samples,
            Some(5000.0),
        );
        assert_eq!(report.windows.len(), 3);
        assert_eq!(report.windows[1].name, "during");
        assert!(report.windows[1].summary.p99_ms > 250.0);
        assert!(report.windows[0].summary.p99_ms < 10.0);
        let recovery = report.recovery_ms.unwrap();
        // From 5.0 s the next second holds the 30 backlogged completions plus 70 more: at 90 %
        // (90 of 100) already at the fault; the definition counts completions, so a stall
        // shorter than 10 % of a second's work does not count as lost throughput.
        assert!(recovery < 100.0, "{recovery}");
        // A 2 s outage with the backlog lost (failed) shows up as recovery time.
        let mut samples = Vec::new();
        for i in 0..1000 {
            let intended = i as f64 * 10.0;
            let outcome = if (5000.0..7000.0).contains(&intended) {
                "unavailable"
            } else {
                "ok"
            };
            samples.push(sample(intended, 5.0, outcome));
        }
        let report = Report::new(
            "open",
            100.0,
            Duration::from_secs(10),
            &samples,
            Some(5000.0),
        );
        assert_eq!(report.summary.failed, 200);
        let recovery = report.recovery_ms.unwrap();
        assert!((1800.0..2100.0).contains(&recovery), "{recovery}");
    }
}
