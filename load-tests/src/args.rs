//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

/// Flotilla load generator.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "flotilla-load", version, about)]
pub struct Args {
    /// The gateway's URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Closed loop: this many clients, each sending its next query when the last one ended.
    #[arg(long, conflicts_with = "rate")]
    pub clients: Option<usize>,
    /// Open loop: queries per second on a fixed schedule; latency counts from the intended
    /// send time, so a stall is not hidden (coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to run, like `30s`, `500ms` or `2m`.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many queries.
    #[arg(long)]
    pub requests: Option<u64>,
    /// The query mix: SQL files, each optionally weighted as `FILE:WEIGHT`; a directory means
    /// every `.sql` file in it. Default: one short query on `nation`.
    #[arg(long, value_delimiter = ',')]
    pub queries: Vec<String>,
    /// One SQL text to run instead of files.
    #[arg(long, conflicts_with = "queries")]
    pub sql: Option<String>,
    /// Tenants to send queries as (round robin), via `x-flotilla-tenant`.
    #[arg(long, value_delimiter = ',')]
    pub tenant: Vec<String>,
    /// Routing keys to send (round robin), via `x-flotilla-routing-key`.
    #[arg(long, value_delimiter = ',')]
    pub routing_key: Vec<String>,
    /// A fault drill: SIGKILL this process at this time into the run, as `PID@8s`. The report
    /// then gives latency before, around (±1 s) and after it, and the time until throughput
    /// was back to 90 % of the rate before.
    #[arg(long, value_parser = parse_kill)]
    pub kill: Option<Kill>,
    /// A ramp: open-loop steps of `--duration` each, from `--rate` up by `--ramp-factor`, until
    /// a step's p99 exceeds this many milliseconds, a query fails, or the rate is not reached;
    /// reports the highest rate that kept p99 under it.
    #[arg(long, requires = "rate", requires = "duration")]
    pub ramp_p99_ms: Option<f64>,
    /// Rate multiplier between ramp steps.
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// Most ramp steps.
    #[arg(long, default_value_t = 12)]
    pub ramp_steps: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// No progress lines, only the report.
    #[arg(long)]
    pub quiet: bool,
    /// Allow a gateway that is not on a loopback address.
    #[arg(long)]
    pub allow_remote: bool,
}

/// `--kill PID@TIME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kill {
    /// The process to kill.
    pub pid: i32,
    /// When, from the start of the run.
    pub at: Duration,
}

/// Parses `30s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`: use ms, s or m")),
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!("`{text}` is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_kill(text: &str) -> Result<Kill, String> {
    let (pid, at) = text
        .split_once('@')
        .ok_or_else(|| format!("--kill expects PID@TIME, got `{text}`"))?;
    let pid: i32 = pid
        .trim()
        .parse()
        .map_err(|_| format!("`{pid}` is not a process id"))?;
    if pid <= 1 {
        return Err(format!("refusing to kill pid {pid}"));
    }
    Ok(Kill {
        pid,
        at: parse_duration(at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_kills_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
        assert_eq!(
            parse_kill("1234@8s"),
            Ok(Kill {
                pid: 1234,
                at: Duration::from_secs(8)
            })
        );
        assert!(parse_kill("1@1s").is_err());
        assert!(parse_kill("1234").is_err());
    }
}
