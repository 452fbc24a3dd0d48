//! Samples each process's resident memory, open files, threads and CPU time from `/proc` (and
//! its live heap, where it reports one), and fits each one's growth after the warm-up (least
//! squares), per 10 minutes.

use std::time::Duration;
use tokio::time::Instant;

/// One reading of one process.
#[derive(Clone, Copy, Debug)]
struct Reading {
    at: f64,
    rss_kib: f64,
    fds: f64,
    threads: f64,
    cpu_ticks: f64,
    /// Live heap bytes (jemalloc's `allocated`), in MiB, where the process reports it: RSS that
    /// grows while this stays flat is the allocator keeping pages, not a leak.
    heap_mib: Option<f64>,
}

/// Every reading of one process (one incarnation of a member: a restart is a new series).
struct Series {
    name: String,
    pid: i32,
    readings: Vec<Reading>,
}

/// How a process grew after the warm-up.
#[derive(Debug)]
pub struct Growth {
    pub name: String,
    pub pid: i32,
    /// Time covered after the warm-up.
    pub span: Duration,
    pub rss_mib_per_10_min: f64,
    pub fds_per_10_min: f64,
    pub threads_per_10_min: f64,
    pub heap_mib_per_10_min: Option<f64>,
    /// Readings at the start of the span and at the end.
    pub rss_mib: (f64, f64),
    pub fds: (f64, f64),
    pub threads: (f64, f64),
    pub heap_mib: Option<(f64, f64)>,
    /// Share of one core used over the span.
    pub cpu: f64,
}

pub struct Sampler {
    started: Instant,
    series: Vec<Series>,
}

impl Sampler {
    pub fn new() -> Sampler {
        Sampler {
            started: Instant::now(),
            series: Vec::new(),
        }
    }

    /// Reads every `(name, pid, live heap bytes if known)` now; a process that is gone is
    /// skipped.
    pub fn record<'a>(&mut self, processes: impl IntoIterator<Item = (&'a str, i32, Option<f64>)>) {
        let at = self.started.elapsed().as_secs_f64();
        for (name, pid, heap) in processes {
            let Some(mut reading) = read(pid, at) else {
                continue;
            };
            reading.heap_mib = heap.map(|bytes| bytes / (1024.0 * 1024.0));
            match self.series.iter_mut().find(|series| series.pid == pid) {
                Some(series) => series.readings.push(reading),
                None => self.series.push(Series {
                    name: name.to_string(),
                    pid,
                    readings: vec![reading],
                }),
            }
        }
    }

    /// The growth of every process with at least three readings after `warm_up` (from the
    /// start of the soak, or of its incarnation).
    pub fn growth(&self, warm_up: Duration) -> Vec<Growth> {
        let mut all = Vec::new();
        for series in &self.series {
            let born = series.readings[0].at;
            let after: Vec<Reading> = series
                .readings
                .iter()
                .copied()
                .filter(|reading| reading.at >= born + warm_up.as_secs_f64())
                .collect();
            let (Some(first), Some(last)) = (after.first(), after.last()) else {
                continue;
            };
            if after.len() < 3 {
                continue;
            }
            let per_10_min = |value: fn(&Reading) -> f64| {
                600.0 * slope(after.iter().map(|reading| (reading.at, value(reading))))
            };
            let span = last.at - first.at;
            let heaps: Vec<(f64, f64)> = after
                .iter()
                .filter_map(|reading| Some((reading.at, reading.heap_mib?)))
                .collect();
            let heap_known = heaps.len() >= 3;
            all.push(Growth {
                name: series.name.clone(),
                pid: series.pid,
                span: Duration::from_secs_f64(span),
                rss_mib_per_10_min: per_10_min(|reading| reading.rss_kib) / 1024.0,
                fds_per_10_min: per_10_min(|reading| reading.fds),
                threads_per_10_min: per_10_min(|reading| reading.threads),
                heap_mib_per_10_min: heap_known.then(|| 600.0 * slope(heaps.iter().copied())),
                heap_mib: heap_known.then(|| (heaps[0].1, heaps[heaps.len() - 1].1)),
                rss_mib: (first.rss_kib / 1024.0, last.rss_kib / 1024.0),
                fds: (first.fds, last.fds),
                threads: (first.threads, last.threads),
                cpu: (last.cpu_ticks - first.cpu_ticks) / TICKS_PER_SECOND / span.max(1.0),
            });
        }
        all
    }
}

/// The machine's busy and total CPU time so far, in ticks (`/proc/stat`).
pub fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    // idle and iowait are the 4th and 5th.
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// The least-squares slope of `points`, per unit of x.
fn slope(points: impl Iterator<Item = (f64, f64)> + Clone) -> f64 {
    let count = points.clone().count() as f64;
    let (mean_x, mean_y) = points.clone().fold((0.0, 0.0), |(x, y), (px, py)| {
        (x + px / count, y + py / count)
    });
    let (covariance, variance) = points.fold((0.0, 0.0), |(c, v), (x, y)| {
        (
            c + (x - mean_x) * (y - mean_y),
            v + (x - mean_x) * (x - mean_x),
        )
    });
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

/// Clock ticks of `/proc/<pid>/stat` per second (USER_HZ: 100 on every Linux ABI in use).
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads `pid`'s status (resident memory, threads), its open files and its CPU time.
fn read(pid: i32, at: f64) -> Option<Reading> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<f64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as f64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is the 3rd, utime the 14th.
    let after_command = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index - 3)?.parse::<f64>().ok();
    Some(Reading {
        at,
        rss_kib: field("VmRSS:")?,
        fds,
        threads: field("Threads:")?,
        cpu_ticks: ticks(14)? + ticks(15)?,
        heap_mib: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_slope_of_a_line_is_its_rate() {
        let points = (0..10).map(|x| (f64::from(x), 3.0 * f64::from(x) + 7.0));
        assert!((super::slope(points) - 3.0).abs() < 1e-9);
        assert_eq!(super::slope([(1.0, 5.0), (1.0, 6.0)].into_iter()), 0.0);
    }
}
