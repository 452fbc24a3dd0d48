//! The node-state schema every process publishes over gossip, and reads from its peers.
//!
//! Each process publishes two keys: [`NODE_KEY`] (who it is and where it listens, set once
//! and again when it starts draining) and [`LOAD_KEY`] (its live load, refreshed often).

use serde::{Deserialize, Serialize};

/// The gossip key holding a [`NodeInfo`] as JSON.
pub const NODE_KEY: &str = "node";
/// The gossip key holding a [`NodeLoad`] as JSON.
pub const LOAD_KEY: &str = "load";

/// What a process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// A gateway: the public HTTP API.
    Gateway,
    /// A JobManager shard.
    JobManager,
    /// A TaskManager.
    TaskManager,
}

impl NodeRole {
    /// Returns the role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::JobManager => "jobmanager",
            Self::TaskManager => "taskmanager",
        }
    }
}

/// Who a process is and where it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Unique id in the cluster.
    pub id: String,
    /// Its role.
    pub role: NodeRole,
    /// Flotilla version it runs.
    pub version: String,
    /// Its gRPC URL (`http://host:port`), for shards and TaskManagers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_url: Option<String>,
    /// Its public HTTP address, for gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    /// Its HTTP admin address (`/metrics`, `/healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// Its TaskManager pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Set when it takes no new work and is about to leave.
    #[serde(default)]
    pub draining: bool,
    /// Set while it has joined but cannot take work yet (a shard that has not yet had any
    /// TaskManager report).
    #[serde(default)]
    pub starting: bool,
    /// How this member's previous process ended, when its supervisor (`local`) started it
    /// again: `OOM-killed`, `killed by signal 9 (SIGKILL)`, `exited with code 101`, with when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_exit: Option<String>,
}

/// A process's live load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Queries being planned (shards) or admitted (gateways).
    #[serde(default)]
    pub in_flight: u64,
    /// Task slots in all (TaskManagers).
    #[serde(default)]
    pub slots_total: u64,
    /// Task slots not leased (TaskManagers).
    #[serde(default)]
    pub slots_free: u64,
    /// Memory pool reserved, in bytes (TaskManagers).
    #[serde(default)]
    pub memory_used_bytes: u64,
    /// Memory pool limit, in bytes (TaskManagers).
    #[serde(default)]
    pub memory_limit_bytes: u64,
    /// TaskManagers this shard can choose now (shards; TaskManagers report to shards only).
    #[serde(default)]
    pub taskmanagers_up: u64,
    /// TaskManagers this shard knows, choosable or not (shards).
    #[serde(default)]
    pub taskmanagers_known: u64,
}
