//! The table catalog every process reads: names, formats, locations (local paths or
//! `s3://` objects) and partition columns; where files may be read from (`location.rs`); the
//! object stores (`stores.rs`); the tables' versions (`versions.rs`); Delta Lake tables
//! (`delta/`) and the schema that names their versions (`lake.rs`); ORC files (`orc.rs`).

pub(crate) mod delta;
pub(crate) mod iceberg;
pub(crate) mod lake;
mod location;
pub(crate) mod orc;
mod register;
pub(crate) mod snapshot;
pub(crate) mod stores;
pub(crate) mod system;
pub(crate) mod versions;

pub use location::Location;
pub use stores::ObjectStoreConfig;

use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The tables queries may name.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// One entry per table.
    pub tables: Vec<TableConfig>,
    /// Where tables may live: directories, and `s3://bucket/prefix/` URLs. Every process reads
    /// only under them (shards when they list tables, TaskManagers when they run the plans
    /// they are sent), and a table outside them fails at start-up. Empty (the default): the
    /// tables' own locations.
    pub data_roots: Vec<String>,
    /// How often a shard lists the tables' files again, in milliseconds: a file added, removed
    /// or rewritten is seen by the queries that start at most this long after. 0: list on every
    /// query.
    pub refresh_ms: u64,
    /// The S3-compatible buckets tables may live in, by bucket name: `[catalog.object_stores.
    /// <bucket>]` serves `s3://<bucket>/...`.
    pub object_stores: BTreeMap<String, ObjectStoreConfig>,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            data_roots: Vec::new(),
            refresh_ms: 1_000,
            object_stores: BTreeMap::new(),
        }
    }
}

/// One table: a file, a directory or an object prefix holding files of one format.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The name SQL uses.
    pub name: String,
    /// The file format.
    pub format: TableFormat,
    /// A file or directory path, or `s3://bucket/key` (a key ending in `/`, or without a file
    /// extension, is a prefix: every file under it belongs to the table).
    pub location: String,
    /// For CSV: whether the first line names the columns.
    #[serde(default = "default_true")]
    pub has_header: bool,
    /// Hive-style partition columns, outermost first: `["year", "month:int"]` reads
    /// `year=2024/month=01/part-0.parquet` as columns `year` (a string) and `month` (an
    /// int). A filter on them reads only the matching directories. Types: `string` (the
    /// default), `int`, `bigint`, `date`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<String>,
    /// The extension of a directory's files, e.g. `.jsonl`. None: the format's (`.parquet`,
    /// `.csv`, `.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
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
    /// Newline-delimited JSON: one object per line.
    Ndjson,
    /// Apache ORC (read with orc-rust, through datafusion-orc).
    Orc,
    /// A Delta Lake table: the location holds `_delta_log/`, which says which Parquet files
    /// make up each version, and the partition columns.
    Delta,
    /// An Apache Iceberg table (v1 or v2): the location is the table's directory (its
    /// `metadata/` holds the metadata files) or one metadata file; the manifests say which
    /// Parquet files make up each snapshot.
    Iceberg,
}

impl TableFormat {
    /// Returns the format a file name's extension says, if any.
    pub fn from_extension(name: &str) -> Option<Self> {
        let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match extension.as_str() {
            "parquet" | "parq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            "orc" => Some(Self::Orc),
            _ => None,
        }
    }

    /// Returns the format `--table NAME=PATH:FORMAT` names, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "ndjson" | "json" | "jsonl" => Some(Self::Ndjson),
            "orc" => Some(Self::Orc),
            "delta" => Some(Self::Delta),
            "iceberg" => Some(Self::Iceberg),
            _ => None,
        }
    }

    /// The formats' names, for messages.
    pub const NAMES: &'static str = "parquet, csv, ndjson, orc, delta and iceberg";

    /// The extension of a directory's files, as DataFusion selects them.
    fn default_extension(self) -> &'static str {
        match self {
            Self::Parquet => ".parquet",
            Self::Csv => ".csv",
            Self::Ndjson => ".json",
            Self::Orc => ".orc",
            Self::Delta | Self::Iceberg => ".parquet",
        }
    }
}

impl TableConfig {
    /// A table of `format` at `location`, with a header line (CSV) and no partitions.
    pub fn new(name: &str, format: TableFormat, location: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            format,
            location: location.into(),
            has_header: true,
            partitions: Vec::new(),
            extension: None,
        }
    }

    /// Returns the table's location, parsed.
    pub fn parsed_location(&self) -> Result<Location, String> {
        Location::parse(&self.location).map_err(|error| format!("table `{}`: {error}", self.name))
    }

    /// Returns the location as DataFusion's listing table takes it: a directory or prefix
    /// ends in `/`.
    pub(crate) fn listing_location(&self) -> Result<String, String> {
        self.parsed_location()
            .map(|location| location.listing_url())
    }

    /// The extension of the files DataFusion reads: a single file's own, else the configured
    /// one or the format's.
    pub(crate) fn file_extension(&self) -> Result<String, String> {
        let location = self.parsed_location()?;
        Ok(match location.file_name() {
            Some(name) => name
                .rsplit_once('.')
                .map(|(_, extension)| format!(".{extension}"))
                .unwrap_or_default(),
            None => match &self.extension {
                Some(extension) if extension.starts_with('.') => extension.clone(),
                Some(extension) => format!(".{extension}"),
                None => self.format.default_extension().to_string(),
            },
        })
    }

    /// Returns the partition columns with their types.
    pub fn partition_columns(&self) -> Result<Vec<(String, DataType)>, String> {
        self.partitions
            .iter()
            .map(|column| {
                let (name, kind) = column.split_once(':').unwrap_or((column, "string"));
                let data_type = match kind.trim().to_ascii_lowercase().as_str() {
                    "string" => DataType::Utf8,
                    "int" => DataType::Int32,
                    "bigint" => DataType::Int64,
                    "date" => DataType::Date32,
                    other => {
                        return Err(format!(
                            "table `{}`: partition column `{name}` has type `{other}`; \
                             the types are string, int, bigint and date",
                            self.name
                        ));
                    }
                };
                Ok((name.trim().to_string(), data_type))
            })
            .collect()
    }
}

impl CatalogConfig {
    /// Returns the catalog of a TPC-H data directory as written by `gen-data`.
    pub fn tpch(data_dir: &Path) -> Self {
        let tables = crate::gendata::TPCH_TABLES
            .iter()
            .map(|name| {
                let location = data_dir.join(name).display().to_string();
                TableConfig::new(name, TableFormat::Parquet, location)
            })
            .collect();
        Self {
            tables,
            data_roots: vec![data_dir.display().to_string()],
            ..Self::default()
        }
    }

    /// Checks what can be checked without reading a file: table names are distinct, locations
    /// parse, local ones exist (so that a typo fails at start-up, not per query), every bucket
    /// has an object store, and partition columns have known types.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for table in &self.tables {
            if !names.insert(table.name.to_ascii_lowercase()) {
                return Err(format!("table `{}` is listed twice", table.name));
            }
            table.partition_columns()?;
            let versioned = matches!(table.format, TableFormat::Delta | TableFormat::Iceberg);
            if versioned && !table.partitions.is_empty() {
                return Err(format!(
                    "table `{}`: a Delta or Iceberg table's partitions come from its log or \
                     metadata; remove `partitions`",
                    table.name
                ));
            }
            match table.parsed_location()? {
                Location::Local(path) if !path.exists() => {
                    return Err(format!(
                        "table `{}`: location {} does not exist",
                        table.name,
                        path.display()
                    ));
                }
                Location::Object { bucket, .. } if !self.object_stores.contains_key(&bucket) => {
                    return Err(format!(
                        "table `{}`: no [catalog.object_stores.{bucket}] serves s3://{bucket}/",
                        table.name
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Registers every table in `ctx`; any table that cannot be read is an error (for
    /// `bench`, which needs them all).
    pub async fn register(&self, ctx: &SessionContext) -> Result<(), DataFusionError> {
        match self.register_reachable(ctx).await?.into_iter().next() {
            Some(unreachable) => Err(DataFusionError::Configuration(unreachable.reason)),
            None => Ok(()),
        }
    }

    /// Registers every table in `ctx` that can be read now, and returns those that cannot (their
    /// store does not answer, their files do not read): one table's store being down must not
    /// keep the others from being served. A mistake in the config is still an error.
    pub async fn register_reachable(
        &self,
        ctx: &SessionContext,
    ) -> Result<Vec<UnreachableTable>, DataFusionError> {
        let mut unreachable = Vec::new();
        for table in &self.tables {
            table.listing().map_err(DataFusionError::Configuration)?;
            if let Err(reason) = table.register(ctx).await {
                tracing::warn!(table = %table.name, %reason, "table not readable; serving the others and trying it again");
                unreachable.push(UnreachableTable {
                    table: table.clone(),
                    reason,
                });
            }
        }
        Ok(unreachable)
    }
}

/// A table whose files could not be read when it was registered.
#[derive(Clone, Debug)]
pub struct UnreachableTable {
    /// The table.
    pub table: TableConfig,
    /// Why, naming its location: `table `t` at s3://bucket/t/: <the store's error>`.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_extensions_and_partitions_have_types() {
        assert_eq!(
            TableFormat::from_extension("a/b.PARQUET"),
            Some(TableFormat::Parquet)
        );
        assert_eq!(
            TableFormat::from_extension("x.jsonl"),
            Some(TableFormat::Ndjson)
        );
        assert_eq!(TableFormat::from_extension("x.txt"), None);
        assert_eq!(TableFormat::from_extension("noext"), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.ndjson");
        std::fs::write(&file, "{}\n").unwrap();
        let mut table = TableConfig::new("t", TableFormat::Ndjson, file.display().to_string());
        assert_eq!(table.file_extension().unwrap(), ".ndjson");
        table.location = dir.path().display().to_string();
        assert_eq!(table.file_extension().unwrap(), ".json");
        table.extension = Some("jsonl".into());
        assert_eq!(table.file_extension().unwrap(), ".jsonl");
        table.partitions = vec!["year:int".into(), "region".into()];
        assert_eq!(
            table.partition_columns().unwrap(),
            [
                ("year".into(), DataType::Int32),
                ("region".into(), DataType::Utf8)
            ]
        );
        table.partitions = vec!["year:float".into()];
        let error = table.partition_columns().unwrap_err();
        assert!(error.contains("`year` has type `float`"), "{error}");
    }

    #[test]
    fn validation_names_the_table_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().display().to_string();
        let mut catalog = CatalogConfig {
            tables: vec![TableConfig::new("a", TableFormat::Csv, here.clone())],
            ..CatalogConfig::default()
        };
        assert_eq!(catalog.validate(), Ok(()));
        catalog
            .tables
            .push(TableConfig::new("A", TableFormat::Csv, here.clone()));
        assert!(catalog.validate().unwrap_err().contains("listed twice"));
        catalog.tables[1] = TableConfig::new("b", TableFormat::Csv, format!("{here}/missing"));
        assert!(catalog.validate().unwrap_err().contains("does not exist"));
        catalog.tables[1] = TableConfig::new("b", TableFormat::Parquet, "s3://lake/b/");
        let error = catalog.validate().unwrap_err();
        assert!(error.contains("[catalog.object_stores.lake]"), "{error}");
        catalog
            .object_stores
            .insert("lake".into(), ObjectStoreConfig::default());
        assert_eq!(catalog.validate(), Ok(()));
        catalog.tables[1].location = "gs://lake/b/".into();
        assert!(catalog.validate().unwrap_err().contains("gs://"));
    }
}
