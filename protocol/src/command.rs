//! The command a gateway sends a JobManager shard in a Flight `GetFlightInfo` descriptor.

use crate::QueryId;
use serde::{Deserialize, Serialize};

/// Asks a shard to plan one query and say where its result can be fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryCommand {
    /// The query's id, assigned by the gateway.
    pub query_id: QueryId,
    /// The SQL text, one read-only statement.
    pub sql: String,
    /// The tenant the query runs for, as admitted by the gateway.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// The TaskManager pool the query must run on.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// Values of the statement's placeholders (`$1`, `$2`, ...): an Arrow IPC stream of one
    /// row, one column per placeholder in order (Flight SQL prepared-statement parameters).
    /// Empty: the statement has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<u8>,
    /// TaskManagers (gRPC URLs) this attempt should not use when others of the pool can take
    /// it: those an earlier attempt of the same query still waits on (a hedge). When every
    /// one is avoided, the shard runs the query on the one TaskManager it has the fewest
    /// unanswered calls to. Empty: no preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
    /// The client asked for a fresh answer (`cache-control: no-cache`): the result cache is
    /// neither read nor filled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
    /// The shard must hand the query over itself rather than put the hand-over in the ticket
    /// ([`HANDOVER_TICKET_PREFIX`]): an earlier attempt's ticket was refused by its TaskManager
    /// (no free slot, or already presented), and a hand-over waits for slots in the shard's
    /// queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub via_handover: bool,
}

/// Where a handed-over query runs, as a shard says it in its `FlightInfo` endpoint's
/// `app_metadata`: the TaskManagers leased for its stages (the head among them). The
/// endpoint's location is where the result is fetched; a shard's own answer (the catalog) has
/// neither.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPlacement {
    /// The TaskManagers' gRPC URLs.
    #[serde(default)]
    pub taskmanagers: Vec<String>,
    /// What the result cache did ([`CACHE_HEADER`](crate::CACHE_HEADER)): `hit`, `miss`,
    /// `bypass`, `uncachable`; empty from a shard that did not say.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cache: String,
    /// The versions of the tables the result was (or is being) read from, `name@version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_versions: Vec<String>,
}

impl QueryPlacement {
    /// Encodes the placement as `app_metadata` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes `app_metadata` bytes; empty or unreadable bytes say nothing (an older shard).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// The prefix of a ticket that names a result a TaskManager keeps in its result cache
/// (`cache:<entry id>`) rather than a handed-over plan.
pub const CACHE_TICKET_PREFIX: &str = "cache:";

/// The prefix of a ticket that carries its own hand-over (a query that runs on one
/// TaskManager: its plan and slot lease, sealed by the shard): the TaskManager reserves the
/// slots and runs it when the ticket is presented, so the shard makes no call of its own.
pub const HANDOVER_TICKET_PREFIX: &[u8] = b"handover:";

/// The `DoAction` type that asks a shard to plan a [`QueryCommand`] without running it. The
/// answer's body is a Flight SQL `ActionCreatePreparedStatementResult` (empty handle) with
/// the result's schema and the schema of its parameters.
pub const DESCRIBE_ACTION: &str = "flotilla.describe";

/// The `DoAction` type that asks a shard for the tables it serves. The answer's body is an
/// Arrow IPC stream in the shape of a Flight SQL `GetTables` result with table schemas.
pub const CATALOG_ACTION: &str = "flotilla.catalog";

/// The `DoAction` type that asks a shard for its TaskManagers: a JSON [`TaskManagersRequest`]
/// in, a JSON body out with counts by state and pool and one page of members.
pub const TASKMANAGERS_ACTION: &str = "flotilla.taskmanagers";

/// Which TaskManagers a [`TASKMANAGERS_ACTION`] lists.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TaskManagersRequest {
    /// Only this state (`up`, `suspect`, `down`, `draining`, `starting`), pool or id.
    pub filter: Option<String>,
    /// Members to skip.
    pub offset: usize,
    /// Members to return.
    pub limit: usize,
}

impl TaskManagersRequest {
    /// Reads `taskmanagers=<filter>`, `offset` and `limit` (1 to 1,000, default `page`) out of a
    /// URL query string.
    pub fn from_query(query: Option<&str>, page: usize) -> Self {
        let mut asked = Self {
            limit: page,
            ..Self::default()
        };
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "taskmanagers" if !value.is_empty() => asked.filter = Some(value.to_string()),
                "offset" => asked.offset = value.parse().unwrap_or(0),
                "limit" => asked.limit = value.parse().unwrap_or(page).clamp(1, 1000),
                _ => {}
            }
        }
        asked
    }
}

/// The tenant of queries that name none.
pub const DEFAULT_TENANT: &str = "default";
/// The pool of TaskManagers that name none, and of tenants bound to none.
pub const DEFAULT_POOL: &str = "default";

fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

fn default_pool() -> String {
    DEFAULT_POOL.to_string()
}

impl QueryCommand {
    /// A command for `sql`, of the default tenant and pool, with a fresh id.
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            query_id: QueryId::new(),
            sql: sql.into(),
            tenant: default_tenant(),
            pool: default_pool(),
            params: Vec::new(),
            avoid: Vec::new(),
            no_cache: false,
            via_handover: false,
        }
    }

    /// Encodes the command as a descriptor's `cmd` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a descriptor's `cmd` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
