//! What every Flotilla process runs to join and trust the cluster: gossip membership (gateways
//! and shards), load reports (TaskManagers to shards), the cluster secret and internal TLS,
//! the keys that seal membership datagrams and sign internal calls, layered config loading, telemetry, process metrics and the shutdown signal. Wire agreements stay in `flotilla-protocol`; this crate holds the logic.

#![forbid(unsafe_code)]

mod address;
mod families;
mod gossip;
pub mod keys;
mod layered;
mod liveness;
mod membership;
mod process_metrics;
pub mod reports;
mod secret;
mod shutdown;
mod telemetry;
mod tls;

pub use address::advertised_address;
pub use families::{Families, check_families};
pub use gossip::{
    ClusterView, Gossip, GossipConfig, GossipMembership, LoadSource, Peer, chitchat_config,
};
pub use layered::{load_layered, parse_set};
pub use liveness::Liveness;
pub use membership::{Health, Member, Membership, StaticMembership};
pub use process_metrics::process_registry;
pub use secret::{ClusterConfig, ClusterSecret, InternalTls};
pub use shutdown::shutdown_signal;
pub use telemetry::{
    LogConfig, LogFormat, incoming_trace, init_tracing, inject_child_trace, spawn_instrumented,
};
pub use tls::{CertPair, self_signed, use_ring_provider};
