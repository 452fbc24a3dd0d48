//! The main job `local` runs once the federation is up, through the gateway with the Rust
//! client: TPC-H Q1, or with the user's own tables, the row count of each.

use crate::catalog::CatalogConfig;
use std::path::Path;
use std::time::{Duration, Instant};

/// A query to run once, and what to call it.
pub(super) struct MainJob {
    /// What the output calls it.
    pub(super) title: String,
    /// The SQL.
    pub(super) sql: String,
}

impl MainJob {
    /// TPC-H Q1.
    pub(super) fn tpch() -> Self {
        Self {
            title: "TPC-H Q1 (sql-samples/tpch/q01.sql)".into(),
            sql: include_str!("../../../sql-samples/tpch/q01.sql").into(),
        }
    }

    /// Counts the rows of every table of `catalog`, in one query.
    pub(super) fn count_rows(catalog: &CatalogConfig) -> Self {
        let sql = catalog
            .tables
            .iter()
            .map(|table| {
                let quoted = table.name.replace('"', "\"\"");
                let literal = table.name.replace('\'', "''");
                format!("SELECT '{literal}' AS table_name, count(*) AS row_count FROM \"{quoted}\"")
            })
            .collect::<Vec<_>>()
            .join("\nUNION ALL\n");
        Self {
            title: "row counts of your tables".into(),
            sql: format!("{sql}\nORDER BY table_name"),
        }
    }

    /// Waits (at most 30 s) until the gateway's `/readyz` says it takes queries, then runs the
    /// job once through it and prints its result. Readiness is the gateway's: a ready gateway
    /// that then refuses the job is a defect, and is reported, not retried.
    pub(super) async fn run(&self, url: &str, ca: Option<&Path>) -> anyhow::Result<()> {
        use futures::TryStreamExt;
        let mut client = flotilla_client::Client::builder(url);
        if let Some(ca) = ca {
            client = client.root_certificates_pem(&std::fs::read(ca)?)?;
        }
        let client = client.build()?;
        client
            .wait_ready(Duration::from_secs(30))
            .await
            .map_err(|error| anyhow::anyhow!("the gateway is not ready after 30 s: {error}"))?;
        let started = Instant::now();
        let stream = client.query(&self.sql).await?;
        let query_id = stream.query_id().to_string();
        let batches: Vec<_> = stream.try_collect().await?;
        println!(
            "Main job: {}, query {query_id}, {:.1} ms:",
            self.title,
            started.elapsed().as_secs_f64() * 1000.0
        );
        println!(
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)?
        );
        Ok(())
    }
}
