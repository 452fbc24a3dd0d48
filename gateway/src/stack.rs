//! The query path as one tower stack, outermost layer first.

use crate::admission::{AdmissionLayer, Tenants};
use crate::config::Config;
use crate::control::{ControlLayer, Registry};
use crate::error::BoxError;
use crate::metrics::GatewayMetrics;
use crate::query::{QueryRequest, QueryResult};
use crate::route::RouteLayer;
use crate::shard::ShardClient;
use flotilla_cluster::Membership;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// The query service the HTTP edge calls: admitted, routed, run on a shard.
pub type QueryService = BoxCloneSyncService<QueryRequest, QueryResult, BoxError>;

/// Builds the query stack, admitting under `tenants` (which Flight SQL's prepares share). The
/// `query` span is opened by the edge (HTTP or Flight SQL), which assigns the id.
pub(crate) fn query_stack(
    config: &Config,
    shards: Arc<dyn Membership>,
    registry: Arc<Registry>,
    tenants: Arc<Tenants>,
    metrics: GatewayMetrics,
) -> QueryService {
    let client = ShardClient::new(
        Duration::from_millis(config.shards.first_result_timeout_ms),
        config.cluster.secret(),
    );
    let probe = client.prober();
    let service = ServiceBuilder::new()
        // 0. Control: the query is registered (cancel by id) and bounded by its timeout, from
        //    here to the last byte of its result; both end the result stream with an error.
        .layer(ControlLayer::new(registry))
        // 1. Admission: the tenant's concurrency limit and bounded queue, then the global
        //    bound; both permits are held until the result stream ends. Sets the pool.
        .layer(AdmissionLayer::new(tenants))
        // 2. Route: consistent hash + bounded loads over healthy shards; failed attempts are
        //    retried on the next shard before any byte reached the client.
        //    An attempt slow to start is hedged; silent TaskManagers are sidelined.
        .layer(RouteLayer::new(
            shards,
            config.routing.clone(),
            metrics,
            probe,
        ))
        // 3. One attempt: GetFlightInfo on the shard, DoGet on its TaskManager.
        .service(client);
    BoxCloneSyncService::new(service)
}
