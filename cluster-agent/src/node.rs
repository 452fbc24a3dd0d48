//! Runs one agent process: its gRPC services on one listener and its HTTP admin service
//! (`/healthz`, `/metrics`, `/v1/state`) on another, until told to stop.

use crate::config::Role;
use bytes::Bytes;
use flotilla_protocol::{NodeInfo, NodeRole};
use gateway::Gossip;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus::{Encoder, Registry, TextEncoder};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Returns the node's state as JSON, for `/v1/state`.
pub type StateView = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// Refreshes gauges that are read rather than counted, before a scrape.
pub type RefreshGauges = Arc<dyn Fn() + Send + Sync>;

/// A running agent: where it listens, and how to stop it.
pub struct NodeHandle {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP admin address.
    pub admin_addr: SocketAddr,
    /// Its gossip membership.
    pub gossip: Gossip,
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

    /// Announces the drain over gossip, gives peers a few gossip rounds to see it, stops
    /// accepting, lets in-flight calls finish, and leaves gossip.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.gossip.set_draining().await;
        let rounds = std::time::Duration::from_millis(self.gossip.config().interval_ms * 3);
        tokio::time::sleep(rounds.min(std::time::Duration::from_secs(2))).await;
        let _ = self.shutdown.send(true);
        self.grpc_task.await??;
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
}

impl NodeListeners {
    /// Binds both listeners.
    pub(crate) async fn bind(
        role: Role,
        grpc_listen: SocketAddr,
        admin_listen: SocketAddr,
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
        Ok(Self {
            grpc_addr: grpc.local_addr()?,
            admin_addr: admin.local_addr()?,
            grpc,
            admin,
        })
    }

    /// Returns this node's gossip identity with its addresses filled in.
    pub(crate) fn node_info(&self, id: String, role: Role, pool: Option<String>) -> NodeInfo {
        NodeInfo {
            id,
            role: match role {
                Role::JobManager => NodeRole::JobManager,
                Role::TaskManager => NodeRole::TaskManager,
            },
            version: env!("CARGO_PKG_VERSION").to_string(),
            grpc_url: Some(format!("http://{}", self.grpc_addr)),
            http_addr: None,
            admin_addr: Some(self.admin_addr.to_string()),
            pool,
            draining: false,
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
    state: StateView,
    refresh: RefreshGauges,
) -> anyhow::Result<NodeHandle> {
    let NodeListeners {
        grpc: grpc_listener,
        admin: admin_listener,
        grpc_addr,
        admin_addr,
    } = listeners;
    let (shutdown, mut stopped) = watch::channel(false);

    // Small answers (hand-overs, FlightInfo, first batches) must not wait for delayed ACKs.
    let incoming =
        tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    let mut grpc_stopped = stopped.clone();
    let grpc_task =
        gateway::spawn_instrumented(router.serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stopped.wait_for(|stop| *stop).await;
        }));

    let admin = Arc::new(Admin {
        role,
        registry,
        state,
        refresh,
        gossip: gossip.clone(),
    });
    gateway::spawn_instrumented(async move {
        loop {
            let accepted = tokio::select! {
                accepted = admin_listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let admin = Arc::clone(&admin);
            gateway::spawn_instrumented(async move {
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
        shutdown,
        grpc_task,
    })
}

struct Admin {
    role: Role,
    registry: Registry,
    state: StateView,
    refresh: RefreshGauges,
    gossip: Gossip,
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
            ("GET", "/v1/state") => {
                let mut state = (self.state)();
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
