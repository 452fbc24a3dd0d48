//! Starts the gateway: binds the listener, builds the stack, serves HTTP/1.1 and HTTP/2.

use crate::config::Config;
use crate::http::Gateway;
use crate::metrics::GatewayMetrics;
use flotilla_cluster::{Gossip, GossipMembership, LoadSource, Membership, StaticMembership};
use flotilla_protocol::{NodeInfo, NodeLoad, NodeRole};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running gateway: where it listens, and how to stop it.
pub struct GatewayHandle {
    /// The bound HTTP address.
    pub addr: SocketAddr,
    /// The bound Flight SQL address, when `flight.listen` is set.
    pub flight_addr: Option<SocketAddr>,
    flight: Option<crate::flight::FlightServer>,
    /// Its gossip membership, unless shards are a fixed list.
    pub gossip: Option<Gossip>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GatewayHandle {
    /// Returns the line a parent process or test reads to learn the bound addresses.
    pub fn listening_line(&self) -> String {
        let mut line = format!("LISTENING role=gateway http={}", self.addr);
        if let Some(flight) = self.flight_addr {
            line.push_str(&format!(" flight={flight}"));
        }
        if let Some(gossip) = &self.gossip {
            line.push_str(&format!(" gossip={}", gossip.addr()));
        }
        line
    }

    /// Announces the drain, stops accepting and waits (at most 30 s) for open responses.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(gossip) = &self.gossip {
            gossip.set_draining().await;
        }
        let _ = self.shutdown.send(true);
        self.task.await?;
        if let Some(flight) = self.flight {
            flight.stopped().await;
        }
        if let Some(gossip) = self.gossip {
            gossip.shutdown().await;
        }
        Ok(())
    }
}

/// Starts a gateway with `config`, registering its metrics in `registry`.
pub async fn start_gateway(
    mut config: Config,
    registry: Registry,
) -> anyhow::Result<GatewayHandle> {
    config.apply_deprecated();
    config.validate().map_err(anyhow::Error::msg)?;
    config.cluster.warn_if_open();
    config.cluster.tls()?;
    if config.shards.addresses.is_empty() && config.gossip.seeds.is_empty() {
        anyhow::bail!(
            "no shards to route to: set gossip.seeds (discovery) or shards.addresses (a fixed list)"
        );
    }
    let tls = config.tls.acceptor()?;
    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.http.listen))?;
    let addr = listener.local_addr()?;
    let metrics = GatewayMetrics::new(&registry)?;
    let (shards, taskmanagers, gossip) = if config.shards.addresses.is_empty() {
        let in_flight = metrics.shard_in_flight.clone();
        let advertised = flotilla_cluster::advertised_address(
            "http.advertise",
            addr,
            config.http.advertise.as_deref(),
            &config.gossip.seeds,
        )
        .await?;
        let info = NodeInfo {
            id: format!("gateway-{}", std::process::id()),
            role: NodeRole::Gateway,
            version: env!("CARGO_PKG_VERSION").to_string(),
            grpc_url: None,
            http_addr: Some(advertised.clone()),
            admin_addr: Some(advertised),
            pool: None,
            draining: false,
            starting: false,
            previous_exit: None,
        };
        let load: LoadSource = Arc::new(move || NodeLoad {
            in_flight: total_in_flight(&in_flight),
            ..NodeLoad::default()
        });
        let gossip = Gossip::start(
            config.gossip.clone(),
            config
                .cluster
                .sealer(flotilla_cluster::keys::Traffic::Gossip),
            info,
            load,
        )
        .await?;
        let shards: Arc<dyn Membership> =
            Arc::new(GossipMembership::new(gossip.clone(), NodeRole::JobManager));
        (shards, None, Some(gossip))
    } else {
        let probe_interval = Duration::from_millis(config.shards.probe_interval_ms.max(10));
        let shards = StaticMembership::new(config.shards.addresses.clone());
        shards.spawn_prober(probe_interval);
        let taskmanagers = StaticMembership::new(config.taskmanagers.addresses.clone());
        taskmanagers.spawn_prober(probe_interval);
        let shards: Arc<dyn Membership> = shards;
        let taskmanagers: Arc<dyn Membership> = taskmanagers;
        (shards, Some(taskmanagers), None)
    };
    let running = crate::control::Registry::with_history(config.query.history);
    let tenants = Arc::new(crate::admission::Tenants::new(
        config.admission.clone(),
        config.tenants.clone(),
        metrics.clone(),
    ));
    let queries = crate::stack::query_stack(
        &config,
        Arc::clone(&shards),
        Arc::clone(&running),
        Arc::clone(&tenants),
        metrics.clone(),
    );
    let (shutdown, stopped) = watch::channel(false);
    let flight = crate::flight::start(
        &config,
        queries.clone(),
        tenants,
        Arc::clone(&running),
        Arc::clone(&shards),
        metrics.clone(),
        stopped.clone(),
    )
    .await?;
    let gateway = Gateway::new(
        &config,
        queries,
        running,
        crate::http::Members {
            shards,
            taskmanagers,
            gossip: gossip.clone(),
        },
        metrics,
        registry,
    )?;
    let task = flotilla_cluster::spawn_instrumented(serve(listener, tls.clone(), gateway, stopped));
    tracing::info!(%addr, tls = tls.is_some(), "gateway listening");
    Ok(GatewayHandle {
        addr,
        flight_addr: flight.as_ref().map(|flight| flight.addr),
        flight,
        gossip,
        shutdown,
        task,
    })
}

fn total_in_flight(gauges: &prometheus::IntGaugeVec) -> u64 {
    use prometheus::core::Collector;
    gauges
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_gauge().get_value().max(0.0) as u64)
        .sum()
}

/// Longest a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    gateway: Gateway,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let watcher = graceful.watcher();
        match &tls {
            None => {
                flotilla_cluster::spawn_instrumented(serve_connection(stream, gateway, watcher))
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                flotilla_cluster::spawn_instrumented(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(stream)) => serve_connection(stream, gateway, watcher).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                })
            }
        };
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open responses did not finish within 30 s");
    }
}

/// Serves HTTP/1.1 and HTTP/2 on one accepted connection, until it ends or the gateway stops.
async fn serve_connection<S>(
    stream: S,
    gateway: Gateway,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let gateway = gateway.clone();
        async move { Ok::<_, std::convert::Infallible>(gateway.handle(request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}
