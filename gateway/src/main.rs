//! The `gateway` binary: parses flags and config, then serves until SIGTERM or Ctrl-C.

use clap::Parser;
use gateway::{EX_SOFTWARE, EX_USAGE};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    flotilla_cluster::use_ring_provider();
    let cli = Cli::parse();
    let env = std::env::vars().collect();
    let config = flotilla_cluster::parse_set(&cli.set).and_then(|mut overrides| {
        if let Some(listen) = cli.listen {
            overrides.push(("http.listen".to_string(), format!("\"{listen}\"")));
        }
        flotilla_cluster::load_layered::<gateway::Config>(
            cli.config.as_deref(),
            &env,
            "GATEWAY",
            &overrides,
        )
    });
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    flotilla_cluster::init_tracing(&config.log);
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(gateway::run_until_signal(config)),
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            ExitCode::from(EX_SOFTWARE)
        }
    }
}
