//! One version of a Delta table as a `SnapshotTable`: the files of that version (from the log),
//! each with its partition values and the statistics the log keeps.
//!
//! Why not deltalake-core's table provider: its scan (`DeltaScanExec`) has no physical codec
//! (the crate's `DeltaPhysicalCodec` encodes only the retired `DeltaScan`), so its plans cannot
//! be shipped to the TaskManagers. A plain Parquet scan of an explicit file list can: the plan
//! names the version's files, and every TaskManager reads exactly those (one snapshot per
//! query). What that scan cannot apply (deletion vectors, column mapping, features this reader
//! does not know) is refused by name at planning, never read wrongly.

use crate::catalog::snapshot::{Columns, SnapshotTable, exact_bounds};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::execution::object_store::ObjectStoreUrl;
use deltalake_core::kernel::EagerSnapshot;
use object_store::ObjectMeta;
use object_store::path::Path;
use std::sync::Arc;

/// The reader features a plain Parquet scan reads correctly (the others are refused by name):
/// `columnMapping` and `deletionVectors` only while unused (checked per version).
const READABLE_FEATURES: &[&str] = &[
    "columnMapping",
    "deletionVectors",
    "timestampNtz",
    "v2Checkpoint",
    "vacuumProtocolCheck",
];

/// Reads `snapshot` (of the table at `root` in `store`): refuses what a Parquet scan would
/// read wrongly, else lists its files with their partition values and statistics.
pub(crate) fn snapshot_table(
    name: &str,
    snapshot: &EagerSnapshot,
    store: ObjectStoreUrl,
    root: &Path,
) -> Result<SnapshotTable> {
    let refuse = |what: String| {
        DataFusionError::Plan(format!(
            "Delta table `{name}` (version {}) uses {what}, which Flotilla does not read yet",
            snapshot.version()
        ))
    };
    for feature in snapshot.protocol().reader_features().unwrap_or_default() {
        let feature = feature.to_string();
        if !READABLE_FEATURES.contains(&feature.as_str()) {
            return Err(refuse(format!("the reader feature `{feature}`")));
        }
    }
    // The mode's type is deltalake-core's kernel's, which the crate does not re-export.
    let mapping = snapshot.table_properties().column_mapping_mode;
    if mapping.is_some_and(|mode| format!("{mode:?}") != "None") {
        return Err(refuse("column mapping".into()));
    }
    let columns = Columns::split(
        snapshot.arrow_schema(),
        snapshot.metadata().partition_columns(),
    )?;
    let actions = snapshot
        .add_actions_table(true)
        .map_err(|error| DataFusionError::External(Box::new(error)))?;
    if let Some(cardinality) = actions.column_by_name("deletion_vector.cardinality")
        && cardinality.null_count() < cardinality.len()
    {
        return Err(refuse("deletion vectors".into()));
    }
    let files = (0..actions.num_rows())
        .map(|row| file_of(&actions, row, root, &columns))
        .collect::<Result<_>>()?;
    let version = snapshot.version();
    let label = format!("Delta table `{name}` at version {version}");
    Ok(SnapshotTable::new(label, version, columns, store, files))
}

/// The file of row `row` of the flattened add actions.
fn file_of(
    actions: &RecordBatch,
    row: usize,
    root: &Path,
    columns: &Columns,
) -> Result<PartitionedFile> {
    let (data_fields, partition_fields) = (&columns.data, &columns.partitions);
    let column = |name: &str| actions.column_by_name(name);
    let relative = column("path")
        .and_then(|path| {
            path.as_string_opt::<i32>()
                .map(|path| path.value(row).to_string())
        })
        .ok_or_else(|| DataFusionError::Internal("Delta add action without a path".into()))?;
    if relative.contains("://") {
        return Err(DataFusionError::Plan(format!(
            "Delta file {relative} lies outside the table (a shallow clone?): not read"
        )));
    }
    let location = Path::from_url_path(format!("{root}/{relative}"))
        .map_err(|error| DataFusionError::External(Box::new(error)))?;
    let size = column("size_bytes")
        .and_then(|size| size.as_primitive_opt::<Int64Type>())
        .map(|size| size.value(row))
        .unwrap_or_default();
    let last_modified = column("modification_time")
        .and_then(|time| time.as_primitive_opt::<TimestampMillisecondType>())
        .and_then(|time| chrono::DateTime::from_timestamp_millis(time.value(row)))
        .unwrap_or_default();
    let num_rows = column("num_records")
        .and_then(|rows| rows.as_primitive_opt::<Int64Type>())
        .filter(|rows| rows.is_valid(row))
        .map(|rows| Precision::Exact(rows.value(row) as usize))
        .unwrap_or(Precision::Absent);
    let scalar = |name: String| -> Result<Option<ScalarValue>> {
        column(&name)
            .map(|array| ScalarValue::try_from_array(array, row))
            .transpose()
    };
    let mut column_statistics = Vec::with_capacity(data_fields.len() + partition_fields.len());
    for field in data_fields {
        let exact = exact_bounds(field.data_type());
        let bound = |value: Option<ScalarValue>| match value {
            Some(value) if value.is_null() => Precision::Absent,
            Some(value) if exact => Precision::Exact(value),
            Some(value) => Precision::Inexact(value),
            None => Precision::Absent,
        };
        let null_count = match scalar(format!("null_count.{}", field.name()))? {
            Some(ScalarValue::Int64(Some(nulls))) => Precision::Exact(nulls as usize),
            _ => Precision::Absent,
        };
        column_statistics.push(ColumnStatistics {
            null_count,
            min_value: bound(scalar(format!("min.{}", field.name()))?),
            max_value: bound(scalar(format!("max.{}", field.name()))?),
            ..ColumnStatistics::new_unknown()
        });
    }
    let mut partition_values = Vec::with_capacity(partition_fields.len());
    for field in partition_fields {
        let value = match scalar(format!("partition.{}", field.name()))? {
            Some(value) => value.cast_to(field.data_type())?,
            None => ScalarValue::try_from(field.data_type())?,
        };
        let nulls = match (value.is_null(), &num_rows) {
            (true, Precision::Exact(rows)) => Precision::Exact(*rows),
            (false, _) => Precision::Exact(0),
            _ => Precision::Absent,
        };
        column_statistics.push(ColumnStatistics {
            null_count: nulls,
            min_value: Precision::Exact(value.clone()),
            max_value: Precision::Exact(value.clone()),
            ..ColumnStatistics::new_unknown()
        });
        partition_values.push(value);
    }
    let mut file = PartitionedFile::from(ObjectMeta {
        location,
        last_modified,
        size: size as u64,
        e_tag: None,
        version: None,
    });
    file.partition_values = partition_values;
    file.statistics = Some(Arc::new(Statistics {
        num_rows,
        total_byte_size: Precision::Inexact(size as usize),
        column_statistics,
    }));
    Ok(file)
}
