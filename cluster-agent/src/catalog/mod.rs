//! The table catalog every process reads: names, formats and file locations; and the tables'
//! versions (`versions.rs`).

pub(crate) mod versions;

use datafusion::error::DataFusionError;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The tables queries may name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// One entry per table.
    pub tables: Vec<TableConfig>,
    /// The directories tables may live in. Every process reads files only under them (shards
    /// when they list tables, TaskManagers when they run the plans they are sent), and a table
    /// outside them fails at start-up. Empty (the default): the tables' own locations.
    pub data_roots: Vec<PathBuf>,
    /// How often a shard lists the tables' files again, in milliseconds: a file added, removed
    /// or rewritten is seen by the queries that start at most this long after. 0: list on every
    /// query.
    pub refresh_ms: u64,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            data_roots: Vec::new(),
            refresh_ms: 1_000,
        }
    }
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
        Self {
            tables,
            data_roots: vec![data_dir.to_path_buf()],
            ..Self::default()
        }
    }

    /// Returns the directories files may be read from, resolved (symbolic links followed): the
    /// configured data roots, else every table's location. A table outside them is an error.
    pub fn roots(&self) -> Result<Vec<PathBuf>, String> {
        let resolve = |path: &Path, what: &str| {
            path.canonicalize()
                .map_err(|error| format!("{what} {}: {error}", path.display()))
        };
        let roots = if self.data_roots.is_empty() {
            self.tables
                .iter()
                .map(|table| {
                    resolve(
                        &table.location,
                        &format!("table `{}`: location", table.name),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            self.data_roots
                .iter()
                .map(|root| resolve(root, "data root"))
                .collect::<Result<Vec<_>, _>>()?
        };
        for table in &self.tables {
            let location = resolve(
                &table.location,
                &format!("table `{}`: location", table.name),
            )?;
            if !roots.iter().any(|root| location.starts_with(root)) {
                return Err(format!(
                    "table `{}`: location {} is outside catalog.data_roots",
                    table.name,
                    location.display()
                ));
            }
        }
        Ok(roots)
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
            let location = listing_location(table);
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

/// Returns a table's location as DataFusion's listing table takes it: a directory ends in `/`.
fn listing_location(table: &TableConfig) -> String {
    let mut location = table.location.to_string_lossy().to_string();
    if table.location.is_dir() && !location.ends_with('/') {
        location.push('/');
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, location: &Path) -> TableConfig {
        TableConfig {
            name: name.into(),
            format: TableFormat::Csv,
            location: location.to_path_buf(),
            has_header: true,
        }
    }

    #[test]
    fn tables_must_lie_under_the_data_roots() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = root.path().join("sales");
        std::fs::create_dir(&inside).unwrap();
        let mut catalog = CatalogConfig {
            tables: vec![table("sales", &inside)],
            data_roots: vec![root.path().to_path_buf()],
            ..CatalogConfig::default()
        };
        assert_eq!(
            catalog.roots().unwrap(),
            vec![root.path().canonicalize().unwrap()]
        );
        // Without data roots, the tables' own locations are the roots.
        catalog.data_roots.clear();
        assert_eq!(
            catalog.roots().unwrap(),
            vec![inside.canonicalize().unwrap()]
        );
        // A table outside the roots, also by a `..` or a symbolic link, fails.
        catalog.data_roots = vec![root.path().to_path_buf()];
        catalog.tables.push(table("escape", &inside.join("../..")));
        let error = catalog.roots().unwrap_err();
        assert!(
            error.contains("table `escape`") && error.contains("outside catalog.data_roots"),
            "{error}"
        );
        catalog.tables.pop();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        catalog.tables.push(table("linked", &link));
        assert!(catalog.roots().unwrap_err().contains("table `linked`"));
        // A root that does not exist fails too.
        catalog.tables.pop();
        catalog.data_roots = vec![root.path().join("missing")];
        assert!(catalog.roots().unwrap_err().contains("data root"));
    }
}
