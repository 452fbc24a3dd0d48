//! Flotilla's gateway: takes SQL over HTTP, routes it to a JobManager shard, and streams the
//! Arrow result from the TaskManager that holds it, never buffering a whole result.

#![forbid(unsafe_code)]

mod admission;
mod cluster;
mod config;
mod control;
mod error;
mod gossip;
mod http;
mod layered;
mod membership;
mod metrics;
mod process_metrics;
mod query;
mod route;
mod server;
mod shard;
mod stack;
mod telemetry;
mod tls;

pub use admission::{Admission, AdmissionLayer};
pub use cluster::{ClusterConfig, ClusterSecret, InternalTls};
pub use config::{
    AdmissionConfig, Config, HttpConfig, QueryConfig, RoutingConfig, ShardsConfig,
    TaskManagersConfig, TenantConfig,
};
pub use control::{
    Control, ControlLayer, PhaseDurations, Registry as QueryRegistry, RunningQuery, Timeline,
};
pub use error::{BoxError, GatewayError};
pub use gossip::{ClusterView, Gossip, GossipConfig, GossipMembership, LoadSource, Peer};
pub use http::{Gateway, Members, ResponseBody};
pub use layered::load_layered;
pub use membership::{Health, Member, Membership, StaticMembership};
pub use metrics::{GatewayMetrics, process_registry};
pub use query::{QueryRequest, QueryResult, Routed};
pub use route::{Route, RouteLayer};
pub use server::{GatewayHandle, shutdown_signal, start_gateway};
pub use shard::ShardClient;
pub use stack::{QueryService, query_stack};
pub use telemetry::{LogConfig, LogFormat, init_tracing, spawn_instrumented};
pub use tls::{TlsConfig, self_signed};
