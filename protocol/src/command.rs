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
}

impl QueryCommand {
    /// Encodes the command as a descriptor's `cmd` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a descriptor's `cmd` bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
