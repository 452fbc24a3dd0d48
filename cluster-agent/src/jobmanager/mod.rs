//! The JobManager role: a shard. It plans SQL with DataFusion, hands the plan to a TaskManager,
//! and answers with where the result can be fetched. It never touches a table's row: only
//! questions about the catalog are answered here (`introspection.rs`).

mod cached;
mod candidates;
mod checks;
mod coop;
mod flight;
mod handover;
mod in_ticket;
mod introspection;
mod leasing;
mod metrics;
mod plan_cache;
pub(crate) mod planner;
mod result_index;
mod series;
mod service;
#[cfg(test)]
mod sql_fuzz;
mod statements;
mod unanswered;
mod unreachable;

pub use metrics::JobManagerMetrics;
pub use service::{JobManager, start_jobmanager};
