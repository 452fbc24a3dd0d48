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
//! Every datagram is sealed with the cluster's reports key (`crate::keys`): a report that does
//! not open is dropped before it is parsed; a replayed one is older than what the table holds.
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
pub use wire::{
    Datagram, MAX_DATAGRAM, MAX_PAYLOAD, Report, ShardsPage, cluster_tag, shard_pages, shards_hash,
};

use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The wall clock of a sans-IO core, from its own (possibly virtual) `Instant`s: seals carry
/// wall-clock times, the cores see only `Instant`s.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    at: Instant,
    unix_ms: u64,
}

impl WallClock {
    /// A clock that reads the system's wall clock at `now`.
    pub fn starting(now: Instant) -> Self {
        Self {
            at: now,
            unix_ms: crate::keys::unix_ms(),
        }
    }

    /// Milliseconds since the Unix epoch at `now`.
    pub fn ms(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at).as_millis() as u64;
        let before = self.at.saturating_duration_since(now).as_millis() as u64;
        (self.unix_ms + since).saturating_sub(before)
    }
}

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
