//! ORC files, read by datafusion-orc (orc-rust underneath) with the columns a query asks for
//! put in place here.
//!
//! datafusion-orc 0.10's reader returns the file's columns that a scan names, in the file's
//! order, and nothing else: no partition columns, no reordering, no expressions, although
//! DataFusion 55 pushes all three into a file source. [`OrcFiles`] wraps its `OrcSource`: the
//! crate reads only the file columns the projection references, and each batch is then widened
//! to the table's columns (partition values as constants) and projected as DataFusion asked.

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, new_null_array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileOpenFuture, FileOpener, FileScanConfig, FileSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::projection::{ProjectionExprs, Projector};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_orc::{OrcFormat, OrcSource};
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};
use std::sync::Arc;

/// The ORC file format, scanning with [`OrcFiles`].
#[derive(Debug, Default)]
pub(crate) struct OrcTables;

#[async_trait::async_trait]
impl FileFormat for OrcTables {
    fn get_ext(&self) -> String {
        OrcFormat.get_ext()
    }

    fn get_ext_with_compression(&self, compression: &FileCompressionType) -> Result<String> {
        OrcFormat.get_ext_with_compression(compression)
    }

    fn compression_type(&self) -> Option<FileCompressionType> {
        None
    }

    async fn infer_schema(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        objects: &[ObjectMeta],
    ) -> Result<SchemaRef> {
        OrcFormat.infer_schema(state, store, objects).await
    }

    async fn infer_stats(
        &self,
        state: &dyn Session,
        store: &Arc<dyn ObjectStore>,
        table_schema: SchemaRef,
        object: &ObjectMeta,
    ) -> Result<Statistics> {
        OrcFormat
            .infer_stats(state, store, table_schema, object)
            .await
    }

    async fn create_physical_plan(
        &self,
        _state: &dyn Session,
        config: FileScanConfig,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(DataSourceExec::from_data_source(config))
    }

    fn file_source(&self, table_schema: TableSchema) -> Arc<dyn FileSource> {
        Arc::new(OrcFiles::new(table_schema))
    }
}

/// An ORC scan: the table's columns (the files', then the partition columns), projected.
#[derive(Debug, Clone)]
pub(crate) struct OrcFiles {
    table_schema: TableSchema,
    projection: ProjectionExprs,
    batch_size: Option<usize>,
    metrics: ExecutionPlanMetricsSet,
}

impl OrcFiles {
    /// Every column of `table_schema`, in order.
    pub(crate) fn new(table_schema: TableSchema) -> Self {
        let columns = table_schema.table_schema();
        let projection = ProjectionExprs::from_indices(
            &(0..columns.fields().len()).collect::<Vec<_>>(),
            columns,
        );
        Self {
            table_schema,
            projection,
            batch_size: None,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl FileSource for OrcFiles {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        let file_schema = Arc::clone(self.table_schema.file_schema());
        let files = file_schema.fields().len();
        let read: Vec<usize> = self
            .projection
            .column_indices()
            .into_iter()
            .filter(|column| *column < files)
            .collect();
        let mut reader: Arc<dyn FileSource> =
            Arc::new(OrcSource::new(TableSchema::from(Arc::clone(&file_schema))));
        if let Some(projected) =
            reader.try_pushdown_projection(&ProjectionExprs::from_indices(&read, &file_schema))?
        {
            reader = projected;
        }
        if let Some(batch_size) = self.batch_size {
            reader = reader.with_batch_size(batch_size);
        }
        let table = self.table_schema.table_schema();
        // Columns not read are nulls the projection never looks at: those may be null.
        let widened = Arc::new(Schema::new(
            table
                .fields()
                .iter()
                .enumerate()
                .map(|(index, field)| {
                    let unread = index < files && !read.contains(&index);
                    Field::clone(field).with_nullable(field.is_nullable() || unread)
                })
                .collect::<Vec<_>>(),
        ));
        Ok(Arc::new(OrcRows {
            reader: reader.create_file_opener(object_store, config, partition)?,
            widened: Arc::clone(&widened),
            files,
            projector: Arc::new(self.projection.make_projector(&widened)?),
        }))
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(Self {
            batch_size: Some(batch_size),
            ..self.clone()
        })
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "orc"
    }

    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn FileSource>>> {
        Ok(Some(Arc::new(Self {
            projection: self.projection.try_merge(projection)?,
            ..self.clone()
        })))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        datafusion::physical_plan::apply_expression_roots(self.projection.iter(), f)
    }
}

/// Opens a file with the crate's reader and puts its batches in the table's shape.
struct OrcRows {
    reader: Arc<dyn FileOpener>,
    widened: SchemaRef,
    /// How many of the table's columns are the files' (the rest are partition columns).
    files: usize,
    projector: Arc<Projector>,
}

impl FileOpener for OrcRows {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let values = file.partition_values.clone();
        let opening = self.reader.open(file)?;
        let (widened, files, projector) = (
            Arc::clone(&self.widened),
            self.files,
            Arc::clone(&self.projector),
        );
        Ok(Box::pin(async move {
            let batches = opening.await?;
            Ok(batches
                .map(move |batch| {
                    let batch = widen(&batch?, &widened, files, &values)?;
                    projector.project_batch(&batch)
                })
                .boxed())
        }))
    }
}

/// `batch` (some of the file's columns, by name) as a batch of all the table's columns: the
/// columns not read are nulls, the partition columns their file's values.
fn widen(
    batch: &RecordBatch,
    table: &SchemaRef,
    files: usize,
    values: &[ScalarValue],
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let columns = table
        .fields()
        .iter()
        .enumerate()
        .map(|(index, field)| -> Result<ArrayRef> {
            if index >= files {
                let value = values.get(index - files).ok_or_else(|| {
                    DataFusionError::Internal(format!("no value for partition column {index}"))
                })?;
                return value.to_array_of_size(rows);
            }
            Ok(match batch.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => Arc::clone(column),
                Some(column) => cast(column, field.data_type())?,
                None => new_null_array(field.data_type(), rows),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(table),
        columns,
        &options,
    )?)
}
