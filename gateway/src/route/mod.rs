//! Routes each query to a shard: consistent hashing of the routing key over the healthy shards,
//! skipping shards above the bounded-load limit, retrying on the next shard when one fails
//! before the result started (within a budget and the deadline), and hedging an attempt
//! that is slow to start (`hedge.rs`), steering around TaskManagers that stop answering
//! (`sideline.rs`).

mod hedge;
mod layer;
mod quarantine;
pub(crate) mod ring;
mod service;
mod sideline;
mod together;

pub use layer::RouteLayer;
pub use service::Route;
pub use sideline::Probe;
