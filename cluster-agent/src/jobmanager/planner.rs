//! Turns SQL into an encoded distributed plan with DataFusion and datafusion-distributed.

use super::checks;
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
use datafusion_distributed::{
    DistributedExt, NetworkBoundaryExt, SessionStateBuilderExt, WorkerResolver,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// A query ready to hand over.
pub(crate) struct PlannedQuery {
    /// The physical plan, encoded.
    pub(crate) plan: Bytes,
    /// The session options it was planned with.
    pub(crate) options: HashMap<String, String>,
    /// The most tasks any of its stages runs: how many TaskManagers it can use (at least 1).
    pub(crate) width: usize,
    /// The catalog tables it reads, at the versions read before it listed their files; None
    /// when neither it nor its result may be reused (see `plan_cache::reused_tables`).
    pub(crate) reads: Option<Vec<(String, crate::catalog::versions::Version)>>,
}

/// Plans queries against the catalog, distributing them over the live TaskManagers.
pub(crate) struct Planner {
    /// Fixed after start-up and shared by every query: no per-query copy of its function
    /// registries. The TaskManagers a query leased reach its planner through [`LEASED`].
    pub(super) state: SessionState,
    /// A plain session over the same catalog, for the plans that read the catalog only
    /// (`introspection.rs`): they run on the shard, not distributed.
    pub(super) introspection: SessionState,
    /// The session options, as the head TaskManager applies them; fixed after start-up.
    options: HashMap<String, String>,
    /// Most operators a statement may have.
    max_operators: usize,
    /// The catalog's tables that could not be read yet.
    unreachable: Arc<super::unreachable::UnreachableTables>,
}

impl Planner {
    /// Registers the catalog's tables (reading their schemas once) in a distributed session.
    pub(crate) async fn new(
        catalog: &CatalogConfig,
        config: &JobManagerConfig,
        max_call_bytes: u64,
    ) -> anyhow::Result<Self> {
        let mut session_config = SessionConfig::new()
            .with_batch_size(config.batch_size)
            .with_information_schema(true);
        // A recursive query's plan does not cross to the TaskManagers (datafusion-distributed
        // cannot ship its work table), and its iterations have no bound: refused at planning,
        // named (`prepare`), instead of failing as an internal error once handed over.
        session_config.options_mut().execution.enable_recursive_ctes = false;
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
            .with_object_store_registry(crate::catalog::stores::registry())
            .build_arc()?;
        let state = builder.with_runtime_env(runtime).build();
        catalog.install_stores(state.runtime_env())?;
        let ctx = SessionContext::new_with_state(state);
        let unreachable =
            super::unreachable::UnreachableTables::new(catalog.register_reachable(&ctx).await?);
        let mut state = ctx.state();
        // Constant folding runs functions here: the growing ones are bounded before they run.
        crate::memory::register_bounded_functions(&mut state, max_call_bytes)?;
        super::series::register_whole_series(&mut state);
        let options = shipped_options(state.config().options());
        // Not `create_default_catalog_and_schema`: that would register an empty catalog over
        // the shared one.
        let introspection = SessionStateBuilder::new()
            .with_config(
                SessionConfig::new()
                    .with_information_schema(true)
                    .with_create_default_catalog_and_schema(false),
            )
            .with_runtime_env(Arc::clone(state.runtime_env()))
            .with_catalog_list(Arc::clone(state.catalog_list()))
            .with_default_features()
            .build();
        // Registered through a context over the same catalog, a table that reads again is
        // seen by `state` and `introspection` alike.
        unreachable.spawn_retry(
            SessionContext::new_with_state(state.clone()),
            Duration::from_millis(catalog.refresh_ms.clamp(1_000, 10_000)),
        );
        Ok(Self {
            state,
            introspection,
            options,
            max_operators: config.max_operators,
            unreachable,
        })
    }

    /// Parses, checks and plans one read-only statement logically: everything that can be the
    /// SQL's fault fails here, before any slot is leased.
    pub(crate) async fn prepare(&self, sql: &str) -> Result<LogicalPlan, AgentError> {
        off_the_io_workers(self.prepare_here(sql)).await
    }

    async fn prepare_here(&self, sql: &str) -> Result<LogicalPlan, AgentError> {
        let state = &self.state;
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state
            .sql_to_statement(sql, &dialect)
            .map_err(|error| AgentError::SqlSyntax(crate::error::root_message(&error)))?;
        checks::ensure_read_only(&statement)?;
        self.unreachable.check(state, &statement)?;
        checks::ensure_few_operators(sql, self.max_operators)?;
        state.statement_to_plan(statement).await.map_err(|error| {
            match crate::error::root_message(&error) {
                message if message.contains("Recursive CTEs are not enabled") => {
                    AgentError::SqlPlanning(
                        "recursive queries (WITH RECURSIVE referring to itself) are not supported"
                            .into(),
                    )
                }
                _ => AgentError::from_planning(error),
            }
        })
    }

    /// Plans `logical` physically with its stages sized for `workers` TaskManagers (only their
    /// number matters: the head routes tasks to those the query leased), and encodes it.
    pub(crate) async fn plan(
        &self,
        logical: &LogicalPlan,
        workers: &[String],
    ) -> Result<PlannedQuery, AgentError> {
        off_the_io_workers(self.plan_here(logical, workers)).await
    }

    async fn plan_here(
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
            reads: None,
        })
    }
}

/// Runs planning, which is CPU work (a legal 900-term sum takes 1 s of optimizer in a debug
/// build), on this thread after handing its worker's other tasks to a fresh one: the shard's
/// connections keep answering keep-alive pings meanwhile, so a heavy statement never makes
/// the shard look down to its gateways (they would run it again on the next shard, which
/// would stall the same way). On a current-thread runtime (unit tests) it simply runs.
async fn off_the_io_workers<F: Future>(planning: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let handle = Handle::current();
    match handle.runtime_flavor() {
        RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| handle.block_on(planning)),
        _ => planning.await,
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
}
