//! The `cluster-agent` binary: parses flags and hands over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cluster_agent::Cli::parse();
    let env = std::env::vars().collect();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cluster_agent::run(cli, env)),
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            std::process::ExitCode::from(70)
        }
    }
}
