//! Table versions: a table is a set of files that changes while the cluster runs. Its version
//! is a hash of its file list (paths, sizes, modification times), listed again at least every
//! `catalog.refresh_ms`; a Delta table's is its latest commit number, read from its log (no
//! file listing). A cached plan is valid only for the versions it was planned from.
//!
//! The shard plans with DataFusion's list-files cache turned off, so a plan lists its tables
//! when it is made: a plan made after a version was read is never older than that version. A
//! Delta table's plan says itself which commit it reads (`SnapshotTable::version`); a
//! pinned reference (`orders@v3`) is at that version forever.

use super::delta::LatestVersion;
use super::iceberg::IcebergHead;
use super::lake::Reference;
use super::{CatalogConfig, TableFormat};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStoreExt};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// One table's version: equal versions mean the same files, byte for byte as far as sizes
/// and modification times tell.
pub(crate) type Version = u64;

/// The version of a table that could not be listed: never equal to a listed one's (a
/// listed table's hash is cleared of this bit), so plans made before the failure are unused.
const UNLISTABLE: Version = u64::MAX;

/// Every table's current version, refreshed by listing its files.
pub(crate) struct CatalogVersions {
    tables: Vec<Watched>,
    runtime: Arc<RuntimeEnv>,
    versions: RwLock<HashMap<String, Version>>,
    every: Duration,
}

/// A table whose files are listed, or whose log is read.
struct Watched {
    name: String,
    url: ListingTableUrl,
    extension: String,
    /// Whether its files lie in partition directories below the location.
    partitioned: bool,
    /// A Delta table's latest commit, an Iceberg table's current snapshot.
    log: Option<Box<dyn LatestCommit>>,
}

/// A table format's own pointer to its latest version (a Delta log, Iceberg metadata), read
/// without listing the table's data files.
#[async_trait::async_trait]
pub(crate) trait LatestCommit: Send + Sync {
    /// Reads the latest version now.
    async fn read(&self) -> anyhow::Result<Version>;
}

impl CatalogVersions {
    /// Watches the catalog's tables through `runtime`'s object stores. Versions are unknown
    /// (and no plan is cacheable) until the first [`CatalogVersions::refresh`].
    pub(crate) fn new(catalog: &CatalogConfig, runtime: Arc<RuntimeEnv>) -> anyhow::Result<Self> {
        let tables = catalog
            .tables
            .iter()
            .map(|table| {
                let url =
                    ListingTableUrl::parse(table.listing_location().map_err(anyhow::Error::msg)?)?;
                let log: Option<Box<dyn LatestCommit>> = match table.format {
                    TableFormat::Delta => Some(Box::new(LatestVersion::new(&url, &runtime)?)),
                    TableFormat::Iceberg => Some(Box::new(IcebergHead::new(&url, &runtime)?)),
                    _ => None,
                };
                Ok(Watched {
                    name: table.name.clone(),
                    url,
                    extension: table.file_extension().map_err(anyhow::Error::msg)?,
                    partitioned: !table.partitions.is_empty(),
                    log,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            tables,
            runtime,
            versions: RwLock::default(),
            every: Duration::from_millis(catalog.refresh_ms),
        })
    }

    /// Whether tables are listed on every query (`catalog.refresh_ms = 0`) rather than by
    /// [`CatalogVersions::spawn_refresher`].
    pub(crate) fn checks_every_query(&self) -> bool {
        self.every.is_zero()
    }

    /// Returns the current version of the table named `name`, if it is in the catalog (a
    /// Delta table's pinned version, `orders@v3`, is 3).
    pub(crate) fn version(&self, name: &str) -> Option<Version> {
        if let Some(version) = self.pinned(name) {
            return Some(version);
        }
        self.versions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .copied()
    }

    /// The version `name` is pinned to, when it names a Delta table's version.
    fn pinned(&self, name: &str) -> Option<Version> {
        let (table, version) = Reference::pinned_version(name)?;
        self.tables
            .iter()
            .any(|watched| watched.name == table && watched.log.is_some())
            .then_some(version)
    }

    /// Lists every table now and returns the names of those whose version changed.
    pub(crate) async fn refresh(&self) -> Vec<String> {
        let listed = futures::future::join_all(self.tables.iter().map(|table| async {
            let version = match self.read(table).await {
                Ok(version) => version,
                Err(error) => {
                    tracing::warn!(table = %table.name, %error, "cannot read the table's version");
                    UNLISTABLE
                }
            };
            (table.name.as_str(), version)
        }))
        .await;
        let mut versions = self
            .versions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut changed = Vec::new();
        for (name, version) in listed {
            if versions.insert(name.to_string(), version) != Some(version) {
                changed.push(name.to_string());
            }
        }
        changed
    }

    /// Lists the tables `names` now: their current versions (None when one is not in the
    /// catalog or cannot be listed), and the names whose stored version this changed (the
    /// stored versions are updated, as a refresh would).
    pub(crate) async fn current(
        &self,
        names: &[String],
    ) -> Option<(Vec<(String, Version)>, Vec<String>)> {
        let (pinned, names): (Vec<&String>, Vec<&String>) =
            names.iter().partition(|name| self.pinned(name).is_some());
        let watched = names
            .iter()
            .map(|name| self.tables.iter().find(|table| &&table.name == name))
            .collect::<Option<Vec<_>>>()?;
        let mut listed = futures::future::join_all(watched.iter().map(|table| async {
            self.read(table)
                .await
                .ok()
                .map(|version| (table.name.clone(), version))
        }))
        .await
        .into_iter()
        .collect::<Option<Vec<_>>>()?;
        let mut versions = self
            .versions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = listed
            .iter()
            .filter(|(name, version)| versions.insert(name.clone(), *version) != Some(*version))
            .map(|(name, _)| name.clone())
            .collect();
        listed.extend(
            pinned
                .into_iter()
                .filter_map(|name| Some((name.clone(), self.pinned(name)?))),
        );
        listed.sort();
        Some((listed, changed))
    }

    /// Refreshes every `catalog.refresh_ms` in the background (unless that is 0), calling
    /// `changed` with the tables whose version changed.
    pub(crate) fn spawn_refresher(
        self: &Arc<Self>,
        changed: impl Fn(&[String]) + Send + Sync + 'static,
    ) {
        if self.checks_every_query() {
            return;
        }
        let versions = Arc::downgrade(self);
        let every = self.every;
        flotilla_cluster::spawn_instrumented(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(versions) = versions.upgrade() else {
                    return;
                };
                let names = versions.refresh().await;
                if !names.is_empty() {
                    tracing::info!(tables = ?names, "table versions changed");
                    changed(&names);
                }
            }
        });
    }

    /// Reads one table's version: its log's latest commit, or a hash of its files.
    async fn read(&self, table: &Watched) -> anyhow::Result<Version> {
        match &table.log {
            Some(latest) => latest.read().await,
            None => self.list(table).await.map(version_of),
        }
    }

    /// Lists one table's files as DataFusion's listing table does.
    async fn list(&self, table: &Watched) -> anyhow::Result<Vec<ObjectMeta>> {
        let store = self.runtime.object_store(table.url.object_store())?;
        let prefix = table.url.prefix();
        if !table.url.is_collection() {
            return Ok(vec![store.head(prefix).await?]);
        }
        let files = store
            .list(Some(prefix))
            .try_filter(|meta| {
                let path = &meta.location;
                futures::future::ready(
                    table.url.contains(path, !table.partitioned)
                        && path.as_ref().ends_with(&table.extension),
                )
            })
            .try_collect()
            .await?;
        Ok(files)
    }
}

/// Hashes a file list, in any order, into a version.
fn version_of(mut files: Vec<ObjectMeta>) -> Version {
    files.sort_by(|a, b| a.location.cmp(&b.location));
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in &files {
        file.location.as_ref().hash(&mut hasher);
        file.size.hash(&mut hasher);
        file.last_modified.hash(&mut hasher);
        file.e_tag.hash(&mut hasher);
    }
    hasher.finish() & !(1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::TableConfig;

    #[tokio::test]
    async fn a_version_changes_with_each_added_removed_or_rewritten_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("events");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.csv"), "x\n1\n").unwrap();
        let catalog = CatalogConfig {
            tables: vec![TableConfig::new(
                "events",
                crate::catalog::TableFormat::Csv,
                dir.display().to_string(),
            )],
            ..CatalogConfig::default()
        };
        let versions = CatalogVersions::new(&catalog, Arc::new(RuntimeEnv::default())).unwrap();
        assert_eq!(versions.version("events"), None);
        assert_eq!(versions.refresh().await, ["events"]);
        let first = versions.version("events").unwrap();
        assert!(versions.refresh().await.is_empty(), "nothing changed");

        std::fs::write(dir.join("b.csv"), "x\n2\n").unwrap();
        assert_eq!(versions.refresh().await, ["events"]);
        let added = versions.version("events").unwrap();
        // Files of another format, and files in subdirectories, are not the table's.
        std::fs::write(dir.join("notes.txt"), "-").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/c.csv"), "x\n3\n").unwrap();
        assert!(versions.refresh().await.is_empty());

        std::fs::write(dir.join("b.csv"), "x\n22\n").unwrap();
        assert_eq!(versions.refresh().await, ["events"], "rewritten");
        std::fs::remove_file(dir.join("b.csv")).unwrap();
        assert_eq!(versions.refresh().await, ["events"], "removed");
        assert_ne!(versions.version("events"), Some(added));
        assert_eq!(
            versions.version("events"),
            Some(first),
            "the same files again"
        );

        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(versions.refresh().await, ["events"], "gone");
    }
}
