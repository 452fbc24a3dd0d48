//! A Delta table's commits as a table (`"orders$history"`): what each version did and when,
//! newest first, as the log keeps them (`delta.logRetentionDuration`, 30 days by default).

use crate::catalog::lake::{HistoryEntry, history_table};
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
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
    let entries: Vec<HistoryEntry> = commits
        .into_iter()
        .enumerate()
        .map(|(i, commit)| HistoryEntry {
            version: latest - i as i64,
            timestamp_ms: commit.in_commit_timestamp.or(commit.timestamp),
            parameters: commit
                .operation_parameters
                .as_ref()
                .map(|parameters| serde_json::to_string(parameters).unwrap_or_default()),
            operation: commit.operation,
            read_version: commit.read_version.map(|version| version as i64),
            engine: commit.engine_info,
        })
        .collect();
    history_table(&entries)
}
