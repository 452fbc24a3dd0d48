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
    history_table(&entries(name, table).await?)
}

/// The version that was the latest at `time_ms`, as the history tells the commits' times: the
/// newest commit at or before it. (deltalake-core's own `load_with_datetime` goes by the log
/// files' modification times, which come a little after the commit times the history shows, so
/// a time copied from the history could read the version before.)
pub(super) async fn version_at(name: &str, table: &DeltaTable, time_ms: i64) -> Result<u64> {
    let entries = entries(name, table).await?;
    entries
        .iter()
        .find(|entry| entry.timestamp_ms.is_some_and(|commit| commit <= time_ms))
        .map(|entry| entry.version as u64)
        .ok_or_else(|| {
            let first = entries.last().and_then(|entry| entry.timestamp_ms);
            DataFusionError::Plan(format!(
                "Delta table `{name}` has no version at that time: its first commit kept in \
                 the log is at {} (ms since 1970)",
                first.map_or("an unknown time".to_string(), |first| first.to_string())
            ))
        })
}

/// The commits, newest first.
async fn entries(name: &str, table: &DeltaTable) -> Result<Vec<HistoryEntry>> {
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
    Ok(entries)
}
