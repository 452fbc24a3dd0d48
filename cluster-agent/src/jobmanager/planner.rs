//! Turns SQL into an encoded distributed plan with DataFusion and datafusion-distributed.

use crate::catalog::CatalogConfig;
use crate::codec::{FlotillaCodec, encode_plan};
use crate::config::JobManagerConfig;
use crate::error::AgentError;
use datafusion::common::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement;
use datafusion_distributed::{DistributedExt, SessionStateBuilderExt, WorkerResolver};
use std::collections::HashMap;
use url::Url;

/// A query ready to hand over.
pub(crate) struct PlannedQuery {
    /// The physical plan, encoded.
    pub(crate) plan: Vec<u8>,
    /// The session options it was planned with.
    pub(crate) options: HashMap<String, String>,
}

/// Plans queries against the catalog, distributing them over the live TaskManagers.
pub(crate) struct Planner {
    ctx: SessionContext,
    /// The session options, as the head TaskManager applies them; fixed after start-up.
    options: HashMap<String, String>,
}

impl Planner {
    /// Registers the catalog's tables (reading their schemas once) in a distributed session.
    pub(crate) async fn new(
        catalog: &CatalogConfig,
        config: &JobManagerConfig,
    ) -> anyhow::Result<Self> {
        let mut session_config = SessionConfig::new()
            .with_batch_size(config.batch_size)
            .with_information_schema(false);
        if config.target_partitions > 0 {
            session_config = session_config.with_target_partitions(config.target_partitions);
        }
        let state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(session_config)
            .with_physical_optimizer_rule(std::sync::Arc::new(super::coop::YieldAfterJoins))
            .with_distributed_planner()
            .with_distributed_worker_resolver(LeasedWorkers(Vec::new()))
            .with_distributed_user_codec(FlotillaCodec)
            .build();
        let ctx = SessionContext::new_with_state(state);
        catalog.register(&ctx).await?;
        let options = ctx
            .state()
            .config()
            .options()
            .entries()
            .into_iter()
            .filter_map(|entry| entry.value.map(|value| (entry.key, value)))
            .collect();
        Ok(Self { ctx, options })
    }

    /// Parses, checks and plans one read-only statement logically: everything that can be the
    /// SQL's fault fails here, before any slot is leased.
    pub(crate) async fn prepare(&self, sql: &str) -> Result<LogicalPlan, AgentError> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|error| AgentError::SqlSyntax(crate::error::root_message(&error)))?;
        ensure_read_only(&statement)?;
        state
            .statement_to_plan(statement)
            .await
            .map_err(AgentError::from_planning)
    }

    /// Plans `logical` physically over the TaskManagers the query leased, and encodes it.
    pub(crate) async fn plan(
        &self,
        logical: &LogicalPlan,
        workers: &[String],
    ) -> Result<PlannedQuery, AgentError> {
        let urls = workers
            .iter()
            .map(|address| {
                Url::parse(address).map_err(|error| {
                    AgentError::Internal(format!("taskmanager url {address}: {error}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.ctx.state();
        state
            .config_mut()
            .set_distributed_worker_resolver(LeasedWorkers(urls));
        let physical = state
            .create_physical_plan(logical)
            .await
            .map_err(AgentError::from_planning)?;
        let plan = encode_plan(physical, state.config()).map_err(AgentError::DataFusion)?;
        Ok(PlannedQuery {
            plan,
            options: self.options.clone(),
        })
    }
}

/// Refuses anything but queries: no DDL, DML, `COPY`, `SET` or transactions.
fn ensure_read_only(statement: &Statement) -> Result<(), AgentError> {
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    match statement {
        Statement::Statement(inner) => match inner.as_ref() {
            Sql::Query(_) => Ok(()),
            other => Err(AgentError::NotAllowed(statement_kind(&other.to_string()))),
        },
        Statement::Explain(_) => Ok(()),
        Statement::CreateExternalTable(_) => {
            Err(AgentError::NotAllowed("CREATE EXTERNAL TABLE".into()))
        }
        Statement::CopyTo(_) => Err(AgentError::NotAllowed("COPY".into())),
        Statement::Reset(_) => Err(AgentError::NotAllowed("RESET".into())),
    }
}

/// Returns the leading keywords of a statement, for error messages that do not echo data.
fn statement_kind(text: &str) -> String {
    text.split_whitespace()
        .take_while(|word| word.chars().all(|c| c.is_ascii_alphabetic()))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

/// The TaskManagers one query leased slots on: stages are sized for them alone.
struct LeasedWorkers(Vec<Url>);

impl WorkerResolver for LeasedWorkers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn classify(sql: &str) -> Result<(), AgentError> {
        let statement = DFParser::parse_sql(sql).unwrap().pop_front().unwrap();
        ensure_read_only(&statement)
    }

    #[test]
    fn only_queries_pass() {
        assert!(classify("SELECT 1").is_ok());
        assert!(classify("WITH t AS (SELECT 1 AS a) SELECT a FROM t").is_ok());
        assert!(classify("EXPLAIN SELECT 1").is_ok());
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let error = classify(sql).unwrap_err();
            assert_eq!(
                error.code(),
                flotilla_protocol::ErrorCode::NotAllowed,
                "{sql}"
            );
        }
    }

    #[test]
    fn statement_kind_keeps_keywords_only() {
        assert_eq!(statement_kind("insert into t values (1)"), "INSERT INTO");
        assert_eq!(statement_kind("DROP TABLE secret_name"), "DROP TABLE");
        assert_eq!(statement_kind("SET x = 1"), "SET X");
    }
}
