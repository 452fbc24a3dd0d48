//! One attempt of a query on one shard: ask the shard where the result is (`GetFlightInfo`),
//! then open it on the named TaskManager (`DoGet`) and wait for its first message.

mod service;

pub use service::ShardClient;
pub(crate) use service::batch_rows;
