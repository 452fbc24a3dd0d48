//! Routes each query to a shard: consistent hashing of the routing key over the healthy shards,
//! skipping shards above the bounded-load limit, retrying on the next shard when one fails
//! before the result started.

mod layer;
mod quarantine;
pub(crate) mod ring;
mod service;

pub use layer::RouteLayer;
pub use service::Route;
