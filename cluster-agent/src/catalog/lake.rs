//! The schema SQL names tables in, with table formats that keep versions (Delta Lake, Iceberg):
//! a plain name reads the latest version, read from the log or metadata when the query is
//! planned, and a suffix picks another view of the same table:
//!
//! | name                                | reads                                       |
//! |-------------------------------------|---------------------------------------------|
//! | `orders`                            | the latest version                          |
//! | `orders@v3`                         | version 3 (time travel; Iceberg: snapshot id) |
//! | `"orders@2026-12-07T10:00:00Z"`     | the version that was the latest at that time |
//! | `"orders$history"`                  | the commits: version, time, operation, ...  |
//!
//! Other tables (Parquet, CSV, NDJSON, ORC files) are served by the schema this one wraps.

use super::snapshot::SnapshotTable;
use chrono::{DateTime, NaiveDateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// A reference to a versioned table, as SQL names it.
#[derive(Debug, PartialEq)]
pub(crate) enum Reference<'a> {
    /// The latest version.
    Latest(&'a str),
    /// `name@v<N>`.
    Version(&'a str, u64),
    /// `name@<time>`.
    AsOf(&'a str, DateTime<Utc>),
    /// `name$history`.
    History(&'a str),
}

impl<'a> Reference<'a> {
    /// Parses a table name; an `@` suffix that is neither a version nor a time is an error.
    pub(crate) fn parse(name: &'a str) -> Result<Self> {
        if let Some(table) = name.strip_suffix("$history") {
            return Ok(Self::History(table));
        }
        let Some((table, at)) = name.split_once('@') else {
            return Ok(Self::Latest(name));
        };
        if let Some(version) = at.strip_prefix(['v', 'V'])
            && let Ok(version) = version.parse::<u64>()
        {
            return Ok(Self::Version(table, version));
        }
        if let Ok(time) = DateTime::parse_from_rfc3339(at) {
            return Ok(Self::AsOf(table, time.with_timezone(&Utc)));
        }
        for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d"] {
            let parsed = if format == "%Y-%m-%d" {
                chrono::NaiveDate::parse_from_str(at, format)
                    .ok()
                    .and_then(|date| date.and_hms_opt(0, 0, 0))
            } else {
                NaiveDateTime::parse_from_str(at, format).ok()
            };
            if let Some(time) = parsed {
                return Ok(Self::AsOf(table, time.and_utc()));
            }
        }
        Err(DataFusionError::Plan(format!(
            "table `{name}`: after `@` comes a version (`{table}@v3`) or a time \
             (`\"{table}@2026-12-07T10:00:00Z\"`, UTC unless it says otherwise)"
        )))
    }

    /// The version a reference always reads (`name@v<N>`), if it is pinned to one.
    pub(crate) fn pinned_version(name: &'a str) -> Option<(&'a str, u64)> {
        match Self::parse(name) {
            Ok(Self::Version(table, version)) => Some((table, version)),
            _ => None,
        }
    }
}

/// A table whose versions SQL names: a Delta table's commits, an Iceberg table's snapshots.
#[async_trait::async_trait]
pub(crate) trait VersionedTable: std::fmt::Debug + Send + Sync {
    /// The latest version, read now: what a query that names the table reads.
    async fn latest(&self) -> Result<Arc<SnapshotTable>>;
    /// The version `version` (`name@v<N>`).
    async fn at_version(&self, version: u64) -> Result<Arc<SnapshotTable>>;
    /// The version that was the latest at `time`.
    async fn at_time(&self, time: DateTime<Utc>) -> Result<Arc<SnapshotTable>>;
    /// The versions, newest first, as a table (`name$history`).
    async fn history(&self) -> Result<Arc<dyn TableProvider>>;
}

/// One version in a table's history (`name$history`): the same columns for every format.
pub(crate) struct HistoryEntry {
    /// A Delta commit number, an Iceberg snapshot id.
    pub(crate) version: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) operation: Option<String>,
    /// What the operation was given (Delta) or what it did (Iceberg's summary), as JSON.
    pub(crate) parameters: Option<String>,
    /// The version it was based on.
    pub(crate) read_version: Option<i64>,
    pub(crate) engine: Option<String>,
}

/// A history as a table, in the order given (newest first).
pub(crate) fn history_table(entries: &[HistoryEntry]) -> Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("version", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("operation", DataType::Utf8, true),
        Field::new("operation_parameters", DataType::Utf8, true),
        Field::new("read_version", DataType::Int64, true),
        Field::new("engine_info", DataType::Utf8, true),
    ]));
    let text = |value: fn(&HistoryEntry) -> Option<&str>| -> ArrayRef {
        Arc::new(entries.iter().map(value).collect::<StringArray>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            entries.iter().map(|entry| entry.version),
        )),
        Arc::new(
            entries
                .iter()
                .map(|entry| entry.timestamp_ms)
                .collect::<TimestampMillisecondArray>()
                .with_timezone("UTC"),
        ),
        text(|entry| entry.operation.as_deref()),
        text(|entry| entry.parameters.as_deref()),
        Arc::new(
            entries
                .iter()
                .map(|entry| entry.read_version)
                .collect::<Int64Array>(),
        ),
        text(|entry| entry.engine.as_deref()),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// The default schema, with the versioned tables beside the others.
#[derive(Debug)]
pub(crate) struct LakeSchema {
    files: Arc<dyn SchemaProvider>,
    versioned: RwLock<BTreeMap<String, Arc<dyn VersionedTable>>>,
}

impl LakeSchema {
    /// The lake schema of `ctx`'s default schema, put in its place on first use.
    pub(crate) fn of(ctx: &SessionContext) -> Result<Arc<LakeSchema>> {
        let state = ctx.state();
        let options = &state.config().options().catalog;
        let catalog = ctx
            .catalog(&options.default_catalog)
            .ok_or_else(|| DataFusionError::Internal("no default catalog".into()))?;
        let schema = catalog
            .schema(&options.default_schema)
            .ok_or_else(|| DataFusionError::Internal("no default schema".into()))?;
        let any: Arc<dyn std::any::Any + Send + Sync> = schema.clone();
        if let Ok(lake) = any.downcast::<LakeSchema>() {
            return Ok(lake);
        }
        let lake = Arc::new(LakeSchema {
            files: schema,
            versioned: RwLock::default(),
        });
        catalog.register_schema(&options.default_schema, Arc::clone(&lake) as _)?;
        Ok(lake)
    }

    /// Serves the versioned table `name` from `table`.
    pub(crate) fn add(&self, name: &str, table: Arc<dyn VersionedTable>) {
        self.versioned
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_string(), table);
    }

    fn versioned(&self, name: &str) -> Option<Arc<dyn VersionedTable>> {
        self.versioned
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned()
    }
}

#[async_trait::async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.files.table_names();
        names.extend(
            self.versioned
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .keys()
                .cloned(),
        );
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.files.table(name).await? {
            return Ok(Some(table));
        }
        let reference = match Reference::parse(name) {
            Ok(reference) => reference,
            // Not a versioned reference: an unknown table, as DataFusion reports it.
            Err(_) if !name.contains('@') => return Ok(None),
            Err(error) => return Err(error),
        };
        let table = match reference {
            Reference::Latest(table)
            | Reference::Version(table, _)
            | Reference::AsOf(table, _)
            | Reference::History(table) => table,
        };
        let Some(log) = self.versioned(table) else {
            if table != name && self.files.table_exist(table) {
                return Err(DataFusionError::Plan(format!(
                    "table `{table}` is a set of files, not a Delta or Iceberg table: it has no \
                     versions or history (`{name}`)"
                )));
            }
            return Ok(None);
        };
        let provider: Arc<dyn TableProvider> = match reference {
            Reference::Latest(_) => log.latest().await?,
            Reference::Version(_, version) => log.at_version(version).await?,
            Reference::AsOf(_, time) => log.at_time(time).await?,
            Reference::History(_) => log.history().await?,
        };
        Ok(Some(provider))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        self.files.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.files.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.files.table_exist(name)
            || self
                .versioned
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pick_a_version_a_time_or_the_history() {
        assert_eq!(Reference::parse("t").unwrap(), Reference::Latest("t"));
        assert_eq!(
            Reference::parse("t@v3").unwrap(),
            Reference::Version("t", 3)
        );
        assert_eq!(
            Reference::parse("t$history").unwrap(),
            Reference::History("t")
        );
        let noon = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z").unwrap();
        for name in [
            "t@2026-12-07T12:00:00Z",
            "t@2026-12-07T13:00:00+01:00",
            "t@2026-12-07 12:00:00",
        ] {
            assert_eq!(
                Reference::parse(name).unwrap(),
                Reference::AsOf("t", noon.into())
            );
        }
        let midnight = DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z").unwrap();
        assert_eq!(
            Reference::parse("t@2026-12-07").unwrap(),
            Reference::AsOf("t", midnight.into())
        );
        let error = Reference::parse("t@yesterday").unwrap_err().to_string();
        assert!(error.contains("t@v3"), "{error}");
        assert_eq!(Reference::pinned_version("t@v12"), Some(("t", 12)));
        assert_eq!(Reference::pinned_version("t"), None);
    }
}
