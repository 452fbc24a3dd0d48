//! Runs one agent process: its gRPC services on one listener and its HTTP admin service
//! (`/healthz`, `/metrics`, `/v1/state`) on another, until told to stop.

use crate::config::Role;
use bytes::Bytes;
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
    shutdown: watch::Sender<bool>,
    grpc_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl NodeHandle {
    /// Returns the line a parent process or test reads to learn the bound addresses.
    pub fn listening_line(&self, role: Role) -> String {
        format!(
            "LISTENING role={} grpc={} admin={}",
            role.as_str(),
            self.grpc_addr,
            self.admin_addr
        )
    }

    /// Stops accepting, lets in-flight calls finish, and waits for the gRPC server to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.grpc_task.await??;
        Ok(())
    }
}

/// Binds both listeners and serves `router` and the admin endpoints.
pub(crate) async fn serve_node(
    role: Role,
    grpc_listen: SocketAddr,
    admin_listen: SocketAddr,
    router: tonic::transport::server::Router,
    registry: Registry,
    state: StateView,
    refresh: RefreshGauges,
) -> anyhow::Result<NodeHandle> {
    let grpc_listener = TcpListener::bind(grpc_listen).await.map_err(|error| {
        anyhow::anyhow!(
            "cannot listen on {grpc_listen} for {}: {error}",
            role.as_str()
        )
    })?;
    let admin_listener = TcpListener::bind(admin_listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {admin_listen} for admin: {error}"))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
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
        shutdown,
        grpc_task,
    })
}

struct Admin {
    role: Role,
    registry: Registry,
    state: StateView,
    refresh: RefreshGauges,
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
