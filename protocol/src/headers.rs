//! HTTP header names of the public API.

/// Carries the query id on every gateway response.
pub const QUERY_ID_HEADER: &str = "x-flotilla-query-id";
/// Chooses the shard by consistent hashing instead of the SQL text.
pub const ROUTING_KEY_HEADER: &str = "x-flotilla-routing-key";
/// Names the tenant a query runs for.
pub const TENANT_HEADER: &str = "x-flotilla-tenant";
/// Asks for a shorter query timeout than the gateway's default, in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-flotilla-timeout-ms";
/// Names the TaskManager a result streams from (for operators and tests).
pub const TASKMANAGER_HEADER: &str = "x-flotilla-taskmanager";
/// Names the shard that planned the query (for operators and tests).
pub const SHARD_HEADER: &str = "x-flotilla-shard";
/// Says what the result cache did for a query (`hit`, `miss`, `bypass`, `uncachable`) on a
/// response; Flight SQL answers carry it in their metadata.
pub const CACHE_HEADER: &str = "x-flotilla-cache";
/// Names the versions of the tables a result was read from (`name@version, ...`), with
/// [`CACHE_HEADER`].
pub const TABLE_VERSIONS_HEADER: &str = "x-flotilla-table-versions";
/// Carries a cluster secret on an admin drain (`POST /admin/drain`, called on the member's own
/// host). Internal gRPC calls carry a signature instead (`x-flotilla-cluster-auth`).
pub const CLUSTER_SECRET_HEADER: &str = "x-flotilla-cluster-secret";
