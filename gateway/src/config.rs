//! The gateway's one `Config`, one sub-config per concern.
//!
//! Loaded with [`crate::load_layered`]: defaults → `--config` file → `GATEWAY_*` env → flags.

use crate::LogConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Everything the gateway can be configured with.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The public HTTP API.
    pub http: HttpConfig,
    /// The JobManager shards queries are routed to.
    pub shards: ShardsConfig,
    /// The TaskManagers, for `/readyz` and `/v1/cluster` (results are fetched from whichever
    /// TaskManager a shard names, listed here or not).
    pub taskmanagers: TaskManagersConfig,
    /// How queries are spread over shards.
    pub routing: RoutingConfig,
    /// How many queries are admitted at once.
    pub admission: AdmissionConfig,
    /// Logging.
    pub log: LogConfig,
}

/// The public HTTP API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The JobManager shards.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsConfig {
    /// Shard Flight URLs (`http://host:port`); static membership until gossip arrives.
    pub addresses: Vec<String>,
    /// Time allowed to open a connection to a shard or TaskManager, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed from sending a query to the result's first message, in milliseconds.
    pub first_result_timeout_ms: u64,
    /// How often each shard's and TaskManager's reachability is probed, in milliseconds.
    pub probe_interval_ms: u64,
}

impl Default for ShardsConfig {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            connect_timeout_ms: 1000,
            first_result_timeout_ms: 60_000,
            probe_interval_ms: 1000,
        }
    }
}

/// The TaskManagers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskManagersConfig {
    /// TaskManager Flight URLs (`http://host:port`).
    pub addresses: Vec<String>,
}

/// Consistent hashing with bounded loads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// A shard is skipped while its in-flight count would exceed this factor × the mean.
    pub load_factor: f64,
    /// Points per shard on the hash ring.
    pub virtual_nodes: usize,
    /// Shards tried per query before giving up, when shards fail before answering.
    pub max_attempts: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            load_factor: 1.25,
            virtual_nodes: 64,
            max_attempts: 3,
        }
    }
}

/// Admission control.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Queries routed at once (from admission to the result's first message); more wait.
    pub max_in_flight: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
        }
    }
}

impl Config {
    /// Returns a config for tests: an ephemeral port and the given shards.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test(shards: Vec<String>) -> Self {
        let mut config = Self::default();
        config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.shards.addresses = shards;
        config
    }
}
