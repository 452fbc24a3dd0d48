//! Cluster membership by gossip (chitchat) of gateways and shards: each publishes who it is,
//! where it serves and its live load, and reads everybody else's. No registry to fail.
//! TaskManagers do not gossip (its cost grows with the square of the members); they report to
//! the shards (`crate::reports`).
//!
//! ```text
//!  process ──set(node, load)──▶ chitchat ◀──sealed UDP gossip──▶ peers' chitchat
//!                                  │ live-nodes watch
//!                                  ▼
//!                       ClusterView (parsed, shared) ──▶ GossipMembership (per role)
//! ```

mod membership;
mod sealed;

pub use membership::GossipMembership;

use crate::keys::Sealer;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState};
use flotilla_protocol::{LOAD_KEY, NODE_KEY, NodeInfo, NodeLoad, NodeRole};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Gossip settings, shared by every role.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipConfig {
    /// UDP address gossip listens on. Port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// Address peers gossip to, `host:port` (a DNS name is resolved once, at start-up).
    /// Unset: the bound `listen` address, or with `listen` on every interface this host's
    /// address on the route to the first seed.
    pub advertise: Option<String>,
    /// Gossip addresses (`host:port`) of a few members to join through. Empty: this process
    /// starts a cluster of its own, which others join by naming it.
    pub seeds: Vec<String>,
    /// Name of the cluster; processes with another name are ignored.
    pub cluster_id: String,
    /// Time between gossip rounds, in milliseconds.
    pub interval_ms: u64,
    /// How often the live load is republished, in milliseconds.
    pub load_interval_ms: u64,
    /// Phi-accrual threshold above which a silent member is considered dead.
    pub phi_threshold: f64,
    /// How long a member marked down by a failed request gets no work, unless gossip shows it
    /// restarted, in milliseconds.
    pub passive_down_ms: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            seeds: Vec::new(),
            cluster_id: "flotilla".to_string(),
            interval_ms: 100,
            load_interval_ms: 100,
            phi_threshold: 8.0,
            passive_down_ms: 2000,
        }
    }
}

/// One live member as gossip shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Peer {
    /// What it published about itself.
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Its last published load.
    pub load: NodeLoad,
    /// Its gossip address.
    pub gossip_addr: SocketAddr,
    /// Increases every time the process restarts.
    pub generation: u64,
}

/// The live members, parsed once per change.
pub type ClusterView = Arc<Vec<Peer>>;

/// Publishes this process's load; called every `load_interval_ms`.
pub type LoadSource = Arc<dyn Fn() -> NodeLoad + Send + Sync>;

/// This process's membership in the gossip cluster.
#[derive(Clone)]
pub struct Gossip {
    inner: Arc<Inner>,
}

struct Inner {
    handle: ChitchatHandle,
    addr: SocketAddr,
    info: RwLock<NodeInfo>,
    view: watch::Receiver<ClusterView>,
    config: GossipConfig,
}

impl Gossip {
    /// Binds the gossip socket, joins through the seeds, publishes `info` and then `load()`
    /// every `load_interval_ms`; every datagram is sealed by `sealer`.
    pub async fn start(
        config: GossipConfig,
        sealer: Sealer,
        info: NodeInfo,
        load: LoadSource,
    ) -> anyhow::Result<Self> {
        let (handle, advertise) = spawn_on_free_port(&config, &sealer, &info, &load).await?;
        let live = handle.chitchat().lock().await.live_nodes_watcher();
        let (view_sender, view) = watch::channel(parse_view(&live.borrow()));
        crate::spawn_instrumented(watch_live_nodes(live, view_sender));
        let gossip = Self {
            inner: Arc::new(Inner {
                handle,
                addr: advertise,
                info: RwLock::new(info),
                view,
                config,
            }),
        };
        gossip.spawn_load_publisher(load);
        tracing::info!(gossip = %advertise, seeds = ?gossip.inner.config.seeds, "joined gossip");
        Ok(gossip)
    }

    /// Returns the address peers gossip to.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Returns the settings gossip was started with.
    pub fn config(&self) -> &GossipConfig {
        &self.inner.config
    }

    /// Returns the live members, this process included.
    pub fn view(&self) -> ClusterView {
        Arc::clone(&self.inner.view.borrow())
    }

    /// Returns a receiver that sees every change of the live members.
    pub fn subscribe(&self) -> watch::Receiver<ClusterView> {
        self.inner.view.clone()
    }

    /// Returns the live members of `role` that take work: neither starting nor draining.
    pub fn serving(&self, role: NodeRole) -> Vec<Peer> {
        self.view()
            .iter()
            .filter(|peer| peer.info.role == role && !peer.info.draining && !peer.info.starting)
            .cloned()
            .collect()
    }

    /// Announces that this process takes no new work.
    pub async fn set_draining(&self) {
        self.publish_info(|info| info.draining = true).await;
    }

    /// Announces that this process, which joined as `starting`, now takes work.
    pub async fn set_ready(&self) {
        self.publish_info(|info| info.starting = false).await;
    }

    /// Changes what this process publishes about itself, and publishes it.
    async fn publish_info(&self, change: impl FnOnce(&mut NodeInfo)) {
        let info = {
            let mut info = self
                .inner
                .info
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            change(&mut info);
            info.clone()
        };
        if let Ok(json) = serde_json::to_string(&info) {
            self.inner
                .handle
                .with_chitchat(|chitchat| chitchat.self_node_state().set(NODE_KEY, &json))
                .await;
        }
    }

    /// Leaves the gossip cluster (peers see this process go silent).
    pub async fn shutdown(self) {
        let _ = self.inner.handle.initiate_shutdown();
    }

    fn spawn_load_publisher(&self, load: LoadSource) {
        let weak = Arc::downgrade(&self.inner);
        let period = Duration::from_millis(self.inner.config.load_interval_ms.max(10));
        crate::spawn_instrumented(async move {
            let mut last = None;
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let current = load();
                if last == Some(current) {
                    continue;
                }
                last = Some(current);
                let Ok(json) = serde_json::to_string(&current) else {
                    continue;
                };
                inner
                    .handle
                    .with_chitchat(|chitchat| chitchat.self_node_state().set(LOAD_KEY, &json))
                    .await;
            }
        });
    }
}

/// Starts chitchat on `config.listen` and returns it with the address peers gossip to.
/// Chitchat binds its own UDP socket, so port 0 is
/// resolved first by binding and releasing a probe socket; a lost race is retried.
async fn spawn_on_free_port(
    config: &GossipConfig,
    sealer: &Sealer,
    info: &NodeInfo,
    load: &LoadSource,
) -> anyhow::Result<(ChitchatHandle, SocketAddr)> {
    let mut last_error = None;
    for _ in 0..5 {
        let bound = std::net::UdpSocket::bind(config.listen)
            .and_then(|probe| probe.local_addr())
            .map_err(|error| anyhow::anyhow!("cannot bind gossip on {}: {error}", config.listen))?;
        let advertise = gossip_address(config, bound).await?;
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        let chitchat_config = chitchat_config(
            config,
            ChitchatId::new(info.id.clone(), generation, advertise),
            bound,
        );
        let initial = vec![
            (NODE_KEY.to_string(), serde_json::to_string(info)?),
            (LOAD_KEY.to_string(), serde_json::to_string(&load())?),
        ];
        match chitchat::spawn_chitchat(chitchat_config, initial, &sealed::SealedUdp(sealer.clone()))
            .await
        {
            Ok(handle) => return Ok((handle, advertise)),
            Err(error) if config.listen.port() == 0 => last_error = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("cannot start gossip")))
}

/// Chitchat's settings for a member `id` listening on `listen`: the gossip interval, the
/// phi-accrual detector, and liveness only once a member's node key arrived.
pub fn chitchat_config(
    config: &GossipConfig,
    id: ChitchatId,
    listen: SocketAddr,
) -> ChitchatConfig {
    let interval = Duration::from_millis(config.interval_ms.max(10));
    ChitchatConfig {
        chitchat_id: id,
        cluster_id: config.cluster_id.clone(),
        gossip_interval: interval,
        listen_addr: listen,
        seed_nodes: config.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            sampling_window_size: 1000,
            max_interval: Duration::from_secs(10),
            initial_interval: interval * 5,
            dead_node_grace_period: Duration::from_secs(60),
        },
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        // A member is usable only once its node key arrived.
        extra_liveness_predicate: Some(Box::new(|state: &NodeState| state.contains_key(NODE_KEY))),
        protocol_version: chitchat::ProtocolVersion::V0,
    }
}

/// The address peers gossip to: chitchat needs it as a socket address, so a DNS name in
/// `gossip.advertise` is resolved here.
async fn gossip_address(config: &GossipConfig, bound: SocketAddr) -> anyhow::Result<SocketAddr> {
    let advertised = crate::advertised_address(
        "gossip.advertise",
        bound,
        config.advertise.as_deref(),
        &config.seeds,
    )
    .await?;
    tokio::net::lookup_host(advertised.as_str())
        .await
        .ok()
        .and_then(|mut resolved| resolved.next())
        .ok_or_else(|| anyhow::anyhow!("gossip.advertise `{advertised}` does not resolve"))
}

/// Re-parses the live members whenever chitchat reports a change; ends with chitchat.
async fn watch_live_nodes(
    mut live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    view: watch::Sender<ClusterView>,
) {
    while live.changed().await.is_ok() {
        let parsed = parse_view(&live.borrow_and_update());
        view.send_if_modified(|current| {
            if **current == *parsed {
                false
            } else {
                *current = parsed;
                true
            }
        });
    }
}

fn parse_view(live: &BTreeMap<ChitchatId, NodeState>) -> ClusterView {
    let mut peers: Vec<Peer> = live
        .iter()
        .filter_map(|(id, state)| {
            let info: NodeInfo = serde_json::from_str(state.get(NODE_KEY)?).ok()?;
            let load = state
                .get(LOAD_KEY)
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default();
            Some(Peer {
                info,
                load,
                gossip_addr: id.gossip_advertise_addr,
                generation: id.generation_id,
            })
        })
        .collect();
    // A restarted process may briefly show twice: keep its newest generation.
    peers.sort_by(|a, b| {
        a.info
            .id
            .cmp(&b.info.id)
            .then(b.generation.cmp(&a.generation))
    });
    peers.dedup_by(|later, first| later.info.id == first.info.id);
    Arc::new(peers)
}

#[cfg(test)]
mod tests;
