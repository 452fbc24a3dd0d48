//! The request and response types that travel down the tower stack.

use arrow_flight::FlightData;
use flotilla_protocol::QueryId;
use futures::stream::BoxStream;

/// A query admitted by the HTTP edge.
#[derive(Clone, Debug)]
pub struct QueryRequest {
    /// The query's id.
    pub query_id: QueryId,
    /// The SQL text.
    pub sql: String,
    /// The explicit routing key, when the client sent one.
    pub routing_key: Option<String>,
}

impl QueryRequest {
    /// Returns the key the ring hashes: the routing key, else the normalized SQL text, so
    /// repeated queries land on the shard whose caches know them.
    pub fn ring_key(&self) -> String {
        match &self.routing_key {
            Some(key) => key.clone(),
            None => self
                .sql
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase(),
        }
    }
}

/// A query bound to one shard by the route layer.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The shard's address.
    pub shard: String,
    /// The query.
    pub request: QueryRequest,
}

/// A result whose first Flight message (the schema) has arrived: from here on, bytes can flow
/// to the client.
pub struct QueryResult {
    /// The shard that planned the query.
    pub shard: String,
    /// The TaskManager streaming the result.
    pub taskmanager: String,
    /// Every Flight message of the result, the already-received first one included.
    pub messages: BoxStream<'static, Result<FlightData, tonic::Status>>,
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
