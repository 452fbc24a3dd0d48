//! The request and response types that travel down the tower stack.

use crate::control::Timeline;
use arrow_flight::FlightData;
use flotilla_protocol::{QueryId, TraceContext};
use futures::stream::BoxStream;
use std::sync::Arc;
use std::time::Duration;

/// A query admitted by the HTTP edge.
#[derive(Clone, Debug)]
pub struct QueryRequest {
    /// The query's id.
    pub query_id: QueryId,
    /// The SQL text.
    pub sql: String,
    /// Values of its placeholders: an Arrow IPC stream of one row; empty when it has none.
    pub params: Vec<u8>,
    /// The explicit routing key, when the client sent one.
    pub routing_key: Option<String>,
    /// The tenant it runs for.
    pub tenant: String,
    /// The TaskManager pool it must run on; set by admission from the tenant's config.
    pub pool: String,
    /// How long it may run, from admission to its last byte.
    pub timeout: Duration,
    /// Its record: phase times, shard, TaskManager, outcome; and its trace context.
    pub timeline: Arc<Timeline>,
    /// The client asked for a fresh answer (`cache-control: no-cache`): no result cache.
    pub no_cache: bool,
}

impl QueryRequest {
    /// Returns a request for the default tenant and pool.
    pub fn new(query_id: QueryId, sql: impl Into<String>) -> Self {
        Self {
            query_id,
            sql: sql.into(),
            params: Vec::new(),
            routing_key: None,
            tenant: flotilla_protocol::DEFAULT_TENANT.to_string(),
            pool: flotilla_protocol::DEFAULT_POOL.to_string(),
            timeout: Duration::from_secs(300),
            timeline: Arc::new(Timeline::new(query_id, TraceContext::root())),
            no_cache: false,
        }
    }

    /// Returns the key the ring hashes: the routing key, else the normalized SQL text, so
    /// repeated queries land on the shard whose caches know them.
    pub fn ring_key(&self) -> String {
        match &self.routing_key {
            Some(key) => key.clone(),
            None => normalized(&self.sql),
        }
    }
}

/// A query's timeout: the gateway's (`query.timeout_ms`), or less when the client's
/// `x-flotilla-timeout-ms` asks for less (HTTP header and Flight SQL call metadata alike).
pub(crate) fn query_timeout(
    header: Option<&str>,
    default: Duration,
) -> Result<Duration, crate::error::GatewayError> {
    let Some(text) = header.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Duration::from_millis(millis).min(default)),
        _ => Err(crate::error::GatewayError::BadRequest(format!(
            "{} must be a whole number of milliseconds, at least 1; got `{text}`",
            flotilla_protocol::TIMEOUT_HEADER
        ))),
    }
}

/// The SQL text as the ring hashes it: whitespace collapsed, lower case.
pub(crate) fn normalized(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// A query bound to one shard by the route layer.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The shard's address.
    pub shard: String,
    /// The query.
    pub request: QueryRequest,
    /// TaskManagers the shard should not run this attempt on when others can take it.
    pub avoid: Vec<String>,
}

/// The Flight messages of a result, as a TaskManager sends them.
pub type Messages = BoxStream<'static, Result<FlightData, tonic::Status>>;

/// Reads `messages` up to its first record batch (or its end): the schema and dictionaries
/// come first, and a result that fails before its first batch fails here, as the query's
/// status rather than as a broken stream. Returns those messages and the rest of the stream.
pub(crate) async fn first_batch(
    mut messages: Messages,
) -> Result<(Vec<FlightData>, Messages), crate::error::GatewayError> {
    use futures::StreamExt;
    let mut head = Vec::new();
    while let Some(message) = messages.next().await {
        let message =
            message.map_err(|status| crate::error::GatewayError::Remote((&status).into()))?;
        let is_batch = crate::shard::batch_rows(&message).is_some();
        head.push(message);
        if is_batch {
            break;
        }
    }
    Ok((head, messages))
}

/// What the result cache did for a query, as the shard said it.
#[derive(Clone, Debug)]
pub struct CacheReport {
    /// `hit`, `miss`, `bypass` or `uncachable`.
    pub outcome: String,
    /// The tables the result was read from, `name@version, ...`.
    pub table_versions: String,
}

/// Says whether a `cache-control` value asks for a fresh answer (`no-cache` or `no-store`).
pub(crate) fn wants_fresh(cache_control: Option<&str>) -> bool {
    cache_control.is_some_and(|value| {
        value
            .split(',')
            .map(|directive| directive.trim().to_ascii_lowercase())
            .any(|directive| directive == "no-cache" || directive == "no-store")
    })
}

/// A result whose first Flight message (the schema) has arrived: from here on, bytes can flow
/// to the client.
pub struct QueryResult {
    /// The shard that planned the query.
    pub shard: String,
    /// The TaskManager streaming the result; `None` when the shard answered itself (catalog).
    pub taskmanager: Option<String>,
    /// What the result cache did, when the shard said.
    pub cache: Option<CacheReport>,
    /// Every Flight message of the result, the already-received first one included.
    pub messages: Messages,
}

impl std::fmt::Debug for QueryResult {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("QueryResult")
            .field("shard", &self.shard)
            .field("taskmanager", &self.taskmanager)
            .finish_non_exhaustive()
    }
}
