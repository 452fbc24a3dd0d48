//! The `gateway` binary: parses flags and config, then serves until SIGTERM or Ctrl-C.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for bad configuration or flags (sysexits' EX_USAGE).
const EX_USAGE: u8 = 64;
/// Exit code for a failure while running.
const EX_SOFTWARE: u8 = 70;

/// Flotilla's HTTP gateway.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP listen address; overrides the file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Any config value, as `section.field=value`; repeatable, applied last.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut overrides = Vec::new();
    for item in &cli.set {
        let Some((key, value)) = item.split_once('=') else {
            eprintln!("error: --set expects KEY=VALUE, got `{item}`");
            return ExitCode::from(EX_USAGE);
        };
        overrides.push((key.trim().to_string(), value.trim().to_string()));
    }
    if let Some(listen) = cli.listen {
        overrides.push(("http.listen".to_string(), format!("\"{listen}\"")));
    }
    let env = std::env::vars().collect();
    let config: gateway::Config =
        match flotilla_cluster::load_layered(cli.config.as_deref(), &env, "GATEWAY", &overrides) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::from(EX_USAGE);
            }
        };
    flotilla_cluster::init_tracing(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    runtime.block_on(async move {
        let registry = match flotilla_cluster::process_registry("gateway") {
            Ok(registry) => registry,
            Err(error) => {
                eprintln!("error: cannot register metrics: {error}");
                return ExitCode::from(EX_SOFTWARE);
            }
        };
        let handle = match gateway::start_gateway(config, registry).await {
            Ok(handle) => handle,
            Err(error) => {
                eprintln!("error: cannot start: {error:#}");
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
    })
}
