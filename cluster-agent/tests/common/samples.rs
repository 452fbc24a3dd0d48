//! The queries of `sql-samples/` and their independent answers from in-process DataFusion over
//! the same files.

use super::tpch_dir;
use datafusion::arrow::record_batch::RecordBatch;
use std::path::Path;

/// In-process DataFusion over the same files: the independent answer.
pub async fn reference_context() -> datafusion::prelude::SessionContext {
    let ctx = datafusion::prelude::SessionContext::new();
    let data = tpch_dir();
    for table in cluster_agent::TPCH_TABLES {
        ctx.register_parquet(
            table,
            format!("{}/", data.join(table).display()),
            Default::default(),
        )
        .await
        .unwrap();
    }
    ctx
}

/// Runs `sql` in in-process DataFusion over the same files.
pub async fn reference_batches(sql: &str) -> Vec<RecordBatch> {
    reference_context()
        .await
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

/// Reads a file of `sql-samples/`.
pub fn sample(path: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../sql-samples")
            .join(path),
    )
    .unwrap()
}

/// The 22 TPC-H queries, then the short ones (`sql-samples/short`), as (name, SQL).
pub fn samples() -> Vec<(String, String)> {
    let mut queries: Vec<(String, String)> = (1..=22)
        .map(|number| {
            let name = format!("tpch/q{number:02}.sql");
            let sql = sample(&name);
            (name, sql)
        })
        .collect();
    queries.extend(short_samples());
    queries
}

/// The short queries of `sql-samples/short`, as (name, SQL), by name.
pub fn short_samples() -> Vec<(String, String)> {
    let short_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql-samples/short");
    let mut short: Vec<_> = std::fs::read_dir(short_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    short.sort();
    short
        .into_iter()
        .map(|path| {
            let name = format!("short/{}", path.file_name().unwrap().to_string_lossy());
            (name, std::fs::read_to_string(path).unwrap())
        })
        .collect()
}

/// Says whether a query's rows come in a defined order.
pub fn is_ordered(sql: &str) -> bool {
    sql.to_lowercase().contains("order by")
}
