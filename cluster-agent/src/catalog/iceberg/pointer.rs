//! Where an Iceberg table's current metadata is: one metadata file given as the location, or
//! the newest in its `metadata/` directory (`version-hint.text` for Hadoop tables, else the
//! highest-numbered `NNNNN-<uuid>.metadata.json`), read again only when it changed.

use super::metadata::TableMetadata;
use crate::catalog::versions::LatestCommit;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use std::sync::Arc;

/// Where a table's current metadata file is, and the newest one read.
pub(super) struct Pointer {
    pub(super) name: String,
    pub(super) store: Arc<dyn ObjectStore>,
    /// The metadata file given as the location: the table is always as it says.
    file: Option<Path>,
    /// The table's `metadata/` directory.
    directory: Path,
    /// The newest metadata file read, and what it says.
    seen: tokio::sync::Mutex<Option<(Path, Arc<TableMetadata>)>>,
}

impl Pointer {
    pub(super) fn new(name: &str, url: &ListingTableUrl, runtime: &RuntimeEnv) -> Result<Self> {
        let store = runtime.object_store(url.object_store())?;
        let prefix = url.prefix().as_ref().trim_end_matches('/');
        let (file, directory) = if prefix.ends_with(".metadata.json") {
            let file = Path::from(prefix);
            let directory = prefix.rsplit_once('/').map_or("", |(parent, _)| parent);
            (Some(file), Path::from(directory))
        } else {
            (None, Path::from(prefix).join("metadata"))
        };
        Ok(Self {
            name: name.to_string(),
            store,
            file,
            directory,
            seen: tokio::sync::Mutex::default(),
        })
    }

    /// The table's metadata now: the newest metadata file, read again only when it changed.
    pub(super) async fn current(&self) -> Result<Arc<TableMetadata>> {
        let mut seen = self.seen.lock().await;
        let newest = match &self.file {
            Some(file) => file.clone(),
            None => self.newest(seen.as_ref().map(|(path, _)| path)).await?,
        };
        if let Some((path, metadata)) = seen.as_ref()
            && *path == newest
        {
            return Ok(Arc::clone(metadata));
        }
        let text = self.store.get(&newest).await?.bytes().await?;
        let metadata = Arc::new(TableMetadata::parse(&self.name, &text)?);
        *seen = Some((newest, Arc::clone(&metadata)));
        Ok(metadata)
    }

    /// The newest metadata file: the one `version-hint.text` names, else the highest-numbered,
    /// listed from the newest seen on (only the files written since).
    async fn newest(&self, seen: Option<&Path>) -> Result<Path> {
        match self
            .store
            .get(&self.directory.clone().join("version-hint.text"))
            .await
        {
            Ok(hint) => {
                let hint = hint.bytes().await?;
                let version = String::from_utf8_lossy(&hint).trim().to_string();
                return Ok(self
                    .directory
                    .clone()
                    .join(format!("v{version}.metadata.json")));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let listed: Vec<ObjectMeta> = match seen {
            Some(seen) => {
                self.store
                    .list_with_offset(Some(&self.directory), seen)
                    .try_collect()
                    .await?
            }
            None => self.store.list(Some(&self.directory)).try_collect().await?,
        };
        listed
            .into_iter()
            .map(|meta| meta.location)
            .filter(|path| {
                path.filename()
                    .is_some_and(|name| name.ends_with(".metadata.json"))
            })
            .chain(seen.cloned())
            .max_by_key(|path| (number(path), path.clone()))
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "Iceberg table `{}`: no metadata file in {}",
                    self.name, self.directory
                ))
            })
    }
}

/// A metadata file's number: `00012-<uuid>.metadata.json` and `v12.metadata.json` are 12.
fn number(path: &Path) -> u64 {
    let name = path.filename().unwrap_or_default();
    let digits: String = name
        .trim_start_matches('v')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

/// An Iceberg table's current snapshot id, read from its newest metadata file: what
/// `versions.rs` watches (one small listing of `metadata/` from the newest file seen, or one
/// read of `version-hint.text`; no listing of data files).
pub(crate) struct IcebergHead(Pointer);

impl IcebergHead {
    pub(crate) fn new(url: &ListingTableUrl, runtime: &RuntimeEnv) -> anyhow::Result<Self> {
        Ok(Self(Pointer::new(url.as_str(), url, runtime)?))
    }
}

#[async_trait::async_trait]
impl LatestCommit for IcebergHead {
    async fn read(&self) -> anyhow::Result<u64> {
        let metadata = self.0.current().await?;
        Ok(metadata
            .current()
            .map_or(0, |snapshot| snapshot.snapshot_id as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_files_are_ordered_by_their_number() {
        assert_eq!(
            number(&Path::from("t/metadata/00012-4b0c.metadata.json")),
            12
        );
        assert_eq!(number(&Path::from("t/metadata/v7.metadata.json")), 7);
        assert_eq!(number(&Path::from("t/metadata/snap-1.avro")), 0);
    }
}
