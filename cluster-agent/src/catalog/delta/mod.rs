//! Delta Lake tables, read-only: deltalake-core reads the log (which files make up a version,
//! with their partition values and statistics; the history), and `snapshot.rs` scans one
//! version's files with DataFusion's Parquet reader.
//!
//! A table's version is its commit number. SQL names the latest (`orders`), an older version
//! (`orders@v3`), the version current at a time (`"orders@2026-12-07T10:00:00Z"`), or the
//! commits (`"orders$history"`); `catalog/lake.rs` parses those names.

mod history;
mod snapshot;

use super::lake::VersionedTable;
use super::snapshot::{Recent, SnapshotTable};
use super::versions::LatestCommit;
use chrono::{DateTime, Utc};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use deltalake_core::{DeltaTable, DeltaTableBuilder};
use object_store::path::Path;
use std::sync::Arc;

/// One Delta table's log, and the snapshots read from it.
#[derive(Debug)]
pub(crate) struct DeltaLog {
    name: String,
    url: url::Url,
    store: ObjectStoreUrl,
    root: Path,
    object_store: Arc<dyn object_store::ObjectStore>,
    /// The table at its latest version read; updated before every use.
    table: tokio::sync::Mutex<DeltaTable>,
    /// The versions last planned (the latest among them).
    recent: Recent,
}

impl DeltaLog {
    /// Opens the Delta table named `name` at `location` (a directory or `s3://` prefix holding
    /// `_delta_log/`) through `runtime`'s object stores, reading its latest version.
    pub(crate) async fn open(name: &str, location: &str, runtime: &RuntimeEnv) -> Result<Self> {
        let listing = ListingTableUrl::parse(location)?;
        let store = listing.object_store();
        let object_store = runtime.object_store(&store)?;
        let url: url::Url = AsRef::<url::Url>::as_ref(&listing).clone();
        let root = Path::from(listing.prefix().as_ref().trim_end_matches('/'));
        let mut table = builder(&url, &object_store)?
            .build()
            .map_err(|error| delta_error(name, error))?;
        table
            .load()
            .await
            .map_err(|error| delta_error(name, error))?;
        Ok(Self {
            name: name.to_string(),
            url,
            store,
            root,
            object_store,
            table: tokio::sync::Mutex::new(table),
            recent: Recent::default(),
        })
    }

    /// The latest version's number, read from the log now (one listing of `_delta_log/`).
    pub(crate) async fn latest_version(&self) -> Result<u64> {
        let table = self.table.lock().await;
        table
            .get_latest_version()
            .await
            .map_err(|error| delta_error(&self.name, error))
    }

    fn snapshot_of(&self, table: &DeltaTable) -> Result<SnapshotTable> {
        let state = table
            .snapshot()
            .map_err(|error| delta_error(&self.name, error))?;
        snapshot::snapshot_table(&self.name, state.snapshot(), self.store.clone(), &self.root)
    }
}

#[async_trait::async_trait]
impl VersionedTable for DeltaLog {
    /// The latest version, read from the log now: what a query that names the table reads.
    async fn latest(&self) -> Result<Arc<SnapshotTable>> {
        let mut table = self.table.lock().await;
        table
            .update_incremental(None)
            .await
            .map_err(|error| delta_error(&self.name, error))?;
        let version = table.version().unwrap_or_default();
        match self.recent.get(version) {
            Some(snapshot) => Ok(snapshot),
            None => Ok(self.recent.keep(self.snapshot_of(&table)?)),
        }
    }

    async fn at_version(&self, version: u64) -> Result<Arc<SnapshotTable>> {
        if let Some(snapshot) = self.recent.get(version) {
            return Ok(snapshot);
        }
        let latest = self.latest_version().await?;
        if version > latest {
            return Err(DataFusionError::Plan(format!(
                "Delta table `{}` has no version {version}: its versions are 0 to {latest}",
                self.name
            )));
        }
        let mut table = builder(&self.url, &self.object_store)?
            .with_version(version)
            .build()
            .map_err(|error| delta_error(&self.name, error))?;
        table
            .load_version(version)
            .await
            .map_err(|error| delta_error(&self.name, error))?;
        Ok(self.recent.keep(self.snapshot_of(&table)?))
    }

    /// The version that was the latest at `time` (time travel), by the commit times the
    /// history shows.
    async fn at_time(&self, time: DateTime<Utc>) -> Result<Arc<SnapshotTable>> {
        let version = {
            let mut table = self.table.lock().await;
            table
                .update_incremental(None)
                .await
                .map_err(|error| delta_error(&self.name, error))?;
            history::version_at(&self.name, &table, time.timestamp_millis()).await?
        };
        self.at_version(version).await
    }

    /// The table's commits, newest first, as a table.
    async fn history(&self) -> Result<Arc<dyn TableProvider>> {
        let mut table = self.table.lock().await;
        table
            .update_incremental(None)
            .await
            .map_err(|error| delta_error(&self.name, error))?;
        history::table(&self.name, &table).await
    }
}

/// A Delta table's latest commit number, read from its log: what `versions.rs` watches.
pub(crate) struct LatestVersion {
    log: deltalake_core::logstore::LogStoreRef,
    /// The last commit seen: the log is listed from there on.
    seen: std::sync::atomic::AtomicU64,
}

impl LatestVersion {
    /// Watches the Delta table at `url` through `runtime`'s object store for it.
    pub(crate) fn new(url: &ListingTableUrl, runtime: &RuntimeEnv) -> anyhow::Result<Self> {
        let object_store = runtime.object_store(url.object_store())?;
        let url: url::Url = AsRef::<url::Url>::as_ref(url).clone();
        let log = builder(&url, &object_store)?.build_storage()?;
        Ok(Self {
            log,
            seen: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

#[async_trait::async_trait]
impl LatestCommit for LatestVersion {
    /// Reads the latest commit number now (one listing of `_delta_log/` from the last seen).
    async fn read(&self) -> anyhow::Result<u64> {
        use std::sync::atomic::Ordering;
        let version = self
            .log
            .get_latest_version(self.seen.load(Ordering::Relaxed))
            .await?;
        self.seen.fetch_max(version, Ordering::Relaxed);
        Ok(version)
    }
}

/// A builder for the table at `url`, reading through Flotilla's object store for it.
fn builder(
    url: &url::Url,
    object_store: &Arc<dyn object_store::ObjectStore>,
) -> Result<DeltaTableBuilder> {
    read_only_log_stores();
    Ok(DeltaTableBuilder::from_url(url.clone())
        .map_err(|error| DataFusionError::External(Box::new(error)))?
        .with_storage_backend(Arc::clone(object_store), url.clone()))
}

/// Lets deltalake-core read logs on `s3://` through the object store it is given. It finds a
/// table's log store by the URL's scheme, and knows only `file://` and `memory://` unless the
/// `deltalake-aws` crate registers S3's, whose only addition is coordinating writers: Flotilla
/// only reads, so S3 gets the same default log store as local files.
fn read_only_log_stores() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        let factories = deltalake_core::logstore::logstore_factories();
        let local = url::Url::parse("file://").expect("a URL");
        let default = factories
            .get(&local)
            .map(|factory| Arc::clone(factory.value()));
        if let Some(default) = default {
            for scheme in ["s3://", "s3a://"] {
                let url = url::Url::parse(scheme).expect("a URL");
                factories.entry(url).or_insert_with(|| Arc::clone(&default));
            }
        }
    });
}

/// A deltalake-core error, naming the table.
fn delta_error(name: &str, error: deltalake_core::DeltaTableError) -> DataFusionError {
    DataFusionError::Plan(format!("Delta table `{name}`: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a one-commit Delta log: `protocol`, a table of one column `x` (with
    /// `field_metadata`) whose `configuration` is given, and one file added with `add_extra`.
    fn one_commit(dir: &std::path::Path, protocol: &str, metadata: (&str, &str), add_extra: &str) {
        let (field_metadata, configuration) = metadata;
        let schema = format!(
            r#"{{"type":"struct","fields":[{{"name":"x","type":"long","nullable":true,"metadata":{{{field_metadata}}}}}]}}"#
        );
        let lines = [
            format!(r#"{{"protocol":{protocol}}}"#),
            format!(
                r#"{{"metaData":{{"id":"00000000-0000-0000-0000-000000000001","format":{{"provider":"parquet","options":{{}}}},"schemaString":{},"partitionColumns":[],"configuration":{{{configuration}}},"createdTime":0}}}}"#,
                serde_json::to_string(&schema).unwrap()
            ),
            format!(
                r#"{{"add":{{"path":"part-0.parquet","partitionValues":{{}},"size":100,"modificationTime":0,"dataChange":true{add_extra}}}}}"#
            ),
        ];
        let log = dir.join("_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(log.join("00000000000000000000.json"), lines.join("\n")).unwrap();
    }

    async fn open(dir: &std::path::Path) -> DeltaLog {
        DeltaLog::open("t", &dir.display().to_string(), &RuntimeEnv::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn what_a_parquet_scan_would_read_wrongly_is_refused_by_name() {
        let plain = tempfile::tempdir().unwrap();
        one_commit(
            plain.path(),
            r#"{"minReaderVersion":1,"minWriterVersion":2}"#,
            ("", ""),
            "",
        );
        let log = open(plain.path()).await;
        let snapshot = log.latest().await.unwrap();
        assert_eq!(snapshot.version, 0);
        assert_eq!(log.latest_version().await.unwrap(), 0);

        let deleted = tempfile::tempdir().unwrap();
        one_commit(
            deleted.path(),
            r#"{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}"#,
            ("", r#""delta.enableDeletionVectors":"true""#),
            r#","deletionVector":{"storageType":"u","pathOrInlineDv":"ab^-aqEH.-t@S}K{vb[*k^","offset":4,"sizeInBytes":40,"cardinality":6}"#,
        );
        let error = open(deleted.path())
            .await
            .latest()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("deletion vectors") && error.contains("`t`"),
            "{error}"
        );

        let mapped = tempfile::tempdir().unwrap();
        one_commit(
            mapped.path(),
            r#"{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["columnMapping"],"writerFeatures":["columnMapping"]}"#,
            (
                r#""delta.columnMapping.id":1,"delta.columnMapping.physicalName":"col-5f2a""#,
                r#""delta.columnMapping.mode":"name","delta.columnMapping.maxColumnId":"1""#,
            ),
            "",
        );
        let error = open(mapped.path())
            .await
            .latest()
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("column mapping"), "{error}");
    }
}
