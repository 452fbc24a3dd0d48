//! One version of a Delta table as DataFusion scans it: the files of that version (from the
//! log, never from a listing, so a file the table removed is never read), each with its
//! partition values and the statistics the log keeps, read by DataFusion's own Parquet scan.
//!
//! Why not deltalake-core's table provider: its scan (`DeltaScanExec`) has no physical codec
//! (the crate's `DeltaPhysicalCodec` encodes only the retired `DeltaScan`), so its plans cannot
//! be shipped to the TaskManagers. A plain Parquet scan of an explicit file list can: the plan
//! names the version's files, and every TaskManager reads exactly those (one snapshot per
//! query). What that scan cannot apply (deletion vectors, column mapping, features this reader
//! does not know) is refused by name at planning, never read wrongly.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, FieldRef, Int64Type, Schema, SchemaRef, TimestampMillisecondType,
};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{
    ColumnStatistics, DFSchema, DataFusionError, Result, ScalarValue, Statistics,
};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
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

/// One version of a Delta table, ready to scan.
#[derive(Debug)]
pub(crate) struct DeltaSnapshotTable {
    /// The table's name in SQL (for messages).
    name: String,
    /// The commit this is.
    pub(crate) version: u64,
    /// The columns in the table's order.
    schema: SchemaRef,
    /// The scan's columns: the data files' columns, then the partition columns.
    scan_schema: TableSchema,
    /// For each of `schema`'s columns, its index in the scan's.
    scan_index: Vec<usize>,
    /// Where the files are.
    store: ObjectStoreUrl,
    /// The version's files, each with its partition values and statistics.
    files: Vec<PartitionedFile>,
}

impl DeltaSnapshotTable {
    /// Reads `snapshot` (of the table at `root` in `store`): refuses what a Parquet scan would
    /// read wrongly, else lists its files with their partition values and statistics.
    pub(crate) fn try_new(
        name: &str,
        snapshot: &EagerSnapshot,
        store: ObjectStoreUrl,
        root: &Path,
    ) -> Result<Self> {
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
        let schema = snapshot.arrow_schema();
        let partition_names = snapshot.metadata().partition_columns();
        let partition_fields: Vec<FieldRef> = partition_names
            .iter()
            .map(|column| Ok(Arc::new(schema.field_with_name(column)?.clone())))
            .collect::<Result<_>>()?;
        let data_fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|field| !partition_names.contains(field.name()))
            .cloned()
            .collect();
        let scan_fields: Vec<&FieldRef> = data_fields.iter().chain(&partition_fields).collect();
        let scan_index = schema
            .fields()
            .iter()
            .map(|field| {
                scan_fields
                    .iter()
                    .position(|scanned| scanned.name() == field.name())
                    .expect("every column is a data or a partition column")
            })
            .collect();
        let scan_schema = TableSchema::builder(Arc::new(Schema::new(data_fields.clone())))
            .with_table_partition_cols(partition_fields.clone())
            .build();
        let actions = snapshot
            .add_actions_table(true)
            .map_err(|error| DataFusionError::External(Box::new(error)))?;
        if let Some(cardinality) = actions.column_by_name("deletion_vector.cardinality")
            && cardinality.null_count() < cardinality.len()
        {
            return Err(refuse("deletion vectors".into()));
        }
        let files = (0..actions.num_rows())
            .map(|row| file_of(&actions, row, root, &data_fields, &partition_fields))
            .collect::<Result<_>>()?;
        Ok(Self {
            name: name.to_string(),
            version: snapshot.version(),
            schema,
            scan_schema,
            scan_index,
            store,
            files,
        })
    }

    /// The files a scan filtered by `filters` must read: those whose partition values and
    /// statistics may hold a matching row (all of them when the filters do not prune).
    fn files_for(&self, state: &dyn Session, filters: &[Expr]) -> Vec<PartitionedFile> {
        let scan_schema = Arc::clone(self.scan_schema.table_schema());
        let keep = conjunction(filters.iter().cloned().map(unnormalize_col))
            .and_then(|filter| {
                let df_schema = DFSchema::try_from(scan_schema.as_ref().clone()).ok()?;
                let predicate = state.create_physical_expr(filter, &df_schema).ok()?;
                // None: nothing to prune by, or a filter pruning cannot use.
                PruningPredicateBuilder::new()
                    .with_file_schema(Arc::clone(&scan_schema))
                    .build(predicate)
            })
            .and_then(|pruning| {
                let statistics = PrunableStatistics::new(
                    self.files
                        .iter()
                        .map(|file| {
                            file.statistics
                                .clone()
                                .unwrap_or_else(|| Arc::new(Statistics::new_unknown(&scan_schema)))
                        })
                        .collect(),
                    Arc::clone(&scan_schema),
                );
                pruning.prune(&statistics).ok()
            });
        match keep {
            Some(keep) => self
                .files
                .iter()
                .zip(keep)
                .filter(|(_, keep)| *keep)
                .map(|(file, _)| file.clone())
                .collect(),
            None => self.files.clone(),
        }
    }
}

/// The file of row `row` of the flattened add actions.
fn file_of(
    actions: &RecordBatch,
    row: usize,
    root: &Path,
    data_fields: &[FieldRef],
    partition_fields: &[FieldRef],
) -> Result<PartitionedFile> {
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

/// Whether the log's minimum and maximum of a column of `data_type` are its exact values:
/// strings are cut to a prefix and timestamps to milliseconds by Delta writers, and floats may
/// hide NaNs, so those bound a pruning but never answer `min()` or `max()`.
fn exact_bounds(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Date32
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
}

#[async_trait::async_trait]
impl TableProvider for DeltaSnapshotTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = match projection {
            Some(columns) => columns.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let files = self.files_for(state, filters);
        if files.is_empty() {
            let projected = self.schema.project(&columns)?;
            return Ok(Arc::new(EmptyExec::new(Arc::new(projected))));
        }
        let projection = columns
            .iter()
            .map(|column| self.scan_index[*column])
            .collect();
        let groups = state.config().target_partitions().max(1).min(files.len());
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (index, file) in files.into_iter().enumerate() {
            file_groups[index % groups].push(file);
        }
        let scan_schema = Arc::clone(self.scan_schema.table_schema());
        let file_groups = file_groups
            .into_iter()
            .map(|files| {
                let statistics = Statistics::try_merge_iter(
                    files.iter().filter_map(|file| file.statistics.as_deref()),
                    &scan_schema,
                )?;
                Ok(FileGroup::new(files).with_statistics(Arc::new(statistics)))
            })
            .collect::<Result<Vec<_>>>()?;
        let statistics = Statistics::try_merge_iter(
            file_groups
                .iter()
                .filter_map(|group| group.file_statistics(None)),
            &scan_schema,
        )?;
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(self.scan_schema.clone());
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(file_groups)
            .with_statistics(statistics)
            .with_projection_indices(Some(projection))?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

impl std::fmt::Display for DeltaSnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Delta table `{}` at version {}", self.name, self.version)
    }
}
