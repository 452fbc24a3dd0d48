//! A TaskManager: its start-up (memory pool, leases, the datafusion-distributed worker and a
//! Flight service on one gRPC port, reports to the shards) and the state and load it shows. Its Flight service
//! is in `flight.rs`, how it takes hand-overs and leases in `handover.rs`.

use super::leases::LeaseTable;
use super::metrics::TaskManagerMetrics;
use super::query_memory::QueryMemory;
use super::result_cache::ResultCache;
use super::running::CountTasks;
use super::sessions::WorkerSessions;
use super::tickets::TicketStore;
use crate::config::{Config, Role};
use crate::flight_clients::{ClusterChannels, FlightClients};
use crate::member_flight::MemberFlightService;
use crate::memory::{MemoryGuard, MemoryMetrics, register_bounded_functions};
use crate::node::{Drain, Lifecycle, NodeHandle, NodeListeners, Presence, Views, serve_node};
use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion_distributed::Worker;
use flotilla_cluster::reports::Reporter;
use flotilla_protocol::NodeLoad;
use prometheus::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Longest a call to a peer TaskManager (a lease renewal) may take.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A draining TaskManager drops a handed-over result not fetched within this long: gateways
/// fetch at once, so such a ticket's client went away (dropped before its `DoGet`), and waiting
/// for its TTL (`taskmanager.ticket_ttl_secs`) would hold the drain for a minute.
const ABANDONED_AT_DRAIN: Duration = Duration::from_secs(2);

/// A TaskManager: its worker, its memory pool and the plans it heads.
#[derive(Clone)]
pub struct TaskManager {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) node_id: String,
    pub(super) runtime: Arc<RuntimeEnv>,
    /// Each query's share of `runtime`'s memory pool.
    pub(super) query_memory: Arc<QueryMemory>,
    /// What each query allocates here, and the process's watermark.
    pub(super) memory_guard: Arc<MemoryGuard>,
    pub(super) worker: Worker,
    /// A session with every built-in function; cloned for each handed-over query.
    pub(super) base_state: SessionState,
    pub(super) tickets: TicketStore,
    /// Opens the hand-overs shards put in tickets, and remembers those taken.
    pub(super) ticket_handovers: super::in_ticket::TicketHandovers,
    /// Results kept for repeated statements (and waited for by identical ones meanwhile).
    pub(super) results: Arc<ResultCache>,
    pub(super) metrics: TaskManagerMetrics,
    pub(super) leases: Arc<LeaseTable>,
    pub(super) peers: Arc<FlightClients>,
    pub(super) pool: String,
    /// How long a handed-over query's lease here waits for its fetch.
    pub(super) fetch_window: Duration,
    pub(super) drain: Drain,
    /// Stage calls' channels: the cluster's deadlines, keep-alives, signatures and internal TLS.
    pub(super) channels: ClusterChannels,
}

/// Starts a TaskManager on the configured addresses, reports to the shards, and returns its handle.
pub async fn start_taskmanager(config: Config, registry: Registry) -> anyhow::Result<NodeHandle> {
    let section = &config.taskmanager;
    config.cluster.warn_if_open();
    if section.slots == 0 {
        anyhow::bail!("taskmanager.slots must be at least 1");
    }
    let metrics = TaskManagerMetrics::new(&registry)?;
    // The pool stays within half the process's watermark, so that queries spill before the
    // memory guard must stop them.
    let watermark = config.memory.limit_bytes();
    let memory_limit = usize::try_from(
        section
            .memory_limit_mb
            .saturating_mul(1024 * 1024)
            .min(watermark / 2),
    )?;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit, 1.0)
        .with_object_store_registry(crate::catalog::stores::registry())
        .build_arc()?;
    config.catalog.install_stores(&runtime)?;
    let query_memory_limit = match section.query_memory_limit_mb {
        0 => memory_limit / 2,
        mib => usize::try_from(mib.saturating_mul(1024 * 1024))?.min(memory_limit),
    };
    let query_memory = Arc::new(QueryMemory::new(Arc::clone(&runtime), query_memory_limit));
    let memory_guard = MemoryGuard::new(
        (
            (query_memory_limit as u64).saturating_mul(2),
            "twice taskmanager.query_memory_limit_mb",
        ),
        watermark,
        MemoryMetrics::new(&registry)?,
    );
    memory_guard.watch(Duration::from_millis(
        config.memory.check_interval_ms.max(1),
    ));
    let max_call_bytes = config.memory.max_call_bytes();
    metrics.slots.set(i64::try_from(section.slots)?);
    metrics.memory_limit.set(i64::try_from(memory_limit)?);
    let leases = Arc::new(LeaseTable::new(section.slots as u64));
    // Read once (it loads the internal TLS files); every internal caller and check clones it.
    let secret = config.cluster.secret();
    let channels = ClusterChannels::new(secret.clone());
    let worker = Worker::from_session_builder(WorkerSessions {
        leases: Arc::clone(&leases),
        metrics: metrics.clone(),
        query_memory: Arc::clone(&query_memory),
        channels: channels.clone(),
        max_call_bytes,
    })
    .with_runtime_env(Arc::clone(&runtime));
    let mut base_state = SessionStateBuilder::new()
        .with_default_features()
        .with_runtime_env(Arc::clone(&runtime))
        .build();
    register_bounded_functions(&mut base_state, max_call_bytes)?;
    let node_id = config.node_id(Role::TaskManager);
    let taskmanager = TaskManager {
        inner: Arc::new(Inner {
            node_id: node_id.clone(),
            runtime,
            query_memory,
            memory_guard: Arc::clone(&memory_guard),
            worker: worker.clone(),
            base_state,
            tickets: TicketStore::new(
                Duration::from_secs(section.ticket_ttl_secs),
                section.max_pending_tickets,
            ),
            ticket_handovers: super::in_ticket::TicketHandovers::new(
                config
                    .cluster
                    .sealer(flotilla_cluster::keys::Traffic::Handovers),
            ),
            results: Arc::new(ResultCache::new(
                usize::try_from(section.result_cache_mb.saturating_mul(1024 * 1024))?,
                &registry,
            )?),
            metrics,
            leases,
            peers: Arc::new(FlightClients::new(RENEWAL_TIMEOUT, secret.clone())),
            channels: channels.clone(),
            pool: section.pool.clone(),
            fetch_window: Duration::from_millis(section.fetch_window_ms),
            drain: Drain::default(),
        }),
    };
    if config.reports.shards.is_empty() {
        let hint = if config.gossip.seeds.is_empty() {
            String::new()
        } else {
            " (gossip.seeds is for shards and gateways: TaskManagers do not gossip)".to_string()
        };
        anyhow::bail!(
            "set reports.shards to the gRPC addresses (host:port) of a few shards: a TaskManager reports its slots to the shards{hint}"
        );
    }
    let listeners = NodeListeners::bind(
        Role::TaskManager,
        (section.listen, section.advertise.as_deref()),
        (section.admin_listen, section.admin_advertise.as_deref()),
        &config.reports.shards,
        &config.cluster,
    )
    .await?;
    let mut info = listeners.node_info(
        node_id,
        Role::TaskManager,
        Some(section.pool.clone()),
        &config.cluster,
    );
    info.previous_exit = config.node.previous_exit.clone();
    let load_view = taskmanager.clone();
    let reporter = Reporter::start(
        &config.reports,
        &config.gossip.cluster_id,
        config
            .cluster
            .sealer(flotilla_cluster::keys::Traffic::Reports),
        config.gossip.listen,
        Duration::from_millis(config.gossip.load_interval_ms),
        &info,
        Arc::new(move || load_view.load()),
    )
    .await?;
    let router = crate::node::grpc_server(&config.cluster, &secret)?
        .add_service(CountTasks::new(
            worker.into_worker_server(),
            taskmanager.inner.metrics.tasks_running.clone(),
            memory_guard,
        ))
        .add_service(
            FlightServiceServer::new(MemberFlightService(taskmanager.clone()))
                .max_decoding_message_size(256 * 1024 * 1024)
                .max_encoding_message_size(256 * 1024 * 1024),
        );
    let state_view = taskmanager.clone();
    let metrics_view = taskmanager.clone();
    let idle_view = taskmanager.clone();
    let lifecycle = Lifecycle {
        drain: taskmanager.inner.drain.clone(),
        idle: Arc::new(move || idle_view.is_idle()),
        drain_timeout: Duration::from_millis(config.node.drain_timeout_ms),
        secret: secret.clone(),
    };
    serve_node(
        Role::TaskManager,
        listeners,
        Presence::Reports(reporter),
        router,
        registry,
        Views {
            state: Arc::new(move |_| state_view.state_json()),
            refresh: Arc::new(move || metrics_view.refresh_gauges()),
        },
        lifecycle,
    )
    .await
}

// === impl TaskManager ===

impl TaskManager {
    pub(super) fn state_json(&self) -> serde_json::Value {
        let inner = &self.inner;
        serde_json::json!({
            "id": inner.node_id,
            "pool": inner.pool,
            "slots": inner.leases.stats(),
            "leases": inner.leases.list(100),
            "handovers_total": inner.metrics.handovers.get(),
            "tasks_total": inner.metrics.tasks.get(),
            "tasks_refused_total": inner.metrics.tasks_refused.get(),
            "tasks_running": inner.metrics.tasks_running.get(),
            "pending_tickets": inner.tickets.len(),
            "results_streaming": inner.metrics.results_streaming.get(),
            "memory_used_bytes": inner.runtime.memory_pool.reserved(),
            "memory_limit_bytes": inner.metrics.memory_limit.get(),
            "flight_bytes_sent": inner.metrics.flight_bytes_sent.get(),
            "query_memory": inner.memory_guard.snapshot(20),
            "result_cache": inner.results.json(),
        })
    }

    pub(super) fn refresh_gauges(&self) {
        let (inner, metrics) = (&self.inner, &self.inner.metrics);
        let used = i64::try_from(inner.runtime.memory_pool.reserved()).unwrap_or(i64::MAX);
        metrics.memory_used.set(used);
        let slots = inner.leases.stats();
        metrics.slots_used.set(slots.slots_used as i64);
        metrics.leases_active.set(slots.leases_active as i64);
        super::metrics::catch_up(&metrics.leases_expired, slots.leases_expired_total);
        let disk = &inner.runtime.disk_manager;
        metrics
            .spill_bytes
            .set(i64::try_from(disk.used_disk_space()).unwrap_or(i64::MAX));
        metrics
            .spill_limit
            .set(i64::try_from(disk.max_temp_directory_size()).unwrap_or(i64::MAX));
    }

    /// Says whether nothing runs here: no lease (a query of any shard may still send tasks),
    /// no unfetched result, no result streaming. A draining TaskManager exits once idle.
    pub(super) fn is_idle(&self) -> bool {
        let inner = &self.inner;
        if inner.drain.is_draining() {
            for abandoned in inner.tickets.take_older_than(ABANDONED_AT_DRAIN) {
                tracing::info!(query_id = %abandoned.query_id, "draining: a result nobody fetched is dropped");
                inner.metrics.tickets_expired.inc();
                inner.leases.release(&[abandoned.lease.lease_id]);
            }
        }
        inner.leases.stats().slots_used == 0
            && inner.tickets.len() == 0
            && inner.metrics.results_streaming.get() <= 0
            && inner.metrics.tasks_running.get() <= 0
    }

    /// The load reported to the shards; also sweeps expired tickets (releasing their leases).
    pub(super) fn load(&self) -> NodeLoad {
        let inner = &self.inner;
        let expired = inner.tickets.sweep();
        inner.metrics.tickets_expired.inc_by(expired as u64);
        let slots = inner.leases.stats();
        NodeLoad {
            in_flight: inner.metrics.results_streaming.get().max(0) as u64,
            slots_total: slots.slots_total,
            slots_free: slots.slots_total - slots.slots_used,
            memory_used_bytes: inner.runtime.memory_pool.reserved() as u64,
            memory_limit_bytes: inner.metrics.memory_limit.get().max(0) as u64,
            ..NodeLoad::default()
        }
    }
}
