//! Load generator for a Flotilla gateway, over HTTP only.
//!
//! ```text
//!  args ─▶ Mix (SQL files × weights) ─▶ run: closed loop (N clients) or open loop (a rate,
//!          latency from the intended send time) ─▶ Sample per query ─▶ Report (HDR summary,
//!          errors by code, windows around a fault) ─▶ stdout + --out report.json
//! ```
//! Every run is bounded by `--duration` and/or `--requests`, and targets loopback unless
//! `--allow-remote` is given.

#![forbid(unsafe_code)]

mod args;
mod mix;
mod ramp;
mod report;
mod run;

pub use args::Args;
pub use mix::Mix;
pub use report::{Report, Sample, Summary, Window};
pub use run::run;

/// Runs the tool: prints progress and the report; the exit code says whether queries failed.
pub async fn main(args: Args) -> std::process::ExitCode {
    match run::run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
