//! Turns SQL into an encoded distributed plan with DataFusion and datafusion-distributed.

use crate::catalog::CatalogConfig;
use crate::codec::{FlotillaCodec, encode_plan};
use crate::config::JobManagerConfig;
use crate::error::AgentError;
use bytes::Bytes;
use datafusion::common::DataFusionError;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement;
use datafusion_distributed::{
    DistributedExt, NetworkBoundaryExt, SessionStateBuilderExt, WorkerResolver,
};
use std::collections::HashMap;
use std::sync::Arc;
use url::Url;

/// A query ready to hand over.
pub(crate) struct PlannedQuery {
    /// The physical plan, encoded.
    pub(crate) plan: Bytes,
    /// The session options it was planned with.
    pub(crate) options: HashMap<String, String>,
    /// The most tasks any of its stages runs: how many TaskManagers it can use (at least 1).
    pub(crate) width: usize,
}

/// Plans queries against the catalog, distributing them over the live TaskManagers.
pub(crate) struct Planner {
    /// Fixed after start-up and shared by every query: no per-query copy of its function
    /// registries. The TaskManagers a query leased reach its planner through [`LEASED`].
    pub(super) state: SessionState,
    /// The session options, as the head TaskManager applies them; fixed after start-up.
    options: HashMap<String, String>,
    /// Most operators a statement may have.
    max_operators: usize,
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
        let mut builder = SessionStateBuilder::new()
            .with_default_features()
            .with_config(session_config)
            .with_physical_optimizer_rule(std::sync::Arc::new(super::coop::YieldAfterJoins))
            .with_distributed_planner()
            .with_distributed_worker_resolver(LeasedWorkers)
            .with_distributed_user_codec(FlotillaCodec);
        if config.scan_bytes_per_partition > 0 {
            builder = builder.with_distributed_file_scan_config_bytes_per_partition(
                config.scan_bytes_per_partition,
            )?;
        }
        // Off: DataFusion's list-files cache never forgets a listing, so files added to a
        // table would stay unseen. Each plan lists its tables; the plan cache saves repeats.
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        let state = builder.with_runtime_env(runtime).build();
        let roots = catalog.roots().map_err(anyhow::Error::msg)?;
        crate::files::confine_local_files(state.runtime_env(), &roots)?;
        let ctx = SessionContext::new_with_state(state);
        catalog.register(&ctx).await?;
        let state = ctx.state();
        let options = shipped_options(state.config().options());
        Ok(Self {
            state,
            options,
            max_operators: config.max_operators,
        })
    }

    /// Parses, checks and plans one read-only statement logically: everything that can be the
    /// SQL's fault fails here, before any slot is leased.
    pub(crate) async fn prepare(&self, sql: &str) -> Result<LogicalPlan, AgentError> {
        let state = &self.state;
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|error| AgentError::SqlSyntax(crate::error::root_message(&error)))?;
        ensure_read_only(&statement)?;
        ensure_few_operators(sql, self.max_operators)?;
        state
            .statement_to_plan(statement)
            .await
            .map_err(AgentError::from_planning)
    }

    /// Plans `logical` physically with its stages sized for `workers` TaskManagers (only their
    /// number matters: the head routes tasks to those the query leased), and encodes it.
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
        // DataFusion folds `now()` and its kin into the time the session started executing:
        // a statement that reads the clock is planned in a copy started now.
        let clocked;
        let state = if calls_any(logical, |volatility| volatility == Volatility::Stable) {
            let mut copy = self.state.clone();
            copy.mark_start_execution();
            clocked = copy;
            &clocked
        } else {
            &self.state
        };
        let physical = LEASED
            .scope(urls, state.create_physical_plan(logical))
            .await
            .map_err(AgentError::from_planning)?;
        let width = widest_stage(&physical);
        let plan = encode_plan(physical, state.config())
            .map_err(|error| AgentError::Internal(format!("encoding the plan: {error}")))?;
        Ok(PlannedQuery {
            plan,
            options: self.options.clone(),
            width,
        })
    }
}

/// Says whether `plan` (subqueries included) calls a function whose volatility `matches`.
pub(crate) fn calls_any(plan: &LogicalPlan, matches: impl Fn(Volatility) -> bool) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|expr| {
            expr.apply(|expr| {
                found |= match expr {
                    Expr::ScalarFunction(call) => matches(call.func.signature().volatility),
                    Expr::AggregateFunction(call) => matches(call.func.signature().volatility),
                    _ => false,
                };
                Ok(stop_if(found))
            })
        });
        Ok(stop_if(found))
    });
    found
}

fn stop_if(found: bool) -> TreeNodeRecursion {
    if found {
        TreeNodeRecursion::Stop
    } else {
        TreeNodeRecursion::Continue
    }
}

/// Returns the most tasks any stage below the head of `plan` runs, at least 1.
fn widest_stage(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let mut widest = 1;
    let _ = plan.apply(|node| {
        if let Some(boundary) = node.as_network_boundary() {
            widest = widest.max(boundary.input_stage().task_count());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    widest
}

/// The session options the head must apply: those that differ from DataFusion's defaults, and
/// those whose default depends on the machine. Shipping all of them (about 150 strings, each
/// parsed again on the head) cost both sides more than planning a short query's hand-over.
fn shipped_options(options: &ConfigOptions) -> HashMap<String, String> {
    const MACHINE_DEPENDENT: [&str; 2] = [
        "datafusion.execution.target_partitions",
        "datafusion.execution.planning_concurrency",
    ];
    let defaults: HashMap<String, Option<String>> = ConfigOptions::default()
        .entries()
        .into_iter()
        .map(|entry| (entry.key, entry.value))
        .collect();
    options
        .entries()
        .into_iter()
        .filter_map(|entry| {
            let value = entry.value?;
            let differs = defaults.get(&entry.key) != Some(&Some(value.clone()));
            (differs || MACHINE_DEPENDENT.contains(&entry.key.as_str()))
                .then_some((entry.key, value))
        })
        .collect()
}

/// Refuses a statement with more than `limit` operators, counted on its tokens (no recursion:
/// this runs before anything walks the expression trees).
fn ensure_few_operators(sql: &str, limit: usize) -> Result<(), AgentError> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|error| AgentError::SqlSyntax(error.to_string()))?;
    let operators = tokens
        .iter()
        .filter(|token| match token {
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret => true,
            Token::Word(word) => matches!(word.keyword, Keyword::AND | Keyword::OR | Keyword::NOT),
            _ => false,
        })
        .count();
    if operators > limit {
        return Err(AgentError::SqlPlanning(format!(
            "the statement has {operators} operators; at most {limit} are allowed (jobmanager.max_operators)"
        )));
    }
    Ok(())
}

/// Refuses anything but queries (no DDL, DML, `COPY`, `SET` or transactions), and table
/// functions other than the generators.
fn ensure_read_only(statement: &Statement) -> Result<(), AgentError> {
    use datafusion::sql::sqlparser::ast::Statement as Sql;
    match statement {
        Statement::Statement(inner) => match inner.as_ref() {
            Sql::Query(_) => ensure_no_table_functions(inner),
            other => Err(AgentError::NotAllowed(statement_kind(&other.to_string()))),
        },
        Statement::Explain(explain) => ensure_read_only(&explain.statement),
        Statement::CreateExternalTable(_) => {
            Err(AgentError::NotAllowed("CREATE EXTERNAL TABLE".into()))
        }
        Statement::CopyTo(_) => Err(AgentError::NotAllowed("COPY".into())),
        Statement::Reset(_) => Err(AgentError::NotAllowed("RESET".into())),
    }
}

/// Table functions a query may call: they generate rows and read nothing (the error message of
/// `AgentError::TableFunction` lists them too).
const ALLOWED_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Refuses calls of table functions that are not generators (`read_csv('/etc/passwd')` and
/// friends, should one ever be registered): tables come from the catalog only.
fn ensure_no_table_functions(
    statement: &datafusion::sql::sqlparser::ast::Statement,
) -> Result<(), AgentError> {
    use datafusion::sql::sqlparser::ast::{TableFactor, Visit, Visitor};
    use std::ops::ControlFlow;

    struct TableFunctions;
    impl Visitor for TableFunctions {
        type Break = String;
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<String> {
            let name = match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } => name.to_string(),
                TableFactor::Function { name, .. } => name.to_string(),
                TableFactor::TableFunction { expr, .. } => expr.to_string(),
                _ => return ControlFlow::Continue(()),
            };
            let bare = name.trim_matches('"').to_ascii_lowercase();
            if ALLOWED_TABLE_FUNCTIONS.contains(&bare.as_str()) {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(name.chars().take(64).collect())
            }
        }
    }
    match statement.visit(&mut TableFunctions) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(name) => Err(AgentError::TableFunction(name)),
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

tokio::task_local! {
    /// The TaskManagers the query being planned leased slots on.
    static LEASED: Vec<Url>;
}

/// Resolves to the TaskManagers the query being planned leased: stages are sized for them
/// alone.
struct LeasedWorkers;

impl WorkerResolver for LeasedWorkers {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        LEASED.try_with(Clone::clone).map_err(|_| {
            DataFusionError::Internal("planned outside a query's leased TaskManagers".into())
        })
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
        assert!(classify("SELECT * FROM generate_series(1, 10)").is_ok());
        assert!(classify("SELECT * FROM range(3) r JOIN nation ON true").is_ok());
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO t VALUES (1)",
            "DROP TABLE t",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
            "SELECT * FROM read_csv('../../etc/passwd')",
            "SELECT * FROM nation JOIN read_parquet('/data/x') ON true",
            "WITH t AS (SELECT * FROM read_json('/etc/shadow')) SELECT * FROM t",
            "SELECT * FROM (SELECT * FROM \"read_csv\"('/x')) s",
            "EXPLAIN SELECT * FROM read_csv('/etc/passwd')",
            "EXPLAIN DROP TABLE t",
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
    fn only_changed_and_machine_dependent_options_are_shipped() {
        let mut options = ConfigOptions::default();
        options
            .set("datafusion.execution.batch_size", "1234")
            .unwrap();
        let shipped = shipped_options(&options);
        assert_eq!(shipped["datafusion.execution.batch_size"], "1234");
        assert!(shipped.contains_key("datafusion.execution.target_partitions"));
        assert!(!shipped.contains_key("datafusion.optimizer.max_passes"));
        // Applied to a default config, they give the same options back.
        let mut applied = ConfigOptions::default();
        for (key, value) in &shipped {
            applied.set(key, value).unwrap();
        }
        assert_eq!(
            applied
                .entries()
                .into_iter()
                .find(|e| e.key == "datafusion.execution.batch_size")
                .and_then(|e| e.value)
                .as_deref(),
            Some("1234")
        );
    }

    #[test]
    fn statement_kind_keeps_keywords_only() {
        assert_eq!(statement_kind("insert into t values (1)"), "INSERT INTO");
        assert_eq!(statement_kind("DROP TABLE secret_name"), "DROP TABLE");
        assert_eq!(statement_kind("SET x = 1"), "SET X");
    }
}
