//! The cluster agent's one `Config`: one section per role, plus the catalog and logging.
//!
//! Loaded with `flotilla_cluster::load_layered`: defaults → `--config` file → `AGENT_*` env → flags.

use crate::catalog::CatalogConfig;
use flotilla_cluster::{ClusterConfig, GossipConfig, LogConfig};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// What a cluster-agent process runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A JobManager shard: plans SQL and hands it to a TaskManager.
    JobManager,
    /// A TaskManager: runs plan stages and serves results.
    TaskManager,
}

impl Role {
    /// Returns the role's name as used in logs, metrics and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JobManager => "jobmanager",
            Self::TaskManager => "taskmanager",
        }
    }
}

/// Everything a cluster-agent process can be configured with.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity of this process.
    pub node: NodeConfig,
    /// Used when the role is `jobmanager`.
    pub jobmanager: JobManagerConfig,
    /// Used when the role is `taskmanager`.
    pub taskmanager: TaskManagerConfig,
    /// The tables queries may name; every process reads the same catalog.
    pub catalog: CatalogConfig,
    /// Gossip membership of gateways and shards: they join one cluster through `gossip.seeds`.
    /// TaskManagers do not gossip; they report to the shards (`reports`).
    pub gossip: GossipConfig,
    /// How TaskManagers report their slots to the shards, and how shards judge silence.
    pub reports: flotilla_cluster::reports::ReportsConfig,
    /// The cluster secret (keys of signed calls and sealed datagrams) and internal TLS.
    pub cluster: ClusterConfig,
    /// Logging.
    pub log: LogConfig,
    /// What queries may allocate in this process (either role).
    pub memory: MemoryConfig,
}

/// What queries may allocate in this process: the memory guard.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// The process's watermark, in MiB of allocated memory: past it, the query holding the most
    /// memory here is stopped with `resources_exhausted`, before the kernel's OOM killer would
    /// end the whole process. 0 (the default): 80 % of the cgroup's memory limit, else of the
    /// host's memory. `local` gives each of its processes a share of the host.
    pub limit_mb: u64,
    /// Most one call of a function that builds large values (`repeat`, `lpad`, `rpad`,
    /// `replace`) may build over one batch, in MiB; a call that would build more fails with
    /// `resources_exhausted` before it allocates.
    pub max_call_mb: u64,
    /// How often the watermark is checked, in milliseconds.
    pub check_interval_ms: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            limit_mb: 0,
            max_call_mb: 64,
            check_interval_ms: 20,
        }
    }
}

impl MemoryConfig {
    /// The watermark in bytes: `limit_mb`, or 80 % of the memory available to the process.
    pub(crate) fn limit_bytes(&self) -> u64 {
        match self.limit_mb {
            0 => crate::memory::available_memory() / 5 * 4,
            mib => mib.saturating_mul(1 << 20),
        }
    }

    /// The bound on one function call, in bytes.
    pub(crate) fn max_call_bytes(&self) -> u64 {
        self.max_call_mb.max(1).saturating_mul(1 << 20)
    }
}

/// Identity and lifecycle of this process.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// A name for logs and `/v1/state`; defaults to `<role>-<pid>`.
    pub id: Option<String>,
    /// On SIGTERM or `POST /admin/drain`: how long the node waits for its running work (a
    /// shard's plans; a TaskManager's leases, tickets and result streams) before it exits
    /// anyway, in milliseconds.
    pub drain_timeout_ms: u64,
    /// How the previous process of this member ended, published over gossip (`/v1/cluster`,
    /// the web UI); `local` sets it when it starts a member again. Unset: nothing to say.
    pub previous_exit: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            drain_timeout_ms: 30_000,
            previous_exit: None,
        }
    }
}

/// A JobManager shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobManagerConfig {
    /// Address of the Flight (gRPC) service the gateways call. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// `host:port` (a DNS name allowed) gateways are told to call for `listen`. Unset: the
    /// bound address, or with `listen` on every interface this host's address on the route to
    /// the first gossip seed.
    pub advertise: Option<String>,
    /// Address of the HTTP admin service (`/metrics`, `/healthz`, `/v1/state`).
    pub admin_listen: SocketAddr,
    /// `host:port` published for `admin_listen` (Prometheus targets); unset as for `advertise`.
    pub admin_advertise: Option<String>,
    /// TaskManager Flight URLs (`http://host:port`) as a fixed list, probed in the background,
    /// all in pool `default`. Empty (the default): TaskManagers are discovered by gossip.
    pub taskmanagers: Vec<String>,
    /// How often each listed TaskManager's reachability is probed, in milliseconds.
    pub probe_interval_ms: u64,
    /// TaskManagers a query's stages are spread over (fewer when fewer are free).
    pub taskmanagers_per_query: usize,
    /// Slots a query leases on each of its TaskManagers.
    pub slots_per_query: u64,
    /// Lifetime of a slot lease unless renewed, in milliseconds: how long the slots of a
    /// crashed shard or TaskManager stay taken at most.
    pub lease_ttl_ms: u64,
    /// Queries that may wait for free slots at once; more fail at once with `cluster_busy`.
    pub queue_length: usize,
    /// How long a query may wait for free slots, in milliseconds, before `cluster_busy`.
    pub queue_max_wait_ms: u64,
    /// How long the hand-over of a plan to a TaskManager may take, in milliseconds.
    pub handover_timeout_ms: u64,
    /// A query that runs on one TaskManager (and fills no result cache entry) is handed over
    /// inside its ticket, sealed: the TaskManager reserves its slots when the gateway fetches
    /// it, and the shard makes no call (one round trip fewer). False: every hand-over is a
    /// call from the shard.
    pub handover_in_ticket: bool,
    /// DataFusion `target_partitions` per stage; 0 means the number of cores.
    pub target_partitions: usize,
    /// DataFusion batch size, in rows.
    pub batch_size: usize,
    /// Parquet bytes each scan partition is planned to read; a scan that needs more partitions
    /// than one TaskManager has cores is spread over several TaskManagers. 0 keeps
    /// datafusion-distributed's default (16 MiB).
    pub scan_bytes_per_partition: usize,
    /// Whether one query's stages may be spread over several TaskManagers of the same host.
    /// Off (the default), a query is sized for at most one TaskManager per host: TaskManagers
    /// that share a host share its cores, so spreading over them adds a shuffle and no cores
    /// (on `local`, TPC-H SF1 took 1.32 x in-process DataFusion spread, 1.02 x not).
    pub spread_within_host: bool,
    /// With gossip discovery: how long a starting shard waits to see a TaskManager before it
    /// announces itself ready anyway, in milliseconds. Until ready, gateways send it nothing.
    pub startup_wait_ms: u64,
    /// Most operators (`+`, `AND`, `=`, `||`, ...) one statement may have: planners and plan
    /// codecs recurse over expression trees, and a statement of thousands of chained operators
    /// would exhaust a thread's stack. Above it: `sql_planning`.
    pub max_operators: usize,
    /// Bytes of encoded plans the shard keeps for queries it has seen (least recently used
    /// first out); 0 turns the plan cache off.
    pub plan_cache_bytes: usize,
    /// Results of repeated statements the shard remembers a TaskManager keeps (the bytes stay
    /// on the TaskManagers, `taskmanager.result_cache_mb`); 0 turns the result cache off.
    pub result_index_entries: usize,
}

impl Default for JobManagerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            advertise: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_advertise: None,
            taskmanagers: Vec::new(),
            probe_interval_ms: 1000,
            taskmanagers_per_query: 2,
            slots_per_query: 1,
            lease_ttl_ms: 10_000,
            queue_length: 256,
            queue_max_wait_ms: 5_000,
            handover_timeout_ms: 5000,
            handover_in_ticket: true,
            target_partitions: 0,
            batch_size: 8192,
            scan_bytes_per_partition: 0,
            spread_within_host: false,
            startup_wait_ms: 5_000,
            max_operators: 1_000,
            plan_cache_bytes: 64 << 20,
            result_index_entries: 20_000,
        }
    }
}

/// A TaskManager.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskManagerConfig {
    /// Address of the gRPC service (datafusion-distributed worker + Flight results).
    pub listen: SocketAddr,
    /// `host:port` (a DNS name allowed) shards, gateways and other TaskManagers are told to
    /// call for `listen`. Unset: the bound address, or with `listen` on every interface this
    /// host's address on the route to the first gossip seed.
    pub advertise: Option<String>,
    /// Address of the HTTP admin service (`/metrics`, `/healthz`, `/v1/state`).
    pub admin_listen: SocketAddr,
    /// `host:port` published for `admin_listen` (Prometheus targets); unset as for `advertise`.
    pub admin_advertise: Option<String>,
    /// Task slots this TaskManager offers; shards lease them, and it refuses leases beyond.
    pub slots: usize,
    /// The pool (isolation group) this TaskManager serves; tenants bound to a pool run only on
    /// its TaskManagers.
    pub pool: String,
    /// Limit of the DataFusion memory pool, in MiB; queries over it fail or spill.
    pub memory_limit_mb: u64,
    /// Most of that pool one query may hold on this TaskManager (all its tasks here together),
    /// in MiB: past it, its sorts and aggregations spill to disk where they can, else it fails
    /// with `resources_exhausted` and the other queries run on. 0 (the default): half of
    /// `memory_limit_mb`. Everything the query's tasks allocate here, counted by the allocator
    /// (values its expressions build included), may reach twice this before the query is
    /// stopped with `resources_exhausted`.
    pub query_memory_limit_mb: u64,
    /// How long a handed-over plan waits for its `DoGet` before it is dropped, in seconds.
    pub ticket_ttl_secs: u64,
    /// At most this many handed-over plans wait for their `DoGet` at once.
    pub max_pending_tickets: usize,
    /// How long a handed-over query's slots here wait for its `DoGet`, in milliseconds (at most
    /// the lease TTL): a gateway cut off between the hand-over and the fetch costs the slots
    /// this long, not a whole TTL. A fetch that comes later is refused and the gateway runs
    /// the query again.
    pub fetch_window_ms: u64,
    /// Memory for results kept for repeated statements, in MiB (an eighth admits new results,
    /// the rest holds those asked for twice; a result over an eighth is not kept). 0 turns the
    /// result cache off on this TaskManager. It comes on top of `memory_limit_mb`.
    pub result_cache_mb: u64,
}

impl Default for TaskManagerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50061)),
            advertise: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_advertise: None,
            slots: 4,
            pool: flotilla_protocol::DEFAULT_POOL.to_string(),
            memory_limit_mb: 2048,
            query_memory_limit_mb: 0,
            ticket_ttl_secs: 60,
            max_pending_tickets: 1024,
            fetch_window_ms: 3000,
            result_cache_mb: 64,
        }
    }
}

impl Config {
    /// Returns a config for in-process tests: ephemeral ports everywhere.
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_test() -> Self {
        let mut config = Self::default();
        config.jobmanager.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.taskmanager.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    /// Returns this node's id for `role`.
    pub fn node_id(&self, role: Role) -> String {
        self.node
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", role.as_str(), std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Loads a shipped deployment example the way its systemd unit does (the file, then the
    /// unit's environment).
    fn load_example<T: serde::de::DeserializeOwned>(
        file: &str,
        prefix: &str,
        env: &[(&str, &str)],
    ) -> T {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/three-hosts")
            .join(file);
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        flotilla_cluster::load_layered(Some(&path), &env, prefix, &[])
            .unwrap_or_else(|error| panic!("{file}: {error:#}"))
    }

    #[test]
    fn the_shipped_three_host_configs_load() {
        let taskmanager: Config = load_example(
            "taskmanager.toml",
            "AGENT",
            &[
                ("AGENT_CLUSTER__SECRET", "s3cret"),
                ("AGENT_TASKMANAGER__ADVERTISE", "flotilla-2.example"),
                ("AGENT_GOSSIP__ADVERTISE", "flotilla-2.example"),
            ],
        );
        assert_eq!(taskmanager.cluster.secret, "s3cret");
        assert_eq!(
            taskmanager.taskmanager.advertise.as_deref(),
            Some("flotilla-2.example")
        );
        assert_eq!(taskmanager.reports.shards.len(), 3);
        assert_eq!(taskmanager.catalog.tables.len(), 2);

        let shard: Config = load_example(
            "jobmanager.toml",
            "AGENT",
            &[("AGENT_JOBMANAGER__ADVERTISE", "flotilla-3.example")],
        );
        assert_eq!(shard.jobmanager.listen.port(), 50052);
        assert_ne!(shard.gossip.listen.port(), taskmanager.gossip.listen.port());

        let gateway: gateway::Config = load_example(
            "gateway.toml",
            "GATEWAY",
            &[("GATEWAY_HTTP__ADVERTISE", "flotilla-1.example")],
        );
        assert_eq!(gateway.gossip.seeds, shard.gossip.seeds);
        assert_eq!(gateway.cluster.keepalive_timeout_ms, 1000);
    }
}
