//! Runs one agent process: its gRPC services on one listener and its HTTP admin service
//! (`/healthz`, `/metrics`, `/v1/state`, `POST /admin/drain`) on another, until told to stop.
//!
//! Stopping is a drain: the node refuses new work (its services read [`Drain::is_draining`]),
//! announces `draining` over gossip so peers stop choosing it, waits until its running work is
//! done (or `node.drain_timeout_ms`), then closes its listeners and leaves gossip.

use crate::config::Role;
use bytes::Bytes;
use flotilla_cluster::Gossip;
use flotilla_protocol::{NodeInfo, NodeRole};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Returns the node's state as JSON, for `/v1/state`.
pub type StateView = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// Refreshes gauges that are read rather than counted, before a scrape.
pub type RefreshGauges = Arc<dyn Fn() + Send + Sync>;

/// Says whether the node's work is done (nothing planning, leased or streaming).
pub type IdleCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// The drain state a node's services consult: set once, never cleared.
#[derive(Clone)]
pub struct Drain {
    draining: Arc<AtomicBool>,
    requested: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: Arc::default(),
            requested: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// Says whether the node is draining: it must take no new work.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Asks the node to drain and exit (what `POST /admin/drain` does).
    pub fn request(&self) {
        self.requested.send_replace(true);
    }

    /// Waits until a drain is requested through [`Drain::request`].
    pub async fn requested(&self) {
        let mut requested = self.requested.subscribe();
        let _ = requested.wait_for(|requested| *requested).await;
    }
}

/// A running agent: where it listens, and how to stop it.
pub struct NodeHandle {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP admin address.
    pub admin_addr: SocketAddr,
    /// Its gossip membership.
    pub gossip: Gossip,
    /// Its drain state.
    pub drain: Drain,
    idle: IdleCheck,
    drain_timeout: Duration,
    shutdown: watch::Sender<bool>,
    grpc_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl NodeHandle {
    /// Returns the line a parent process or test reads to learn the bound addresses.
    pub fn listening_line(&self, role: Role) -> String {
        format!(
            "LISTENING role={} grpc={} admin={} gossip={}",
            role.as_str(),
            self.grpc_addr,
            self.admin_addr,
            self.gossip.addr()
        )
    }

    /// Drains: refuses new work, announces `draining` over gossip and gives peers a few gossip
    /// rounds to see it, waits for running work (at most the drain timeout), then stops
    /// accepting, lets open calls finish, and leaves gossip.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.drain.draining.store(true, Ordering::Release);
        self.gossip.set_draining().await;
        let rounds = Duration::from_millis(self.gossip.config().interval_ms * 3);
        tokio::time::sleep(rounds.min(Duration::from_secs(2))).await;
        let deadline = started + self.drain_timeout;
        while !(self.idle)() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    timeout_ms = self.drain_timeout.as_millis() as u64,
                    "drain timeout reached with work still running; stopping anyway"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(drained_ms = started.elapsed().as_millis() as u64, "drained");
        let _ = self.shutdown.send(true);
        // Open connections get GOAWAY; calls still running are cut after a grace period.
        match tokio::time::timeout(Duration::from_secs(5), self.grpc_task).await {
            Ok(joined) => joined??,
            Err(_) => tracing::warn!("gRPC calls still open 5 s after the drain; exiting"),
        }
        self.gossip.shutdown().await;
        Ok(())
    }
}

/// A node's listeners, bound before its services are built so that its gossip state can name
/// the real addresses.
pub(crate) struct NodeListeners {
    grpc: TcpListener,
    admin: TcpListener,
    /// The bound gRPC address.
    pub(crate) grpc_addr: SocketAddr,
    /// The bound HTTP admin address.
    pub(crate) admin_addr: SocketAddr,
    /// The `host:port` peers are told to call for gRPC.
    grpc_advertised: String,
    /// The `host:port` published for the admin service.
    admin_advertised: String,
}

/// The gRPC server of a shard or TaskManager: HTTP/2 keep-alives that drop a peer gone silent
/// (its streams end, its leases are released), over TLS when `cluster.tls_*` is set.
pub(crate) fn grpc_server(
    cluster: &flotilla_cluster::ClusterConfig,
) -> anyhow::Result<tonic::transport::Server> {
    let server = cluster
        .liveness()
        .server(tonic::transport::Server::builder());
    Ok(match cluster.tls()? {
        Some(tls) => server.tls_config(tls.server())?,
        None => server,
    })
}

impl NodeListeners {
    /// Binds both listeners and works out what peers are told to call for each (see
    /// [`flotilla_cluster::advertised_address`]; `seeds` are the gossip seeds). With internal
    /// TLS, refuses a certificate that peers would refuse at the advertised gRPC address.
    pub(crate) async fn bind(
        role: Role,
        (grpc_listen, grpc_advertise): (SocketAddr, Option<&str>),
        (admin_listen, admin_advertise): (SocketAddr, Option<&str>),
        seeds: &[String],
        cluster: &flotilla_cluster::ClusterConfig,
    ) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(grpc_listen).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {grpc_listen} for {}: {error}",
                role.as_str()
            )
        })?;
        let admin = TcpListener::bind(admin_listen).await.map_err(|error| {
            anyhow::anyhow!("cannot listen on {admin_listen} for admin: {error}")
        })?;
        let (grpc_addr, admin_addr) = (grpc.local_addr()?, admin.local_addr()?);
        let section = role.as_str();
        let grpc_advertised = flotilla_cluster::advertised_address(
            &format!("{section}.advertise"),
            grpc_addr,
            grpc_advertise,
            seeds,
        )
        .await?;
        if let Some(tls) = cluster.tls()? {
            tls.check_peers_accept(&grpc_advertised, &format!("{section}.advertise"))?;
        }
        let admin_advertised = flotilla_cluster::advertised_address(
            &format!("{section}.admin_advertise"),
            admin_addr,
            admin_advertise,
            seeds,
        )
        .await?;
        Ok(Self {
            grpc_addr,
            admin_addr,
            grpc_advertised,
            admin_advertised,
            grpc,
            admin,
        })
    }

    /// Returns this node's gossip identity with its addresses filled in.
    pub(crate) fn node_info(
        &self,
        id: String,
        role: Role,
        pool: Option<String>,
        cluster: &flotilla_cluster::ClusterConfig,
    ) -> NodeInfo {
        NodeInfo {
            id,
            role: match role {
                Role::JobManager => NodeRole::JobManager,
                Role::TaskManager => NodeRole::TaskManager,
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            grpc_url: Some(format!("{}://{}", cluster.scheme(), self.grpc_advertised)),
            http_addr: None,
            admin_addr: Some(self.admin_advertised.clone()),
            pool,
            draining: false,
            starting: false,
            previous_exit: None,
        }
    }
}

/// Serves `router` and the admin endpoints on the bound listeners.
pub(crate) async fn serve_node(
    role: Role,
    listeners: NodeListeners,
    gossip: Gossip,
    router: tonic::transport::server::Router,
    registry: Registry,
    views: Views,
    lifecycle: Lifecycle,
) -> anyhow::Result<NodeHandle> {
    let Views { state, refresh } = views;
    let NodeListeners {
        grpc: grpc_listener,
        admin: admin_listener,
        grpc_addr,
        admin_addr,
        ..
    } = listeners;
    let (shutdown, mut stopped) = watch::channel(false);

    // Small answers (hand-overs, FlightInfo, first batches) must not wait for delayed ACKs.
    let incoming =
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let mut grpc_stopped = stopped.clone();
    let grpc_task = flotilla_cluster::spawn_instrumented(router.serve_with_incoming_shutdown(
        incoming,
        async move {
            let _ = grpc_stopped.wait_for(|stop| *stop).await;
        },
    ));

    let admin = Arc::new(Admin {
        role,
        registry,
        state,
        refresh,
        gossip: gossip.clone(),
        drain: lifecycle.drain.clone(),
        secret: lifecycle.secret.clone(),
    });
    flotilla_cluster::spawn_instrumented(async move {
        loop {
            let accepted = tokio::select! {
                accepted = admin_listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let admin = Arc::clone(&admin);
            flotilla_cluster::spawn_instrumented(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, std::convert::Infallible>(admin.handle(&request)) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    Ok(NodeHandle {
        grpc_addr,
        admin_addr,
        gossip,
        drain: lifecycle.drain,
        idle: lifecycle.idle,
        drain_timeout: lifecycle.drain_timeout,
        shutdown,
        grpc_task,
    })
}

/// What the admin endpoints show: `/v1/state`, and gauges refreshed before a `/metrics` scrape.
pub(crate) struct Views {
    pub(crate) state: StateView,
    pub(crate) refresh: RefreshGauges,
}

/// How a node drains: its drain state, when its work is done, and how long to wait for that.
pub(crate) struct Lifecycle {
    pub(crate) drain: Drain,
    pub(crate) idle: IdleCheck,
    pub(crate) drain_timeout: Duration,
    /// Who may ask for a drain over the admin API: callers with the cluster secret.
    pub(crate) secret: flotilla_cluster::ClusterSecret,
}

struct Admin {
    role: Role,
    registry: Registry,
    state: StateView,
    refresh: RefreshGauges,
    gossip: Gossip,
    drain: Drain,
    secret: flotilla_cluster::ClusterSecret,
}

impl Admin {
    fn handle(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method().as_str(), request.uri().path()) {
            ("GET", "/healthz") => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            ("GET", "/metrics") => {
                (self.refresh)();
                let mut buffer = Vec::new();
                let encoder = TextEncoder::new();
                match encoder.encode(&self.registry.gather(), &mut buffer) {
                    Ok(()) => (
                        StatusCode::OK,
                        "text/plain; version=0.0.4",
                        Bytes::from(buffer),
                    ),
                    Err(error) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        Bytes::from(error.to_string()),
                    ),
                }
            }
            ("POST", "/admin/drain")
                if !self.secret.accepts(
                    request
                        .headers()
                        .get(flotilla_protocol::CLUSTER_SECRET_HEADER)
                        .map(|value| value.as_bytes()),
                ) =>
            {
                tracing::warn!("drain refused: the request lacks the cluster secret");
                let body = flotilla_protocol::ErrorBody::new(
                    flotilla_protocol::ErrorCode::Unauthorized,
                    format!(
                        "a drain needs the cluster secret in {}",
                        flotilla_protocol::CLUSTER_SECRET_HEADER
                    ),
                );
                (
                    StatusCode::UNAUTHORIZED,
                    "application/json",
                    Bytes::from(body.to_json()),
                )
            }
            ("POST", "/admin/drain") => {
                tracing::info!("drain requested over the admin API");
                self.drain.request();
                let body = serde_json::json!({"draining": true});
                (
                    StatusCode::ACCEPTED,
                    "application/json",
                    Bytes::from(body.to_string()),
                )
            }
            ("GET", "/v1/state") => {
                let mut state = (self.state)();
                state["draining"] = serde_json::Value::from(self.drain.is_draining());
                state["role"] = serde_json::Value::from(self.role.as_str());
                state["gossip"] = serde_json::json!(self.gossip.addr());
                state["cluster"] = serde_json::json!(*self.gossip.view());
                let body = serde_json::to_vec_pretty(&state).unwrap_or_default();
                (StatusCode::OK, "application/json", Bytes::from(body))
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"not found\n"),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, value);
        }
        response
    }
}
