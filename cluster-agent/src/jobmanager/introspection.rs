//! Questions about the catalog (`SHOW TABLES`, `SHOW COLUMNS FROM t`, `DESCRIBE t`, queries
//! of `information_schema`), answered by the shard from its catalog: no slot is leased and no
//! TaskManager runs them.
//!
//! The answer (a few rows per table) travels in the ticket itself. The shard's `FlightInfo`
//! names no location, so the gateway redeems the ticket at the shard, as Flight says of an
//! endpoint without locations, and the shard streams the rows back from it: nothing is kept.

use super::planner::Planner;
use super::service::JobManager;
use crate::catalog::system;
use crate::error::AgentError;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightData, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use std::time::Duration;
use tonic::Status;

/// How a ticket holding a catalog answer starts.
const TICKET_PREFIX: &[u8] = b"flotilla-catalog-answer\0";

/// The largest answer a ticket carries (it crosses the wire twice): a bigger one asks for a
/// filter.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The longest a shard computes an answer (a cross join of `information_schema` views can be
/// made arbitrarily large): a shard's time is every query's.
const MAX_ANSWER_TIME: Duration = Duration::from_secs(5);

/// Says whether `sql` may ask about the catalog: it names `information_schema` or `system`,
/// or starts with `SHOW` or `DESCRIBE`. A cheap test on the text, so that cached plans skip
/// parsing; [`reads_catalog`] decides on the plan.
pub(super) fn may_read_catalog(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    let names = |schema: &[u8]| {
        bytes
            .windows(schema.len())
            .any(|window| window.eq_ignore_ascii_case(schema))
    };
    if names(b"information_schema") || names(system::SCHEMA.as_bytes()) {
        return true;
    }
    let first: String = skip_comments(sql)
        .chars()
        .take_while(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(first.as_str(), "show" | "describe" | "desc")
}

/// Returns `sql` after its leading blanks, comments and opening parentheses.
fn skip_comments(mut sql: &str) -> &str {
    loop {
        let trimmed = sql.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(rest) = trimmed.strip_prefix("--") {
            sql = rest.split_once('\n').map_or("", |(_, rest)| rest);
        } else if let Some(rest) = trimmed.strip_prefix("/*") {
            sql = rest.split_once("*/").map_or("", |(_, rest)| rest);
        } else {
            return trimmed;
        }
    }
}

/// Says whether `plan` reads the catalog only. A plan that reads both the catalog and tables
/// is refused: the one runs on the shard, the other on TaskManagers.
pub(super) fn reads_catalog(plan: &LogicalPlan) -> Result<bool, AgentError> {
    let (mut catalog, mut tables) = (false, false);
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::DescribeTable(_) => catalog = true,
            LogicalPlan::TableScan(scan) => {
                if matches!(
                    scan.table_name.schema(),
                    Some("information_schema" | system::SCHEMA)
                ) {
                    catalog = true;
                } else {
                    tables = true;
                }
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if catalog && tables {
        return Err(AgentError::SqlPlanning(
            "a query reads either the catalog (information_schema, system) or tables, not both"
                .into(),
        ));
    }
    Ok(catalog)
}

// === impl JobManager ===

impl JobManager {
    /// Answers a question about the catalog on this shard: a `FlightInfo` whose ticket holds
    /// the rows, to be redeemed here.
    pub(super) async fn answer_from_catalog(
        &self,
        plan: &LogicalPlan,
    ) -> Result<FlightInfo, AgentError> {
        let batches = self.inner.planner.answer(plan).await?;
        let schema = batches
            .first()
            .map_or_else(|| plan.schema().inner().clone(), RecordBatch::schema);
        let mut ticket = TICKET_PREFIX.to_vec();
        let mut writer = StreamWriter::try_new(&mut ticket, &schema).map_err(internal)?;
        for batch in &batches {
            writer.write(batch).map_err(internal)?;
        }
        writer.finish().map_err(internal)?;
        drop(writer);
        if ticket.len() > MAX_ANSWER_BYTES {
            return Err(AgentError::ResultTooLarge(format!(
                "the catalog's answer is {} bytes, more than {MAX_ANSWER_BYTES}: filter it \
                 (information_schema.columns WHERE table_name = '...')",
                ticket.len()
            )));
        }
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(internal)?
            .with_endpoint(endpoint);
        Ok(info)
    }
}

/// Streams the answer a catalog ticket holds; None when `ticket` is not one.
pub(super) fn answer_stream(
    ticket: &[u8],
) -> Option<Result<BoxStream<'static, Result<FlightData, Status>>, AgentError>> {
    let ipc = ticket.strip_prefix(TICKET_PREFIX)?;
    let read = || -> Result<_, AgentError> {
        let reader = StreamReader::try_new(std::io::Cursor::new(ipc.to_vec()), None)
            .map_err(|error| AgentError::BadRequest(format!("catalog ticket: {error}")))?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| AgentError::BadRequest(format!("catalog ticket: {error}")))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map(|message| message.map_err(Status::from))
            .boxed();
        Ok(stream)
    };
    Some(read())
}

fn internal(error: impl std::fmt::Display) -> AgentError {
    AgentError::Internal(format!("encoding the catalog's answer: {error}"))
}

// === impl Planner ===

impl Planner {
    /// Runs a plan that reads the catalog only, here: at most [`MAX_ANSWER_BYTES`] of rows,
    /// computed in at most [`MAX_ANSWER_TIME`].
    pub(crate) async fn answer(&self, plan: &LogicalPlan) -> Result<Vec<RecordBatch>, AgentError> {
        let state = &self.introspection;
        let physical = state
            .create_physical_plan(plan)
            .await
            .map_err(AgentError::from_planning)?;
        let mut stream = datafusion::physical_plan::execute_stream(physical, state.task_ctx())?;
        let collect = async {
            let (mut batches, mut bytes) = (Vec::new(), 0);
            while let Some(batch) = stream.try_next().await? {
                bytes += batch.get_array_memory_size();
                if bytes > MAX_ANSWER_BYTES {
                    return Err(AgentError::ResultTooLarge(format!(
                        "the catalog's answer is more than {MAX_ANSWER_BYTES} bytes: filter it \
                         (information_schema.columns WHERE table_name = '...')"
                    )));
                }
                batches.push(batch);
            }
            Ok(batches)
        };
        tokio::time::timeout(MAX_ANSWER_TIME, collect)
            .await
            .unwrap_or_else(|_| {
                Err(AgentError::DataFusion(DataFusionError::ResourcesExhausted(
                    format!(
                        "the catalog's answer took more than {} s to compute",
                        MAX_ANSWER_TIME.as_secs()
                    ),
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_questions_are_told_by_their_text() {
        for sql in [
            "SHOW TABLES",
            "  -- list\n show columns from t",
            "/* x */ DESCRIBE nation",
            "desc t",
            "SELECT * FROM INFORMATION_SCHEMA.tables",
            "(select table_name from information_schema.columns)",
        ] {
            assert!(may_read_catalog(sql), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "SELECT a FROM t ORDER BY a DESC",
            "-- SHOW TABLES\nSELECT 1",
            "WITH show AS (SELECT 1) SELECT * FROM show",
        ] {
            assert!(!may_read_catalog(sql), "{sql}");
        }
    }
}
