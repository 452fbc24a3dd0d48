//! `flotilla-load`: see the crate docs in `lib.rs`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    flotilla_load::main(flotilla_load::Args::parse()).await
}
