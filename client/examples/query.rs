//! Runs one query through a Flotilla gateway and prints the result as a table.
//!
//! `cargo run -p flotilla-client --example query -- http://127.0.0.1:8080 'SELECT * FROM region'`

use futures::TryStreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let sql = args.next().unwrap_or_else(|| {
        "SELECT r_regionkey, r_name FROM region ORDER BY r_regionkey".to_string()
    });
    let client = flotilla_client::Client::new(&url)?;
    let started = std::time::Instant::now();
    let result = client.query(&sql).await?;
    let query_id = result.query_id().to_string();
    let batches: Vec<_> = result.try_collect().await?;
    let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
    println!("{}", arrow_cast::pretty::pretty_format_batches(&batches)?);
    println!(
        "{rows} rows, query {query_id}, {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
