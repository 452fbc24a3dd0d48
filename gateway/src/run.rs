//! The gateway as a process runs it, whichever binary starts it (`gateway`, or
//! `cluster-agent gateway`): metrics registry, start, the listening line, serve until SIGTERM
//! or Ctrl-C, drain.

use crate::config::Config;
use std::process::ExitCode;

/// Exit code for bad configuration or flags (sysexits' EX_USAGE).
pub const EX_USAGE: u8 = 64;
/// Exit code for a failure while running (sysexits' EX_SOFTWARE).
pub const EX_SOFTWARE: u8 = 70;

/// Runs a gateway with `config` until SIGTERM or Ctrl-C, then drains it. Says what went wrong
/// on standard error, and exits 64 when it cannot start, 70 when it fails while running.
pub async fn run_until_signal(config: Config) -> ExitCode {
    let registry = match flotilla_cluster::process_registry("gateway") {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("error: cannot register metrics: {error}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    let handle = match crate::start_gateway(config, registry).await {
        Ok(handle) => handle,
        Err(error) => {
            eprintln!("error: cannot start gateway: {error:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    println!("{}", handle.listening_line());
    flotilla_cluster::shutdown_signal().await;
    match handle.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}
