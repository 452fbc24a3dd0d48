//! What every Flotilla process and the client must agree on: query ids, error codes, header
//! names, media types and the gateway → shard query command. No logic lives here.

#![forbid(unsafe_code)]

mod command;
mod error;
mod headers;
mod media;
mod query_id;

pub use command::QueryCommand;
pub use error::{ErrorBody, ErrorCode, ErrorEnvelope};
pub use headers::{QUERY_ID_HEADER, ROUTING_KEY_HEADER, TENANT_HEADER};
pub use media::MediaType;
pub use query_id::QueryId;
