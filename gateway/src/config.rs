//! The gateway's one `Config`, one sub-config per concern.
//!
//! Loaded with [`flotilla_cluster::load_layered`]: defaults → `--config` file → `GATEWAY_*` env → flags.

use flotilla_cluster::{GossipConfig, LogConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Everything the gateway can be configured with.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The public HTTP API.
    pub http: HttpConfig,
    /// The Arrow Flight SQL front door (ADBC, JDBC, DBeaver, pyarrow).
    pub flight: FlightConfig,
    /// The JobManager shards queries are routed to.
    pub shards: ShardsConfig,
    /// The TaskManagers, for `/readyz` and `/v1/cluster` (results are fetched from whichever
    /// TaskManager a shard names, listed here or not).
    pub taskmanagers: TaskManagersConfig,
    /// How queries are spread over shards.
    pub routing: RoutingConfig,
    /// Limits of each query.
    pub query: QueryConfig,
    /// How many queries are admitted at once, overall and per tenant.
    pub admission: AdmissionConfig,
    /// Tenants with limits or a pool of their own, by name; others get the admission defaults.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Gossip membership: how shards are discovered when `shards.addresses` is empty.
    pub gossip: GossipConfig,
    /// The cluster secret (it signs every call to shards and TaskManagers, and seals gossip)
    /// and internal TLS.
    pub cluster: flotilla_cluster::ClusterConfig,
    /// Client authentication: bearer tokens, each bound to a tenant.
    pub auth: AuthConfig,
    /// HTTPS on the HTTP listener.
    pub tls: crate::tls::TlsConfig,
    /// The web UI under `/ui/`.
    pub ui: UiConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[ui]`: the web UI under `/ui/` (overview, queries, query detail, SQL console). Its pages
/// hold no data: they call the same API, with the same tokens and tenants.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serves the UI; off, `/ui/` is 404.
    pub enabled: bool,
    /// Shows the Cancel button on a running query (the API's `DELETE` stays either way).
    pub allow_cancel: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_cancel: true,
        }
    }
}

/// Client authentication. Off by default (`local` runs without tokens); when on, every call
/// but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Turns authentication on.
    pub enabled: bool,
    /// `/metrics` answers without a token (for Prometheus); else it needs an admin token.
    pub open_metrics: bool,
    /// `/v1/cluster` answers without a token; else it needs an admin token.
    pub open_admin: bool,
    /// The accepted tokens, stored as hashes.
    pub tokens: Vec<TokenConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            open_metrics: true,
            open_admin: false,
            tokens: Vec::new(),
        }
    }
}

/// One accepted bearer token.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// SHA-256 of the token, 64 hex digits (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// The tenant its queries run as (its limits and pool).
    pub tenant: String,
    /// An admin token also sees every tenant's queries and the admin endpoints.
    pub admin: bool,
}

/// The public HTTP API.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address. Port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// `host:port` (a DNS name allowed) this gateway publishes by gossip for `listen` (its
    /// `/metrics` too). Unset: the bound address, or with `listen` on every interface this
    /// host's address on the route to the first gossip seed.
    pub advertise: Option<String>,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            advertise: None,
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `[flight]`: Arrow Flight SQL on its own port, with everything the HTTP endpoint has
/// (tokens and tenants, admission, routing and fail-over, limits, cancel). TLS with `[tls]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlightConfig {
    /// Listen address. Unset (the default): no Flight SQL port, as a gateway opens only the
    /// ports it is told to. `cluster-agent local` sets one. Port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// How long a statement's result, running since its `GetFlightInfo`, waits for the
    /// client's `DoGet` before it is cancelled (it holds its admission and slots meanwhile).
    pub ticket_ttl_ms: u64,
    /// Most prepared statements open on this gateway; creating one more is refused.
    pub max_prepared_statements: usize,
    /// Most prepared statements one tenant may have open on this gateway, so that one tenant
    /// cannot fill `max_prepared_statements` for the others.
    pub tenant_max_prepared_statements: usize,
    /// A prepared statement unused this long is closed.
    pub prepared_idle_ms: u64,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            listen: None,
            ticket_ttl_ms: 30_000,
            max_prepared_statements: 10_000,
            tenant_max_prepared_statements: 1_000,
            prepared_idle_ms: 3_600_000,
        }
    }
}

/// The JobManager shards.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsConfig {
    /// Shard Flight URLs (`http://host:port`): a fixed list, probed in the background. Empty
    /// (the default): shards are discovered by gossip through `gossip.seeds`.
    pub addresses: Vec<String>,
    /// Deprecated: use `cluster.connect_timeout_ms`, which every role's internal connections
    /// obey. When set, it still applies (to the whole gateway) and a warning names its
    /// replacement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed from sending a query to the result's first message, in milliseconds.
    pub first_result_timeout_ms: u64,
    /// How often each shard's and TaskManager's reachability is probed, in milliseconds.
    pub probe_interval_ms: u64,
}

impl Default for ShardsConfig {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            connect_timeout_ms: None,
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

/// Limits of each query.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Longest a query may run, from admission to its last byte, in milliseconds; a request
    /// may ask for less with the `x-flotilla-timeout-ms` header, never for more.
    pub timeout_ms: u64,
    /// Ended queries whose record `GET /v1/query/{id}` still shows (about 2 KiB each).
    pub history: usize,
    /// Most rows a result may have; past it, the result ends with `result_too_large`. 0 (the
    /// default): no limit. A tenant may have its own.
    pub max_result_rows: u64,
    /// Most bytes of Arrow data a result may have (as the TaskManager sends it, whatever the
    /// response format); past it, `result_too_large`. Default 1 GiB; 0: no limit.
    pub max_result_bytes: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 300_000,
            history: 1000,
            max_result_rows: 0,
            max_result_bytes: 1 << 30,
        }
    }
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
    /// Most re-runs when a TaskManager fails before the first byte (budget and deadline allowing).
    pub taskmanager_retries: usize,
    /// How long a statement is refused (`quarantined`) after two different members failed
    /// while it ran, in milliseconds: a query of death is not carried to every member in turn.
    /// 0: never quarantined (it is still not run a third time after such failures).
    pub quarantine_ms: u64,
    /// Broken streams (not refused connections) of this many distinct statements within 10 s
    /// mark a shard down; fewer are taken as the statements' doing, not the shard's.
    pub strikes_to_mark_down: usize,
    /// An attempt without its first batch after clamp(2 × p95, min, max) is hedged on
    /// another shard (`route/hedge.rs`); 0 for `hedge_max_ms`: no hedging.
    pub hedge_min_ms: u64,
    pub hedge_max_ms: u64,
    /// Extra attempts (hedges and re-runs) allowed per query of the last 10 s (0.1: 10 %).
    pub extra_work_ratio: f32,
    /// Extra attempts a second allowed whatever the traffic (a lone failure is always re-run).
    pub extra_work_per_second: u32,
    /// Pause before the first re-run in ms, doubled (with jitter) for each further one.
    pub retry_backoff_ms: u64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            load_factor: 1.25,
            virtual_nodes: 64,
            max_attempts: 3,
            taskmanager_retries: 5,
            quarantine_ms: 60_000,
            strikes_to_mark_down: 3,
            hedge_min_ms: 100,
            hedge_max_ms: 400,
            extra_work_ratio: 0.1,
            extra_work_per_second: 5,
            retry_backoff_ms: 25,
        }
    }
}

/// Admission control: a global bound, and per tenant a concurrency limit and a bounded queue.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Queries running at once over all tenants (from admission to the end of the result).
    pub max_in_flight: usize,
    /// Default for a tenant's queries running at once.
    pub tenant_max_concurrent: usize,
    /// Default for how many of a tenant's queries may wait for a slot; more get 429.
    pub tenant_queue_length: usize,
    /// Default for how long a tenant's query may wait, in milliseconds; longer gets 429.
    pub tenant_max_wait_ms: u64,
    /// Distinct tenants tracked at once (idle ones are forgotten first); more get 429.
    pub max_tenants: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            tenant_max_concurrent: 64,
            tenant_queue_length: 256,
            tenant_max_wait_ms: 10_000,
            max_tenants: 1024,
        }
    }
}

/// One tenant's own settings; unset fields take the `[admission]` defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Its queries running at once.
    pub max_concurrent: Option<usize>,
    /// How many of its queries may wait.
    pub queue_length: Option<usize>,
    /// How long one of its queries may wait, in milliseconds.
    pub max_wait_ms: Option<u64>,
    /// The TaskManager pool its queries run on (default `default`).
    pub pool: Option<String>,
    /// Most rows one of its results may have (0: no limit).
    pub max_result_rows: Option<u64>,
    /// Most bytes of Arrow data one of its results may have (0: no limit).
    pub max_result_bytes: Option<u64>,
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

    /// Moves deprecated settings to their replacements, warning once for each one set.
    pub fn apply_deprecated(&mut self) {
        if let Some(ms) = self.shards.connect_timeout_ms.take() {
            tracing::warn!(
                connect_timeout_ms = ms,
                "shards.connect_timeout_ms is deprecated and will be removed: \
                 set cluster.connect_timeout_ms instead (it applies to every internal connection)"
            );
            self.cluster.connect_timeout_ms = ms;
        }
    }

    /// Checks what serde cannot: limits that must be positive.
    pub fn validate(&self) -> Result<(), String> {
        let admission = &self.admission;
        if admission.max_in_flight == 0 || admission.tenant_max_concurrent == 0 {
            return Err(
                "admission.max_in_flight and admission.tenant_max_concurrent must be at least 1"
                    .into(),
            );
        }
        if self.query.timeout_ms == 0 {
            return Err("query.timeout_ms must be at least 1".into());
        }
        if self.routing.hedge_min_ms > self.routing.hedge_max_ms {
            return Err("routing.hedge_min_ms must not exceed routing.hedge_max_ms".into());
        }
        if !(0.0..=10.0).contains(&self.routing.extra_work_ratio) {
            return Err("routing.extra_work_ratio must be between 0 and 10".into());
        }
        if admission.max_tenants == 0 {
            return Err("admission.max_tenants must be at least 1".into());
        }
        let flight = &self.flight;
        if flight.tenant_max_prepared_statements == 0 {
            return Err("flight.tenant_max_prepared_statements must be at least 1".into());
        }
        if flight.ticket_ttl_ms == 0 || flight.prepared_idle_ms == 0 {
            return Err(
                "flight.ticket_ttl_ms and flight.prepared_idle_ms must be at least 1".into(),
            );
        }
        if flight.listen == Some(self.http.listen) && self.http.listen.port() != 0 {
            return Err("flight.listen must differ from http.listen".into());
        }
        for (name, tenant) in &self.tenants {
            if tenant.max_concurrent == Some(0) {
                return Err(format!("tenants.{name}.max_concurrent must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deprecated_connect_timeout_moves_to_the_cluster_section() {
        let mut config: Config = toml::from_str("[shards]\nconnect_timeout_ms = 250\n").unwrap();
        config.apply_deprecated();
        assert_eq!(config.cluster.connect_timeout_ms, 250);
        assert_eq!(config.shards.connect_timeout_ms, None);

        let mut config = Config::default();
        config.cluster.connect_timeout_ms = 700;
        config.apply_deprecated();
        assert_eq!(config.cluster.connect_timeout_ms, 700);
    }
}
