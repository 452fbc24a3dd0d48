//! A JobManager shard: its start-up (planner, slot leaser, gossip, the TaskManagers' reports on its gRPC port) and the state
//! its admin endpoint shows. Its Flight service is in `flight.rs`, its hand-overs in
//! `handover.rs`.

use super::candidates::{ReportedMembership, TaskManagers};
use super::leasing::SlotLeaser;
use super::metrics::JobManagerMetrics;
use super::plan_cache::PlanCache;
use super::planner::Planner;
use super::result_index::ResultIndex;
use crate::catalog::versions::CatalogVersions;
use crate::config::{Config, Role};
use crate::member_flight::MemberFlightService;
use crate::node::{Drain, Lifecycle, NodeHandle, NodeListeners, Presence, Views, serve_node};
use arrow_flight::flight_service_server::FlightServiceServer;
use flotilla_cluster::keys::Traffic;
use flotilla_cluster::reports::ReportListener;
use flotilla_cluster::{Gossip, StaticMembership};
use flotilla_protocol::{NodeInfo, NodeLoad, NodeRole};
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A JobManager shard.
#[derive(Clone)]
pub struct JobManager {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) node_id: String,
    pub(super) planner: Planner,
    pub(super) plans: Arc<PlanCache>,
    /// Which TaskManager keeps the result of which statement.
    pub(super) results: Arc<ResultIndex>,
    pub(super) versions: Arc<CatalogVersions>,
    pub(super) leaser: Arc<SlotLeaser>,
    pub(super) metrics: JobManagerMetrics,
    pub(super) drain: Drain,
    /// What each statement's planning allocates here, and the process's watermark.
    pub(super) memory_guard: Arc<crate::memory::MemoryGuard>,
    /// Seals the hand-overs put in tickets; None: every hand-over is a call
    /// (`jobmanager.handover_in_ticket` off).
    pub(super) handover_tickets: Option<flotilla_cluster::keys::Sealer>,
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
    let reports_discovery = section.taskmanagers.is_empty();
    let (shard_list, shard_list_seen) = watch::channel(Vec::new());
    let reports = if reports_discovery {
        Some(
            ReportListener::start(
                &config.reports,
                &config.gossip.cluster_id,
                config.cluster.sealer(Traffic::Reports),
                listeners.grpc_addr,
                shard_list_seen,
            )
            .await?,
        )
    } else {
        None
    };
    let load_reports = reports.clone();
    let gossip = Gossip::start(
        config.gossip.clone(),
        config.cluster.sealer(Traffic::Gossip),
        NodeInfo {
            // Gateways send it nothing until it knows a TaskManager to run queries on.
            starting: reports_discovery,
            previous_exit: config.node.previous_exit.clone(),
            ..listeners.node_info(node_id.clone(), Role::JobManager, None, &config.cluster)
        },
        Arc::new(move || shard_load(in_flight.get(), load_reports.as_ref())),
    )
    .await?;
    let taskmanagers = if let Some(reports) = reports {
        flotilla_cluster::spawn_instrumented(follow_shards(gossip.subscribe(), shard_list));
        flotilla_cluster::spawn_instrumented(announce_ready(
            gossip.clone(),
            reports.clone(),
            Duration::from_millis(section.startup_wait_ms),
        ));
        TaskManagers::Reports(ReportedMembership(reports))
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
    crate::catalog::system::register(&planner.state, &config.catalog, Arc::clone(&versions))?;
    let plans = Arc::new(PlanCache::new(section.plan_cache_bytes, metrics.clone()));
    let results = Arc::new(ResultIndex::new(section.result_index_entries, &registry)?);
    let (invalidated, forgotten) = (Arc::clone(&plans), Arc::clone(&results));
    versions.spawn_refresher(move |tables| {
        invalidated.invalidate(tables);
        forgotten.invalidate(tables);
    });
    let jobmanager = JobManager {
        inner: Arc::new(Inner {
            node_id: node_id.clone(),
            planner,
            plans,
            results,
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
            handover_tickets: section
                .handover_in_ticket
                .then(|| config.cluster.sealer(Traffic::Handovers)),
        }),
    };
    let router = crate::node::grpc_server(&config.cluster, &secret)?.add_service(
        FlightServiceServer::new(MemberFlightService(jobmanager.clone())),
    );
    let state_view = jobmanager.clone();
    let refresh_view = jobmanager.clone();
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
        Presence::Gossip(gossip),
        router,
        registry,
        Views {
            state: Arc::new(move |query| state_view.state_json(query)),
            refresh: Arc::new(move || refresh_view.refresh_gauges()),
        },
        lifecycle,
    )
    .await
}

/// Announces the shard ready once a TaskManager that takes work reported to it, or after
/// `wait` anyway (its queries then fail with `no_taskmanager`, which says more than no shard at
/// all).
async fn announce_ready(gossip: Gossip, reports: ReportListener, wait: Duration) {
    let started = Instant::now();
    let mut seen = false;
    while started.elapsed() < wait {
        if reports.with_table(|table| table.counts().0.up) > 0 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gossip.set_ready().await;
    tracing::info!(
        taskmanager_seen = seen,
        waited_ms = started.elapsed().as_millis() as u64,
        "ready"
    );
}

/// What a shard gossips of its load: queries being planned, and the TaskManagers and slots its
/// table holds (gateways show these instead of a member list of every TaskManager).
fn shard_load(in_flight: i64, reports: Option<&ReportListener>) -> NodeLoad {
    let counts = reports
        .map(|reports| reports.with_table(|table| table.counts().0))
        .unwrap_or_default();
    NodeLoad {
        in_flight: in_flight.max(0) as u64,
        slots_total: counts.slots_total,
        slots_free: counts.slots_free,
        taskmanagers_up: counts.up as u64,
        taskmanagers_known: counts.known as u64,
        ..NodeLoad::default()
    }
}

/// Keeps the list of shards TaskManagers report to: the report addresses (gRPC host and port,
/// UDP) of the shards gossip shows, not draining.
async fn follow_shards(
    mut view: watch::Receiver<flotilla_cluster::ClusterView>,
    list: watch::Sender<Vec<SocketAddr>>,
) {
    loop {
        let urls: Vec<String> = view
            .borrow_and_update()
            .iter()
            .filter(|peer| peer.info.role == NodeRole::JobManager && !peer.info.draining)
            .filter_map(|peer| peer.info.grpc_url.clone())
            .collect();
        let mut shards = Vec::with_capacity(urls.len());
        for url in urls {
            let Some(authority) = url
                .split_once("://")
                .map(|(_, rest)| rest.trim_end_matches('/'))
            else {
                continue;
            };
            if let Ok(mut resolved) = tokio::net::lookup_host(authority).await
                && let Some(addr) = resolved.next()
            {
                shards.push(addr);
            }
        }
        shards.sort_unstable();
        list.send_if_modified(|current| {
            let changed = *current != shards;
            *current = shards;
            changed
        });
        if view.changed().await.is_err() {
            return;
        }
    }
}

impl JobManager {
    /// Sets the TaskManager table's gauges before a `/metrics` scrape.
    fn refresh_gauges(&self) {
        let metrics = &self.inner.metrics;
        let Some((counts, bytes, traffic)) = self.inner.leaser.table_figures() else {
            return;
        };
        for (state, count) in [
            ("up", counts.up),
            ("suspect", counts.suspect),
            ("down", counts.down),
            ("not_serving", counts.not_serving),
        ] {
            metrics
                .taskmanagers
                .with_label_values(&[state])
                .set(count as i64);
        }
        metrics.taskmanager_table_bytes.set(bytes as i64);
        let received = traffic
            .received
            .saturating_sub(metrics.reports_received.get());
        metrics.reports_received.inc_by(received);
    }

    /// `/v1/state`; `?taskmanagers=<state, pool or id>&offset=&limit=` pages the TaskManagers
    /// (default: the first 50, the unusable and the busiest first).
    fn state_json(&self, query: Option<&str>) -> serde_json::Value {
        let inner = &self.inner;
        let asked = flotilla_protocol::TaskManagersRequest::from_query(query, 50);
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
            "result_cache": inner.results.json(),
            "response_bytes": inner.metrics.response_bytes.get(),
            "taskmanagers": inner.leaser.taskmanagers_json(asked.filter.as_deref(), asked.offset, asked.limit),
        })
    }
}
