//! Load reports: how shards learn the TaskManagers and their free slots without gossiping
//! them to everyone. Gossip (chitchat) holds only gateways and shards; each TaskManager sends
//! one small datagram to every shard once a second, and each shard keeps its own table. Bytes
//! per TaskManager grow with the number of shards, never with the number of TaskManagers.
//!
//! ```text
//!  TaskManager ──Report (≈100 B, 1/s)──▶ every shard's UDP socket (its gRPC port)
//!       ▲                                   │ TaskManagerTable: up / suspect / forgotten
//!       └──ShardsPage (when its list is old)┘ choose(pool): power of two choices, O(1)
//! ```
//!
//! A report is only a hint: the lease a TaskManager grants stays the one authority over its
//! slots.

mod listener;
mod reporter;
mod table;
mod wire;

pub use listener::{ReportListener, SWEEP, ShardCore};
pub use reporter::{Reporter, ReporterCore, Traffic};
pub use table::{
    Applied, Choice, Counts, ReportView, TableTimes, TaskManagerEntry, TaskManagerTable,
};
pub use wire::{Datagram, MAX_DATAGRAM, Report, ShardsPage, cluster_tag, shard_pages, shards_hash};

use serde::{Deserialize, Serialize};

/// How TaskManagers report to shards.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// TaskManagers: `host:port` gRPC addresses of a few shards (DNS names allowed); the
    /// TaskManager learns the others from them.
    pub shards: Vec<String>,
    /// TaskManagers: time between two reports to each shard, in milliseconds.
    pub interval_ms: u64,
    /// Shards: silence after which a TaskManager is passed over until it reports again.
    pub suspect_after_ms: u64,
    /// Shards: silence after which a TaskManager is forgotten.
    pub forget_after_ms: u64,
    /// Shards: how long a TaskManager whose call failed gets no work (a restart lifts it).
    pub down_for_ms: u64,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            shards: Vec::new(),
            interval_ms: 1000,
            suspect_after_ms: 2500,
            forget_after_ms: 30_000,
            down_for_ms: 2000,
        }
    }
}
