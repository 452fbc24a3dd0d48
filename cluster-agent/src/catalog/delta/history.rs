//! A Delta table's commits as a table (`"orders$history"`): what each version did and when,
//! newest first, as the log keeps them (`delta.logRetentionDuration`, 30 days by default).

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use deltalake_core::DeltaTable;
use futures::TryStreamExt;
use std::sync::Arc;

/// The history of `table` (loaded at its latest version).
pub(super) async fn table(name: &str, table: &DeltaTable) -> Result<Arc<dyn TableProvider>> {
    let commits: Vec<_> = table
        .history(None)
        .try_collect()
        .await
        .map_err(|error| DataFusionError::Plan(format!("Delta table `{name}`: {error}")))?;
    let latest = table.version().unwrap_or_default() as i64;
    // Newest first, and commit files are numbered without gaps: the i-th is `latest - i`.
    let versions: Int64Array = (0..commits.len() as i64)
        .map(|i| Some(latest - i))
        .collect();
    let timestamps: TimestampMillisecondArray = commits
        .iter()
        .map(|commit| commit.in_commit_timestamp.or(commit.timestamp))
        .collect::<TimestampMillisecondArray>()
        .with_timezone("UTC");
    let operations: StringArray = commits
        .iter()
        .map(|commit| commit.operation.clone())
        .collect();
    let parameters: StringArray = commits
        .iter()
        .map(|commit| {
            commit
                .operation_parameters
                .as_ref()
                .map(|parameters| serde_json::to_string(parameters).unwrap_or_default())
        })
        .collect();
    let read_versions: Int64Array = commits
        .iter()
        .map(|commit| commit.read_version.map(|version| version as i64))
        .collect();
    let engines: StringArray = commits
        .iter()
        .map(|commit| commit.engine_info.clone())
        .collect();
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
    let columns: Vec<ArrayRef> = vec![
        Arc::new(versions),
        Arc::new(timestamps),
        Arc::new(operations),
        Arc::new(parameters),
        Arc::new(read_versions),
        Arc::new(engines),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}
