//! The table catalog every process reads: names, formats and file locations.

use datafusion::error::DataFusionError;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The tables queries may name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// One entry per table.
    pub tables: Vec<TableConfig>,
}

/// One table: a file or a directory of files of one format.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The name SQL uses.
    pub name: String,
    /// The file format.
    pub format: TableFormat,
    /// A file, or a directory whose files all belong to the table.
    pub location: PathBuf,
    /// For CSV: whether the first line names the columns.
    #[serde(default = "default_true")]
    pub has_header: bool,
}

fn default_true() -> bool {
    true
}

/// A table's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values.
    Csv,
}

impl CatalogConfig {
    /// Returns the catalog of a TPC-H data directory as written by `gen-data`.
    pub fn tpch(data_dir: &Path) -> Self {
        let tables = crate::gendata::TPCH_TABLES
            .iter()
            .map(|name| TableConfig {
                name: (*name).to_string(),
                format: TableFormat::Parquet,
                location: data_dir.join(name),
                has_header: true,
            })
            .collect();
        Self { tables }
    }

    /// Checks that every location exists, so that a typo fails at start-up, not per query.
    pub fn validate(&self) -> Result<(), String> {
        for table in &self.tables {
            if !table.location.exists() {
                return Err(format!(
                    "table `{}`: location {} does not exist",
                    table.name,
                    table.location.display()
                ));
            }
        }
        Ok(())
    }

    /// Registers every table in `ctx`.
    pub async fn register(&self, ctx: &SessionContext) -> Result<(), DataFusionError> {
        for table in &self.tables {
            let mut location = table.location.to_string_lossy().to_string();
            if table.location.is_dir() && !location.ends_with('/') {
                location.push('/');
            }
            match table.format {
                TableFormat::Parquet => {
                    ctx.register_parquet(&table.name, &location, ParquetReadOptions::default())
                        .await?
                }
                TableFormat::Csv => {
                    let options = CsvReadOptions::new().has_header(table.has_header);
                    ctx.register_csv(&table.name, &location, options).await?
                }
            }
        }
        Ok(())
    }
}
