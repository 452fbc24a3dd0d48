//! Runs one agent process: its gRPC services on one listener and its HTTP admin service
//! (`/healthz`, `/metrics`, `/v1/state`, `POST /admin/drain`) on another, until told to stop.
//!
//! Stopping is a drain: the node refuses new work (its services read [`Drain::is_draining`]),
//! announces `draining` over gossip so peers stop choosing it, waits until its running work is
//! done (or `node.drain_timeout_ms`), then closes its listeners and leaves gossip.

mod admin;
mod listeners;
mod presence;

pub(crate) use listeners::{GrpcRouter, NodeListeners, grpc_server};

use crate::config::Role;
use admin::Admin;
pub use presence::Presence;
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Returns the node's state as JSON, for `/v1/state`.
pub type StateView = Arc<dyn Fn(Option<&str>) -> serde_json::Value + Send + Sync>;
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
    /// Its membership: gossip, or reports to the shards.
    pub presence: Presence,
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
            self.presence.addr()
        )
    }

    /// Drains: refuses new work, announces `draining` over gossip and gives peers a few gossip
    /// rounds to see it, waits for running work (at most the drain timeout), then stops
    /// accepting, lets open calls finish, and leaves gossip.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let started = Instant::now();
        self.drain.draining.store(true, Ordering::Release);
        self.presence.set_draining().await;
        tokio::time::sleep(self.presence.drain_notice()).await;
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
        self.presence.shutdown().await;
        Ok(())
    }
}

/// Serves `router` and the admin endpoints on the bound listeners.
pub(crate) async fn serve_node(
    role: Role,
    listeners: NodeListeners,
    presence: Presence,
    router: GrpcRouter,
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
    let (shutdown, stopped) = watch::channel(false);

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

    admin::serve(
        admin_listener,
        Admin {
            role,
            registry,
            state,
            refresh,
            presence: presence.clone(),
            drain: lifecycle.drain.clone(),
            secret: lifecycle.secret.clone(),
        },
        stopped,
    );

    Ok(NodeHandle {
        grpc_addr,
        admin_addr,
        presence,
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
