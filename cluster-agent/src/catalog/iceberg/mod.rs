//! Apache Iceberg tables (format v1 and v2), read-only, without a catalog service: the table's
//! newest metadata file (`version-hint.text` for Hadoop tables, else the highest-numbered
//! `metadata/NNNNN-<uuid>.metadata.json`, as pyiceberg's and Java's catalogs write them), or
//! one metadata file given as the location, says which snapshots there are; a snapshot's Avro
//! manifests (read with `apache-avro`) say which Parquet files it holds, and the scan is the
//! same `SnapshotTable` as a Delta table's, so plans ship to TaskManagers.
//!
//! Why not the Apache `iceberg` crate: 0.10 depends on arrow 58 and parquet 58 (this workspace
//! has 59), and `iceberg-datafusion` on DataFusion 53: a second arrow and parquet in the build
//! (101 more crate versions) for reading two file formats that are a few hundred lines here.
//!
//! A table's version is its current snapshot id: `orders@v<snapshot id>` and
//! `"orders@<time>"` read older snapshots, `"orders$history"` lists them.

mod manifests;
mod metadata;
mod pointer;

pub(crate) use pointer::IcebergHead;
use pointer::Pointer;

use super::lake::{HistoryEntry, VersionedTable, history_table};
use super::snapshot::{Columns, Recent, SnapshotTable, exact_bounds};
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use metadata::{Snapshot, TableMetadata};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use std::sync::Arc;

/// An Iceberg table, served by the lake schema.
pub(crate) struct IcebergTable {
    pointer: Pointer,
    /// The store of the table's files, as plans name it.
    store_url: ObjectStoreUrl,
    /// `scheme://authority` of the table's location, to read data file URIs against.
    authority: String,
    recent: Recent,
}

impl std::fmt::Debug for IcebergTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergTable")
            .field("name", &self.pointer.name)
            .finish_non_exhaustive()
    }
}

impl IcebergTable {
    /// Opens the table at `location` (its directory, or one metadata file) through
    /// `runtime`'s object stores, reading its metadata once.
    pub(crate) async fn open(name: &str, location: &str, runtime: &RuntimeEnv) -> Result<Self> {
        let url = ListingTableUrl::parse(location)?;
        let store_url = url.object_store();
        let store: &url::Url = store_url.as_ref();
        let authority = format!("{}://{}", store.scheme(), store.authority());
        let table = Self {
            pointer: Pointer::new(name, &url, runtime)?,
            store_url,
            authority,
            recent: Recent::default(),
        };
        table.pointer.current().await?;
        Ok(table)
    }

    /// The scan of `snapshot` (None: the table has none yet, and is empty).
    async fn snapshot_table(
        &self,
        metadata: &TableMetadata,
        snapshot: Option<&Snapshot>,
    ) -> Result<Arc<SnapshotTable>> {
        let name = &self.pointer.name;
        let version = snapshot.map_or(0, |snapshot| snapshot.snapshot_id as u64);
        if let Some(kept) = self.recent.get(version) {
            return Ok(kept);
        }
        let (schema, ids) = metadata.arrow_schema(name)?;
        let schema = Arc::new(schema);
        let mut files = Vec::new();
        if let Some(snapshot) = snapshot {
            let mut manifests = snapshot.manifests.clone();
            if let Some(list) = &snapshot.manifest_list {
                let list = self.read(list).await?;
                manifests.extend(manifests::manifests_of_list(name, &list)?);
            }
            for manifest in manifests {
                let manifest = self.read(&manifest).await?;
                for file in manifests::data_files(name, &manifest)? {
                    files.push(self.file(&schema, &ids, file)?);
                }
            }
        }
        let label = format!("Iceberg table `{name}` at snapshot {version}");
        // Iceberg's bounds hold every value (a truncated upper bound is rounded up), except a
        // float's, which leave NaNs out.
        let bounding = schema
            .fields()
            .iter()
            .map(|field| !field.data_type().is_floating())
            .collect();
        let columns = Columns::split(schema, &[])?;
        let table = SnapshotTable::new(label, version, columns, self.store_url.clone(), files)
            .with_bounding(bounding);
        Ok(self.recent.keep(table))
    }

    /// Reads a file the metadata names by URI.
    async fn read(&self, uri: &str) -> Result<bytes::Bytes> {
        let path = self.path(uri)?;
        Ok(self.pointer.store.get(&path).await?.bytes().await?)
    }

    /// The object path of a file the metadata names (`file:///...`, `s3://bucket/...`, or an
    /// absolute path); a file in another store is refused.
    fn path(&self, uri: &str) -> Result<Path> {
        let path = match uri.split_once("://") {
            Some(_) => {
                let url = url::Url::parse(uri).map_err(|error| {
                    DataFusionError::Plan(format!("Iceberg file {uri}: {error}"))
                })?;
                let authority = format!("{}://{}", url.scheme(), url.authority());
                if authority != self.authority {
                    return Err(DataFusionError::Plan(format!(
                        "Iceberg table `{}` names {uri}, outside its store {}: not read",
                        self.pointer.name, self.authority
                    )));
                }
                url.path().to_string()
            }
            None => uri.to_string(),
        };
        Path::from_url_path(path).map_err(|error| DataFusionError::External(Box::new(error)))
    }

    /// A data file as the scan takes it, with the statistics its manifest keeps.
    fn file(
        &self,
        schema: &Schema,
        ids: &[i32],
        file: manifests::DataFile,
    ) -> Result<PartitionedFile> {
        let column_statistics = schema
            .fields()
            .iter()
            .zip(ids)
            .map(|(field, id)| {
                let bound = |bytes: Option<&Vec<u8>>| match bytes
                    .and_then(|bytes| decode(field.data_type(), bytes))
                {
                    Some(value) if exact_bounds(field.data_type()) => Precision::Exact(value),
                    Some(value) => Precision::Inexact(value),
                    None => Precision::Absent,
                };
                ColumnStatistics {
                    null_count: file
                        .nulls
                        .get(id)
                        .map_or(Precision::Absent, |nulls| Precision::Exact(*nulls as usize)),
                    min_value: bound(file.lower.get(id)),
                    max_value: bound(file.upper.get(id)),
                    ..ColumnStatistics::new_unknown()
                }
            })
            .collect();
        let mut scanned = PartitionedFile::from(ObjectMeta {
            location: self.path(&file.path)?,
            last_modified: DateTime::default(),
            size: file.size,
            e_tag: None,
            version: None,
        });
        scanned.statistics = Some(Arc::new(Statistics {
            num_rows: Precision::Exact(file.rows as usize),
            total_byte_size: Precision::Inexact(file.size as usize),
            column_statistics,
        }));
        Ok(scanned)
    }
}

/// A bound in Iceberg's single-value encoding, for the types pruning uses; None otherwise.
fn decode(data_type: &DataType, bytes: &[u8]) -> Option<ScalarValue> {
    let le4 = || bytes.try_into().ok().map(i32::from_le_bytes);
    let le8 = || bytes.try_into().ok().map(i64::from_le_bytes);
    Some(match data_type {
        DataType::Boolean => ScalarValue::Boolean(Some(*bytes.first()? != 0)),
        DataType::Int32 => ScalarValue::Int32(Some(le4()?)),
        DataType::Int64 => ScalarValue::Int64(Some(le8()?)),
        DataType::Date32 => ScalarValue::Date32(Some(le4()?)),
        DataType::Float32 => ScalarValue::Float32(Some(f32::from_le_bytes(bytes.try_into().ok()?))),
        DataType::Float64 => ScalarValue::Float64(Some(f64::from_le_bytes(bytes.try_into().ok()?))),
        DataType::Timestamp(TimeUnit::Microsecond, zone) => {
            ScalarValue::TimestampMicrosecond(Some(le8()?), zone.clone())
        }
        DataType::Utf8 => ScalarValue::Utf8(Some(String::from_utf8(bytes.to_vec()).ok()?)),
        DataType::Decimal128(precision, scale) => {
            // Big-endian two's complement, in as few bytes as the value needs.
            if bytes.is_empty() || bytes.len() > 16 {
                return None;
            }
            let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0 };
            let mut full = [fill; 16];
            full[16 - bytes.len()..].copy_from_slice(bytes);
            ScalarValue::Decimal128(Some(i128::from_be_bytes(full)), *precision, *scale)
        }
        _ => return None,
    })
}

#[async_trait::async_trait]
impl VersionedTable for IcebergTable {
    async fn latest(&self) -> Result<Arc<SnapshotTable>> {
        let metadata = self.pointer.current().await?;
        self.snapshot_table(&metadata, metadata.current()).await
    }

    async fn at_version(&self, version: u64) -> Result<Arc<SnapshotTable>> {
        if let Some(kept) = self.recent.get(version) {
            return Ok(kept);
        }
        let metadata = self.pointer.current().await?;
        let snapshot = metadata.snapshot(version as i64).ok_or_else(|| {
            let ids: Vec<String> = metadata
                .snapshots
                .iter()
                .map(|snapshot| snapshot.snapshot_id.to_string())
                .collect();
            DataFusionError::Plan(format!(
                "Iceberg table `{}` has no version {version}: its snapshots are {} \
                 (\"{}$history\" lists them)",
                self.pointer.name,
                ids.join(", "),
                self.pointer.name
            ))
        })?;
        self.snapshot_table(&metadata, Some(snapshot)).await
    }

    async fn at_time(&self, time: DateTime<Utc>) -> Result<Arc<SnapshotTable>> {
        let metadata = self.pointer.current().await?;
        let snapshot = metadata
            .current_at(time.timestamp_millis())
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "Iceberg table `{}` has no snapshot at {time}",
                    self.pointer.name
                ))
            })?;
        self.snapshot_table(&metadata, Some(snapshot)).await
    }

    async fn history(&self) -> Result<Arc<dyn TableProvider>> {
        let metadata = self.pointer.current().await?;
        let mut snapshots: Vec<&Snapshot> = metadata.snapshots.iter().collect();
        snapshots.sort_by_key(|snapshot| std::cmp::Reverse(snapshot.timestamp_ms));
        let entries: Vec<HistoryEntry> = snapshots
            .into_iter()
            .map(|snapshot| HistoryEntry {
                version: snapshot.snapshot_id,
                timestamp_ms: Some(snapshot.timestamp_ms),
                operation: snapshot.summary.get("operation").cloned(),
                parameters: serde_json::to_string(&snapshot.summary).ok(),
                read_version: snapshot.parent_snapshot_id,
                engine: snapshot.summary.get("engine-name").cloned(),
            })
            .collect();
        history_table(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_decode_from_iceberg_single_values() {
        assert_eq!(
            decode(&DataType::Int64, &42i64.to_le_bytes()),
            Some(ScalarValue::Int64(Some(42)))
        );
        assert_eq!(
            decode(&DataType::Decimal128(15, 2), &[0xff, 0x38]),
            Some(ScalarValue::Decimal128(Some(-200), 15, 2))
        );
        assert_eq!(
            decode(&DataType::Utf8, b"AIR"),
            Some(ScalarValue::Utf8(Some("AIR".into())))
        );
        assert_eq!(decode(&DataType::Int32, &[1, 2]), None);
    }
}
