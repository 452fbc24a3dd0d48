//! The `cluster-agent` binary: parses flags and hands over to the library.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = cluster_agent::Cli::parse();
    let env = std::env::vars().collect();
    // Planning and plan decoding recurse over expression trees; 16 MiB stacks (virtual until
    // touched) leave room well past `jobmanager.max_operators`.
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 * 1024 * 1024)
        .build()
    {
        Ok(runtime) => runtime.block_on(cluster_agent::run(cli, env)),
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            std::process::ExitCode::from(70)
        }
    }
}
