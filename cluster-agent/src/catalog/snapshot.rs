//! One version of a table-format table (Delta Lake, Iceberg) as DataFusion scans it: a fixed
//! list of Parquet files (from the table's log or manifests, never from a listing, so a file
//! the table removed is never read), each with the partition values and statistics the table
//! keeps, read by DataFusion's own Parquet scan.
//!
//! A plain Parquet scan of an explicit file list ships to the TaskManagers as it is: the plan
//! names the version's files, and every TaskManager reads exactly those (one snapshot per
//! query). Files are pruned here, at planning, by their statistics, and row groups again by
//! the Parquet reader.

use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Result, ScalarValue, Statistics};
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
use std::sync::{Arc, Mutex};

/// A table's columns as its files hold them: the data columns, in the files, and the partition
/// columns, whose values each file carries beside it.
pub(crate) struct Columns {
    /// The table's columns, in the order SQL sees them.
    pub(crate) schema: SchemaRef,
    /// The columns read from the files.
    pub(crate) data: Vec<FieldRef>,
    /// The columns whose values come with each file (`PartitionedFile::partition_values`).
    pub(crate) partitions: Vec<FieldRef>,
}

impl Columns {
    /// Splits `schema` into data columns and the partition columns `partition_names`.
    pub(crate) fn split(schema: SchemaRef, partition_names: &[String]) -> Result<Self> {
        let partitions = partition_names
            .iter()
            .map(|column| Ok(Arc::new(schema.field_with_name(column)?.clone())))
            .collect::<Result<_>>()?;
        let data = schema
            .fields()
            .iter()
            .filter(|field| !partition_names.contains(field.name()))
            .cloned()
            .collect();
        Ok(Self {
            schema,
            data,
            partitions,
        })
    }
}

/// Versions of a table kept planned (the latest, and time travel to a recent version reads
/// the table's log or manifests once).
const RECENT_VERSIONS: usize = 8;

/// The versions of one table last planned, most recent use last.
#[derive(Debug, Default)]
pub(crate) struct Recent(Mutex<Vec<Arc<SnapshotTable>>>);

impl Recent {
    /// The version `version`, if it is kept.
    pub(crate) fn get(&self, version: u64) -> Option<Arc<SnapshotTable>> {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = kept
            .iter()
            .position(|snapshot| snapshot.version == version)?;
        let snapshot = kept.remove(index);
        kept.push(Arc::clone(&snapshot));
        Some(snapshot)
    }

    /// Keeps `snapshot`, forgetting the least recently used beyond [`RECENT_VERSIONS`].
    pub(crate) fn keep(&self, snapshot: SnapshotTable) -> Arc<SnapshotTable> {
        let snapshot = Arc::new(snapshot);
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.retain(|kept| kept.version != snapshot.version);
        if kept.len() >= RECENT_VERSIONS {
            kept.remove(0);
        }
        kept.push(Arc::clone(&snapshot));
        snapshot
    }
}

/// One version of a table: its files, scanned as Parquet.
#[derive(Debug)]
pub(crate) struct SnapshotTable {
    /// What the table is, for messages and `EXPLAIN` (`Delta table `orders` at version 3`).
    label: String,
    /// The version (a Delta commit, an Iceberg snapshot id) that the caches key on.
    pub(crate) version: u64,
    schema: SchemaRef,
    /// The files' columns, then the partition columns.
    scan_schema: TableSchema,
    /// For each column of `schema`, its index in `scan_schema`.
    scan_index: Vec<usize>,
    store: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
    /// For each scan column, whether its inexact minimum and maximum still bound every value
    /// (a truncated string's, when the format promises it), so that they may prune files.
    bounding: Vec<bool>,
}

impl SnapshotTable {
    /// The version `version` of a table whose `files` (each with its partition values, in the
    /// order of `columns.partitions`, and statistics over the data then partition columns) are
    /// in `store`.
    pub(crate) fn new(
        label: String,
        version: u64,
        columns: Columns,
        store: ObjectStoreUrl,
        files: Vec<PartitionedFile>,
    ) -> Self {
        let Columns {
            schema,
            data,
            partitions,
        } = columns;
        let scan_fields: Vec<&FieldRef> = data.iter().chain(&partitions).collect();
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
        let bounding = vec![false; scan_fields.len()];
        let scan_schema = TableSchema::builder(Arc::new(Schema::new(data)))
            .with_table_partition_cols(partitions)
            .build();
        Self {
            label,
            version,
            schema,
            scan_schema,
            scan_index,
            store,
            files,
            bounding,
        }
    }

    /// Lets the inexact bounds of the scan columns marked in `bounding` prune files: bounds
    /// that are not the values themselves (never answers to `min()`) but hold every value.
    pub(crate) fn with_bounding(mut self, bounding: Vec<bool>) -> Self {
        self.bounding = bounding;
        self
    }

    /// A file's statistics as pruning reads them: DataFusion prunes by exact bounds only, so
    /// the bounding columns' inexact ones are offered as exact here (and only here).
    fn pruning_statistics(&self, file: &PartitionedFile) -> Statistics {
        let scan_schema = self.scan_schema.table_schema();
        let mut statistics = file
            .statistics
            .as_deref()
            .cloned()
            .unwrap_or_else(|| Statistics::new_unknown(scan_schema));
        let exact = |bound: &mut Precision<ScalarValue>| {
            if let Precision::Inexact(value) = bound {
                *bound = Precision::Exact(value.clone());
            }
        };
        for (column, bounding) in statistics.column_statistics.iter_mut().zip(&self.bounding) {
            if *bounding {
                exact(&mut column.min_value);
                exact(&mut column.max_value);
            }
        }
        statistics
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
                        .map(|file| Arc::new(self.pruning_statistics(file)))
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

#[async_trait::async_trait]
impl TableProvider for SnapshotTable {
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

impl std::fmt::Display for SnapshotTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// Whether a table's recorded minimum and maximum of a column of `data_type` are its exact
/// values: strings are cut to a prefix (and timestamps to milliseconds by Delta writers), and
/// floats may hide NaNs, so those bound a pruning but never answer `min()` or `max()`.
pub(crate) fn exact_bounds(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Boolean
                | DataType::Date32
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
}
