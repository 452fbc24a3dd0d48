//! The main job `local` runs once the federation is up: TPC-H Q1 through the gateway, with the
//! Rust client.

use std::path::Path;
use std::time::{Duration, Instant};

/// The main job `local` runs once the federation is up.
const MAIN_JOB: &str = include_str!("../../../sql-samples/tpch/q01.sql");

/// Runs TPC-H Q1 through the gateway with the Rust client and prints the result.
pub(super) async fn run_main_job(url: &str, ca: Option<&Path>) -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let mut client = flotilla_client::Client::builder(url);
    if let Some(ca) = ca {
        client = client.root_certificates_pem(&std::fs::read(ca)?)?;
    }
    let client = client.build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let started = Instant::now();
        match client.query(MAIN_JOB).await {
            Ok(stream) => {
                let query_id = stream.query_id().to_string();
                let batches: Vec<_> = stream.try_collect().await?;
                let elapsed = started.elapsed();
                println!(
                    "Main job: TPC-H Q1 (sql-samples/tpch/q01.sql), query {query_id}, {:.1} ms:",
                    elapsed.as_secs_f64() * 1000.0
                );
                println!(
                    "{}",
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
                );
                return Ok(());
            }
            Err(error)
                if error.code() == Some(flotilla_protocol::ErrorCode::Unavailable)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
