//! The TaskManager role: runs plan stages for any shard (the datafusion-distributed worker) and,
//! for the queries it heads, keeps the handed-over plan under a ticket and streams the result.

mod compact;
mod flight;
mod handover;
mod in_ticket;
mod keeper;
mod leases;
mod metrics;
mod query_memory;
mod result_cache;
mod results;
mod running;
mod service;
mod sessions;
mod tickets;

pub use metrics::TaskManagerMetrics;
pub use service::{TaskManager, start_taskmanager};
