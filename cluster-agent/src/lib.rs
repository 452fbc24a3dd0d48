//! Flotilla's cluster agent: one binary that runs a JobManager shard, a TaskManager, the
//! gateway, or a whole local federation of them as separate processes.

#![forbid(unsafe_code)]

mod bench;
mod catalog;
mod cli;
mod codec;
mod config;
mod error;
mod files;
mod flight_clients;
mod gendata;
mod handover;
mod jobmanager;
mod lease;
mod local;
mod member_flight;
mod memory;
mod node;
mod simulate;
mod taskmanager;

pub use catalog::{CatalogConfig, Location, ObjectStoreConfig, TableConfig, TableFormat};
pub use cli::{Cli, run};
pub use codec::{FlotillaCodec, decode_plan, encode_plan};
pub use config::{Config, JobManagerConfig, MemoryConfig, NodeConfig, Role, TaskManagerConfig};
pub use error::AgentError;
pub use gendata::{TPCH_TABLES, generate as generate_tpch, is_generated as is_tpch_generated};
pub use handover::{HANDOVER_ACTION, HandoverRequest, HandoverResponse};
pub use jobmanager::{JobManager, JobManagerMetrics, start_jobmanager};
pub use lease::{LeaseIds, RELEASE_ACTION, RESERVE_ACTION, ReserveRequest};
pub use node::{Drain, NodeHandle};
pub use taskmanager::{TaskManager, TaskManagerMetrics, start_taskmanager};

/// jemalloc, for its per-thread allocation counters: they are what the memory guard charges
/// each query with (`memory/account.rs`), read without a call or a lock.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
