//! A JobManager shard: its start-up (planner, slot leaser, gossip, one gRPC port) and the state
//! its admin endpoint shows. Its Flight service is in `flight.rs`, its hand-overs in
//! `handover.rs`.

use super::candidates::TaskManagers;
use super::leasing::SlotLeaser;
use super::metrics::JobManagerMetrics;
use super::plan_cache::PlanCache;
use super::planner::Planner;
use crate::catalog::versions::CatalogVersions;
use crate::config::{Config, Role};
use crate::member_flight::MemberFlightService;
use crate::node::{Drain, Lifecycle, NodeHandle, NodeListeners, Views, serve_node};
use arrow_flight::flight_service_server::FlightServiceServer;
use flotilla_cluster::{Gossip, GossipMembership, StaticMembership};
use flotilla_protocol::{NodeInfo, NodeLoad, NodeRole};
use prometheus::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A JobManager shard.
#[derive(Clone)]
pub struct JobManager {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) node_id: String,
    pub(super) planner: Planner,
    pub(super) plans: Arc<PlanCache>,
    pub(super) versions: Arc<CatalogVersions>,
    pub(super) leaser: Arc<SlotLeaser>,
    pub(super) metrics: JobManagerMetrics,
    pub(super) drain: Drain,
    /// What each statement's planning allocates here, and the process's watermark.
    pub(super) memory_guard: Arc<crate::memory::MemoryGuard>,
}

/// Starts a shard on the configured addresses, joins gossip, and returns its handle.
pub async fn start_jobmanager(config: Config, registry: Registry) -> anyhow::Result<NodeHandle> {
    let section = &config.jobmanager;
    config.catalog.validate().map_err(anyhow::Error::msg)?;
    config.cluster.warn_if_open();
    // Read once (it loads the internal TLS files); every internal caller and check clones it.
    let secret = config.cluster.secret();
    if section.taskmanagers_per_query == 0 || section.slots_per_query == 0 {
        anyhow::bail!("jobmanager.taskmanagers_per_query and slots_per_query must be at least 1");
    }
    let listeners = NodeListeners::bind(
        Role::JobManager,
        (section.listen, section.advertise.as_deref()),
        (section.admin_listen, section.admin_advertise.as_deref()),
        &config.gossip.seeds,
        &config.cluster,
    )
    .await?;
    let node_id = config.node_id(Role::JobManager);
    let metrics = JobManagerMetrics::new(&registry)?;
    let in_flight = metrics.in_flight.clone();
    let gossip_discovery = section.taskmanagers.is_empty();
    let gossip = Gossip::start(
        config.cluster.gossip(&config.gossip),
        NodeInfo {
            // Gateways send it nothing until it knows a TaskManager to run queries on.
            starting: gossip_discovery,
            previous_exit: config.node.previous_exit.clone(),
            ..listeners.node_info(node_id.clone(), Role::JobManager, None, &config.cluster)
        },
        Arc::new(move || NodeLoad {
            in_flight: in_flight.get().max(0) as u64,
            ..NodeLoad::default()
        }),
    )
    .await?;
    let taskmanagers = if gossip_discovery {
        flotilla_cluster::spawn_instrumented(announce_ready(
            gossip.clone(),
            Duration::from_millis(section.startup_wait_ms),
        ));
        TaskManagers::Gossip(GossipMembership::new(gossip.clone(), NodeRole::TaskManager))
    } else {
        let membership = StaticMembership::new(section.taskmanagers.clone());
        membership.spawn_prober(Duration::from_millis(section.probe_interval_ms.max(10)));
        TaskManagers::Static(membership)
    };
    let planner = Planner::new(&config.catalog, section, config.memory.max_call_bytes()).await?;
    let memory_limit = config.memory.limit_bytes();
    // Planning one statement may take half the shard's watermark (constant folding evaluates
    // expressions here); the watchdog stops the biggest one past the watermark.
    let memory_guard = crate::memory::MemoryGuard::new(
        (memory_limit / 2, "half of memory.limit_mb"),
        memory_limit,
        crate::memory::MemoryMetrics::new(&registry)?,
    );
    memory_guard.watch(Duration::from_millis(
        config.memory.check_interval_ms.max(1),
    ));
    let versions = Arc::new(CatalogVersions::new(
        &config.catalog,
        Arc::clone(planner.state.runtime_env()),
    )?);
    versions.refresh().await;
    let plans = Arc::new(PlanCache::new(section.plan_cache_bytes, metrics.clone()));
    let invalidated = Arc::clone(&plans);
    versions.spawn_refresher(move |tables| invalidated.invalidate(tables));
    let jobmanager = JobManager {
        inner: Arc::new(Inner {
            node_id: node_id.clone(),
            planner,
            plans,
            versions,
            leaser: Arc::new(SlotLeaser::new(
                node_id,
                taskmanagers,
                section.clone(),
                metrics.clone(),
                secret.clone(),
            )),
            metrics,
            drain: Drain::default(),
            memory_guard,
        }),
    };
    let router = crate::node::grpc_server(&config.cluster)?.add_service(
        FlightServiceServer::with_interceptor(
            MemberFlightService(jobmanager.clone()),
            secret.clone(),
        ),
    );
    let state_view = jobmanager.clone();
    let in_flight = jobmanager.inner.metrics.in_flight.clone();
    let lifecycle = Lifecycle {
        drain: jobmanager.inner.drain.clone(),
        idle: Arc::new(move || in_flight.get() <= 0),
        drain_timeout: Duration::from_millis(config.node.drain_timeout_ms),
        secret: secret.clone(),
    };
    serve_node(
        Role::JobManager,
        listeners,
        gossip,
        router,
        registry,
        Views {
            state: Arc::new(move || state_view.state_json()),
            refresh: Arc::new(|| {}),
        },
        lifecycle,
    )
    .await
}

/// Announces the shard ready once gossip shows it a TaskManager, or after `wait` anyway (its
/// queries then fail with `no_taskmanager`, which says more than no shard at all).
async fn announce_ready(gossip: Gossip, wait: Duration) {
    let started = Instant::now();
    let mut view = gossip.subscribe();
    let seen = tokio::time::timeout(
        wait,
        view.wait_for(|peers| {
            peers.iter().any(|peer| {
                peer.info.role == NodeRole::TaskManager
                    && !peer.info.draining
                    && !peer.info.starting
            })
        }),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    gossip.set_ready().await;
    tracing::info!(
        taskmanager_seen = seen,
        waited_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
}

// === impl JobManager ===

impl JobManager {
    fn state_json(&self) -> serde_json::Value {
        let inner = &self.inner;
        serde_json::json!({
            "id": inner.node_id,
            "in_flight": inner.metrics.in_flight.get(),
            "queued": inner.metrics.queued.get(),
            "queries_planned": inner.metrics.queries_planned.get(),
            "plan_cache": {
                "hits": inner.metrics.plan_cache_hits.get(),
                "misses": inner.metrics.plan_cache_misses.get(),
                "entries": inner.metrics.plan_cache_entries.get(),
                "bytes": inner.metrics.plan_cache_bytes.get(),
            },
            "response_bytes": inner.metrics.response_bytes.get(),
            "taskmanagers": inner.leaser.membership().members(),
        })
    }
}
