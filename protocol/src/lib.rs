//! What every Flotilla process and the client must agree on: query ids, error codes, header
//! names, media types, the gateway → shard query command and the gossiped node state. No logic lives here.

#![forbid(unsafe_code)]

mod command;
mod error;
mod headers;
mod media;
mod node_state;
mod query_id;
mod trace;

pub use command::{
    CACHE_TICKET_PREFIX, CATALOG_ACTION, DEFAULT_POOL, DEFAULT_TENANT, DESCRIBE_ACTION,
    HANDOVER_TICKET_PREFIX, QueryCommand, QueryPlacement, TASKMANAGERS_ACTION, TaskManagersRequest,
};
pub use error::{ErrorBody, ErrorCode, ErrorEnvelope};
pub use headers::{
    CACHE_HEADER, CLUSTER_SECRET_HEADER, QUERY_ID_HEADER, ROUTING_KEY_HEADER, SHARD_HEADER,
    TABLE_VERSIONS_HEADER, TASKMANAGER_HEADER, TENANT_HEADER, TIMEOUT_HEADER,
};
pub use media::MediaType;
pub use node_state::{LOAD_KEY, NODE_KEY, NodeInfo, NodeLoad, NodeRole};
pub use query_id::QueryId;
pub use trace::{TRACEPARENT_HEADER, TraceContext};
