//! Starts the Flight SQL front door: its own port, TLS with `[tls]`, a sweeper that ends
//! unfetched results and idle prepared statements.

use super::metadata::sql_info;
use super::prepared::Prepared;
use super::results::Results;
use super::shards::Shards;
use super::state::{FlightSql, Inner};
use super::tickets::Tickets;
use crate::admission::Tenants;
use crate::auth::Auth;
use crate::config::Config;
use crate::control::Registry as QueryRegistry;
use crate::limits::TenantLimits;
use crate::metrics::GatewayMetrics;
use crate::route::ring::RingCache;
use crate::shard::ShardClient;
use crate::stack::QueryService;
use arrow_flight::flight_service_server::FlightServiceServer;
use flotilla_cluster::Membership;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Largest message a client may send (parameter values) or be sent, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A running Flight SQL front door.
pub(crate) struct FlightServer {
    /// The bound address.
    pub(crate) addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FlightServer {
    /// Waits for the server to stop (after the gateway's shutdown signal).
    pub(crate) async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Binds `flight.listen` (when set) and serves Flight SQL until `stopped` turns true.
pub(crate) async fn start(
    config: &Config,
    queries: QueryService,
    tenants: Arc<Tenants>,
    running: Arc<QueryRegistry>,
    shards: Arc<dyn Membership>,
    metrics: GatewayMetrics,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Option<FlightServer>> {
    let Some(listen) = config.flight.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {listen} (flight.listen): {error}"))?;
    let addr = listener.local_addr()?;
    let flight = &config.flight;
    let service = FlightSql::new(Inner {
        queries,
        tenants,
        auth: Auth::new(&config.auth)?,
        limits: TenantLimits::new(config),
        timeout: Duration::from_millis(config.query.timeout_ms),
        max_request_bytes: config.http.max_body_bytes,
        running,
        metrics,
        shards: Shards {
            members: shards,
            ring: RingCache::new(config.routing.virtual_nodes),
            client: ShardClient::new(
                Duration::from_millis(config.shards.first_result_timeout_ms),
                config.cluster.secret(),
            ),
            attempts: config.routing.max_attempts,
        },
        results: Results::new(Duration::from_millis(flight.ticket_ttl_ms)),
        tickets: Tickets::new(
            config
                .cluster
                .sealer(flotilla_cluster::keys::Traffic::Tickets),
            Duration::from_millis(flight.ticket_ttl_ms),
        ),
        prepared: Prepared::new(
            flight.max_prepared_statements,
            flight.tenant_max_prepared_statements,
            Duration::from_millis(flight.prepared_idle_ms),
        ),
        sql_info: sql_info()?,
        xdbc_types: super::types::xdbc_types()?,
    });
    let sweeper = service.clone();
    let mut sweeper_stopped = stopped.clone();
    flotilla_cluster::spawn_instrumented(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => sweeper.sweep(),
                _ = sweeper_stopped.wait_for(|stop| *stop) => break,
            }
        }
    });
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = config.tls.grpc()? {
        server = server.tls_config(tls)?;
    }
    let router = server.add_service(
        FlightServiceServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    );
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = flotilla_cluster::spawn_instrumented(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
        {
            tracing::error!(%error, "the Flight SQL server failed");
        }
    });
    tracing::info!(%addr, tls = config.tls.enabled(), "Flight SQL listening");
    Ok(Some(FlightServer { addr, task }))
}

impl FlightSql {
    /// Ends results nobody fetched in time and closes idle prepared statements.
    fn sweep(&self) {
        let expired = self.inner.results.expire();
        let closed = self.inner.prepared.expire();
        if expired + closed > 0 {
            tracing::debug!(
                expired,
                closed,
                waiting = self.inner.results.len(),
                "Flight SQL sweep"
            );
        }
    }
}
