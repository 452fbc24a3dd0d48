//! The TaskManager's side: one report to every shard each `interval` (and at once when it
//! starts or stops taking work), sent from one UDP socket; the shard list is learnt from the
//! shards' answers and checked against the seeds every few rounds. [`ReporterCore`] is the
//! sans-IO state machine (the simulation drives it); [`Reporter`] runs it on a socket.

use super::wire::{Datagram, MAX_DATAGRAM, Report, cluster_tag};
use super::{ReportsConfig, WallClock};
use crate::gossip::LoadSource;
use crate::keys::Sealer;
use flotilla_protocol::NodeInfo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, watch};

/// Rounds between reports that also go to the seeds (every round while no shard is known).
const SEED_EVERY: u64 = 5;

/// Bytes and datagrams one side sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent (UDP payload).
    pub sent_bytes: u64,
    /// Datagrams received.
    pub received: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Largest datagram sent.
    pub largest: usize,
}

impl Traffic {
    pub(crate) fn sent(&mut self, bytes: usize, copies: usize) {
        self.sent += copies as u64;
        self.sent_bytes += (bytes * copies) as u64;
        self.largest = self.largest.max(bytes);
    }
}

/// The reporting state machine of one TaskManager.
pub struct ReporterCore {
    report: Report,
    interval: Duration,
    seeds: Vec<SocketAddr>,
    shards: Vec<SocketAddr>,
    assembling: Option<(u64, Vec<Option<Vec<SocketAddr>>>)>,
    next_at: Instant,
    round: u64,
    sealer: Sealer,
    clock: WallClock,
    /// What it sent and received.
    pub traffic: Traffic,
}

impl ReporterCore {
    /// A reporter whose first report goes out at `first`, sealed by `sealer`.
    pub fn new(
        report: Report,
        interval: Duration,
        seeds: Vec<SocketAddr>,
        first: Instant,
        sealer: Sealer,
    ) -> Self {
        Self {
            sealer,
            clock: WallClock::starting(first),
            report,
            interval,
            seeds,
            shards: Vec::new(),
            assembling: None,
            next_at: first,
            round: 0,
            traffic: Traffic::default(),
        }
    }

    /// Replaces the seeds (re-resolved).
    pub fn set_seeds(&mut self, seeds: Vec<SocketAddr>) {
        self.seeds = seeds;
    }

    /// Changes what it says about taking work; a change is reported at once.
    pub fn set_flags(&mut self, draining: bool, starting: bool, now: Instant) {
        if (self.report.draining, self.report.starting) != (draining, starting) {
            self.report.draining = draining;
            self.report.starting = starting;
            self.next_at = now;
        }
    }

    /// The TaskManager's node id.
    pub fn id(&self) -> &str {
        &self.report.id
    }

    /// When the next report is due.
    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    /// The shards it reports to.
    pub fn shards(&self) -> &[SocketAddr] {
        &self.shards
    }

    /// Says whether this round also goes to the seeds.
    pub fn seed_round(&self) -> bool {
        self.shards.is_empty() || self.round.is_multiple_of(SEED_EVERY)
    }

    /// When due, the report with `load` (slots total, free, results streaming) and where it goes.
    pub fn poll(
        &mut self,
        now: Instant,
        load: (u32, u32, u32),
    ) -> Option<(Vec<u8>, Vec<SocketAddr>)> {
        if now < self.next_at {
            return None;
        }
        let mut targets = self.shards.clone();
        if self.seed_round() {
            targets.extend(self.seeds.iter().filter(|seed| !self.shards.contains(seed)));
        }
        self.round += 1;
        self.report.seq += 1;
        (
            self.report.slots_total,
            self.report.slots_free,
            self.report.in_flight,
        ) = load;
        self.next_at = now + self.interval;
        let bytes = self.sealer.seal(
            &Datagram::Report(self.report.clone()).encode()?,
            self.clock.ms(now),
        );
        self.traffic.sent(bytes.len(), targets.len());
        Some((bytes, targets))
    }

    /// Takes a datagram from a shard at `now`; returns true when it completed a new shard list
    /// (the next report then goes out at once, to the shards just learnt of too).
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> bool {
        self.traffic.received += 1;
        self.traffic.received_bytes += bytes.len() as u64;
        let Ok(opened) = self.sealer.open(bytes, self.clock.ms(now)) else {
            return false;
        };
        let Some(Datagram::Shards(page)) = Datagram::decode(&opened.payload) else {
            return false;
        };
        if page.cluster != self.report.cluster
            || page.hash == self.report.shards_hash
            || page.page >= page.pages
        {
            return false;
        }
        let (hash, pages) = self
            .assembling
            .get_or_insert_with(|| (page.hash, vec![None; usize::from(page.pages)]));
        if *hash != page.hash || pages.len() != usize::from(page.pages) {
            *hash = page.hash;
            *pages = vec![None; usize::from(page.pages)];
        }
        pages[usize::from(page.page)] = Some(page.shards);
        if pages.iter().any(Option::is_none) {
            return false;
        }
        let hash = *hash;
        let shards: Vec<SocketAddr> = pages
            .iter_mut()
            .filter_map(Option::take)
            .flatten()
            .collect();
        self.assembling = None;
        if super::wire::shards_hash(&shards) != hash {
            return false;
        }
        self.shards = shards;
        self.report.shards_hash = hash;
        self.next_at = self.next_at.min(now);
        true
    }
}

/// A running reporter: a TaskManager's presence in the cluster.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    flags: watch::Sender<(bool, bool)>,
    shards: Mutex<Vec<SocketAddr>>,
    traffic: Mutex<Traffic>,
    stop: Notify,
}

impl Reporter {
    /// Binds `listen` (UDP) and reports `info` and `load()`, sealed by `sealer`, to the shards
    /// named by `config.shards` and those they name. `load` is also called every `load_interval` (it may sweep).
    pub async fn start(
        config: &ReportsConfig,
        cluster_id: &str,
        sealer: Sealer,
        listen: SocketAddr,
        load_interval: Duration,
        info: &NodeInfo,
        load: LoadSource,
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(|error| anyhow::anyhow!("cannot bind reports on {listen}: {error}"))?;
        let addr = socket.local_addr()?;
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_micros() as u64);
        let report = Report {
            cluster: cluster_tag(cluster_id),
            id: info.id.clone(),
            generation,
            seq: 0,
            grpc_url: info.grpc_url.clone().unwrap_or_default(),
            admin_addr: info.admin_addr.clone().unwrap_or_default(),
            pool: info.pool.clone().unwrap_or_default(),
            version: info.version.clone(),
            previous_exit: info.previous_exit.clone().unwrap_or_default(),
            slots_total: 0,
            slots_free: 0,
            in_flight: 0,
            draining: info.draining,
            starting: info.starting,
            shards_hash: 0,
        };
        if Datagram::Report(report.clone()).encode().is_none() {
            anyhow::bail!("node id, addresses, pool and version must each be at most 255 bytes");
        }
        let interval = Duration::from_millis(config.interval_ms.max(10));
        let seeds = resolve(&config.shards).await;
        if seeds.is_empty() {
            // A headless service of shards not started yet: resolved again every few seconds.
            tracing::warn!(shards = ?config.shards, "reports.shards resolves to no address yet; trying again");
        }
        let core = ReporterCore::new(report, interval, seeds, Instant::now(), sealer);
        let (flags, flags_seen) = watch::channel((info.draining, info.starting));
        let inner = Arc::new(Inner {
            addr,
            flags,
            shards: Mutex::default(),
            traffic: Mutex::default(),
            stop: Notify::new(),
        });
        crate::spawn_instrumented(run(
            Arc::clone(&inner),
            socket,
            core,
            config.shards.clone(),
            flags_seen,
            load_interval.max(Duration::from_millis(10)),
            load,
        ));
        tracing::info!(reports = %addr, shards = ?config.shards, "reporting to shards");
        Ok(Self { inner })
    }

    /// The local address reports are sent from.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The shards it reports to now.
    pub fn shards(&self) -> Vec<SocketAddr> {
        lock(&self.inner.shards).clone()
    }

    /// What it sent and received so far.
    pub fn traffic(&self) -> Traffic {
        *lock(&self.inner.traffic)
    }

    /// Tells the shards it takes no new work.
    pub fn set_draining(&self) {
        self.inner
            .flags
            .send_modify(|(draining, _)| *draining = true);
    }

    /// Tells the shards it, started as `starting`, now takes work.
    pub fn set_ready(&self) {
        self.inner
            .flags
            .send_modify(|(_, starting)| *starting = false);
    }

    /// Stops reporting (the shards pass it over after `suspect_after`).
    pub fn shutdown(&self) {
        self.inner.stop.notify_one();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Resolves `host:port` names; those that do not resolve are skipped (and retried later).
async fn resolve(names: &[String]) -> Vec<SocketAddr> {
    let mut resolved = Vec::new();
    for name in names {
        if let Ok(addrs) = tokio::net::lookup_host(name.as_str()).await {
            for addr in addrs {
                if !resolved.contains(&addr) {
                    resolved.push(addr);
                }
            }
        }
    }
    resolved
}

async fn run(
    inner: Arc<Inner>,
    socket: tokio::net::UdpSocket,
    mut core: ReporterCore,
    seed_names: Vec<String>,
    mut flags: watch::Receiver<(bool, bool)>,
    load_interval: Duration,
    load: LoadSource,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut ticker = tokio::time::interval(load_interval);
    let mut current = load();
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.stop.notified() => return,
            changed = flags.changed() => {
                if changed.is_err() {
                    return;
                }
                let (draining, starting) = *flags.borrow_and_update();
                core.set_flags(draining, starting, Instant::now());
            }
            received = socket.recv_from(&mut buf) => {
                if let Ok((len, _)) = received
                    && len <= MAX_DATAGRAM
                    && core.receive(&buf[..len], Instant::now())
                {
                    tracing::info!(shards = ?core.shards(), "shard list changed");
                    *lock(&inner.shards) = core.shards().to_vec();
                }
            }
            _ = ticker.tick() => current = load(),
        }
        let now = Instant::now();
        if now < core.next_at() {
            continue;
        }
        if core.seed_round() {
            let seeds = resolve(&seed_names).await;
            if !seeds.is_empty() {
                core.set_seeds(seeds);
            }
        }
        let clamp = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
        let Some((bytes, targets)) = core.poll(
            now,
            (
                clamp(current.slots_total),
                clamp(current.slots_free),
                clamp(current.in_flight),
            ),
        ) else {
            continue;
        };
        for target in targets {
            if let Err(error) = socket.send_to(&bytes, target).await {
                tracing::debug!(%target, %error, "report not sent");
            }
        }
        *lock(&inner.traffic) = core.traffic;
    }
}
