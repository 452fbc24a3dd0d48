//! Flotilla's gateway: takes SQL over HTTP (`http`) and Arrow Flight SQL (`flight`), runs both
//! through one tower stack that routes it to a JobManager shard, and streams the Arrow result
//! from the TaskManager that holds it, never buffering a whole result.

#![forbid(unsafe_code)]

mod admission;
mod auth;
mod config;
mod control;
mod error;
mod flight;
mod http;
mod limits;
mod metrics;
mod outcome;
mod query;
mod route;
mod run;
mod server;
mod shard;
mod stack;
mod tls;

pub use admission::{Admission, AdmissionLayer};
pub use config::{
    AdmissionConfig, Config, FlightConfig, HttpConfig, QueryConfig, RoutingConfig, ShardsConfig,
    TaskManagersConfig, TenantConfig, UiConfig,
};
pub use control::{
    Control, ControlLayer, PhaseDurations, Protocol, Registry as QueryRegistry, RunningQuery,
    Timeline,
};
pub use error::{BoxError, GatewayError};
pub use http::{Gateway, Members, ResponseBody};
pub use metrics::GatewayMetrics;
pub use query::{QueryRequest, QueryResult, Routed};
pub use route::{Route, RouteLayer};
pub use run::{EX_SOFTWARE, EX_USAGE, run_until_signal};
pub use server::{GatewayHandle, start_gateway};
pub use shard::ShardClient;
pub use stack::QueryService;
pub use tls::TlsConfig;
