//! The shard's side: a UDP socket on the shard's gRPC port that takes TaskManagers' reports
//! into its [`TaskManagerTable`], answers a TaskManager whose shard list is out of date with
//! the current one (at most once a second each), and sweeps the table every 100 ms.
//! [`ShardCore`] is the sans-IO part (the simulation drives it); [`ReportListener`] runs it on
//! a socket.

use super::reporter::Traffic;
use super::table::{Applied, TableTimes, TaskManagerTable};
use super::wire::{Datagram, MAX_DATAGRAM, cluster_tag, shard_pages, shards_hash};
use super::{ReportsConfig, WallClock};
use crate::keys::{ReplayWindow, Sealer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the table is swept.
pub const SWEEP: Duration = Duration::from_millis(100);

/// Least time between two shard lists sent to one TaskManager.
const ANSWER_EVERY: Duration = Duration::from_secs(1);

/// What one shard does with reports, without a socket or a clock.
pub struct ShardCore {
    cluster: u64,
    table: TaskManagerTable,
    hash: u64,
    pages: Vec<Vec<u8>>,
    sealer: Sealer,
    clock: WallClock,
    seen: ReplayWindow,
    answered: HashMap<SocketAddr, Instant>,
    pruned: Instant,
    /// What it received and sent.
    pub traffic: Traffic,
}

impl ShardCore {
    /// A shard of the cluster tagged `cluster`, with an empty table, opening and sealing with
    /// `sealer`.
    pub fn new(cluster: u64, times: TableTimes, now: Instant, sealer: Sealer) -> Self {
        Self {
            sealer,
            clock: WallClock::starting(now),
            seen: ReplayWindow::new(crate::keys::unix_ms()),
            cluster,
            table: TaskManagerTable::new(times),
            hash: 0,
            pages: Vec::new(),
            answered: HashMap::new(),
            pruned: now,
            traffic: Traffic::default(),
        }
    }

    /// Sets the shard list handed to TaskManagers.
    pub fn set_shards(&mut self, shards: &[SocketAddr]) {
        self.hash = shards_hash(shards);
        self.pages = shard_pages(self.cluster, shards)
            .into_iter()
            .filter_map(|page| Datagram::Shards(page).encode())
            .collect();
    }

    /// The table.
    pub fn table(&mut self) -> &mut TaskManagerTable {
        &mut self.table
    }

    /// Takes one datagram from `from`; returns what it did to the table (for a report of this
    /// cluster) and the datagrams to send back (the shard list, when the sender's is old).
    pub fn receive(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> (Option<(String, Applied)>, Vec<Vec<u8>>) {
        self.traffic.received += 1;
        self.traffic.received_bytes += bytes.len() as u64;
        let wall = self.clock.ms(now);
        let opened = (bytes.len() <= MAX_DATAGRAM)
            .then(|| self.sealer.open(bytes, wall).ok())
            .flatten();
        if let Some(opened) = &opened
            && self.sealer.is_sealed()
            && !self.seen.first_time(&opened.nonce, wall)
        {
            self.sealer.refuse_replay();
            return (None, Vec::new());
        }
        let Some(Datagram::Report(report)) =
            opened.and_then(|opened| Datagram::decode(&opened.payload))
        else {
            return (None, Vec::new());
        };
        if report.cluster != self.cluster {
            return (None, Vec::new());
        }
        let their_hash = report.shards_hash;
        let id = report.id.clone();
        let applied = self.table.apply(report, now);
        let replies = if their_hash != self.hash && self.hash != 0 && self.may_answer(from, now) {
            let sent = self.clock.ms(now);
            let sealed: Vec<Vec<u8>> = self
                .pages
                .iter()
                .map(|page| self.sealer.seal(page, sent))
                .collect();
            for page in &sealed {
                self.traffic.sent(page.len(), 1);
            }
            sealed
        } else {
            Vec::new()
        };
        (Some((id, applied)), replies)
    }

    /// Sweeps the table (see [`TaskManagerTable::sweep`]).
    pub fn sweep(&mut self, now: Instant) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        self.table.sweep(now)
    }

    fn may_answer(&mut self, from: SocketAddr, now: Instant) -> bool {
        if now.duration_since(self.pruned) > ANSWER_EVERY * 10 {
            self.answered
                .retain(|_, at| now.duration_since(*at) < ANSWER_EVERY);
            self.pruned = now;
        }
        if self
            .answered
            .get(&from)
            .is_some_and(|at| now.duration_since(*at) < ANSWER_EVERY)
        {
            return false;
        }
        self.answered.insert(from, now);
        true
    }
}

/// A shard's table of TaskManagers and the socket that feeds it.
#[derive(Clone)]
pub struct ReportListener {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    core: Mutex<ShardCore>,
}

impl ReportListener {
    /// Binds `listen` (UDP) and keeps the table; `shards` is the shard list to hand out (the
    /// report addresses of the live shards, from gossip).
    pub async fn start(
        config: &ReportsConfig,
        cluster_id: &str,
        sealer: Sealer,
        listen: SocketAddr,
        shards: watch::Receiver<Vec<SocketAddr>>,
    ) -> anyhow::Result<Self> {
        let socket = tokio::net::UdpSocket::bind(listen).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot bind the reports socket on {listen}/UDP (the gRPC port): {error}"
            )
        })?;
        let addr = socket.local_addr()?;
        let inner = Arc::new(Inner {
            addr,
            core: Mutex::new(ShardCore::new(
                cluster_tag(cluster_id),
                config.times(),
                Instant::now(),
                sealer,
            )),
        });
        crate::spawn_instrumented(receive(Arc::downgrade(&inner), socket, shards));
        crate::spawn_instrumented(sweep(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Runs `read` on the table.
    pub fn with_table<R>(&self, read: impl FnOnce(&mut TaskManagerTable) -> R) -> R {
        read(lock(&self.inner.core).table())
    }

    /// What the socket sent and received so far.
    pub fn traffic(&self) -> Traffic {
        lock(&self.inner.core).traffic
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

async fn receive(
    inner: std::sync::Weak<Inner>,
    socket: tokio::net::UdpSocket,
    mut shards: watch::Receiver<Vec<SocketAddr>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut first = true;
    loop {
        let received = socket.recv_from(&mut buf).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Ok((len, from)) = received else {
            continue;
        };
        let (applied, replies) = {
            let mut core = lock(&inner.core);
            if first || shards.has_changed().unwrap_or(false) {
                first = false;
                core.set_shards(&shards.borrow_and_update());
            }
            core.receive(from, &buf[..len], Instant::now())
        };
        match applied {
            Some((id, Applied::Joined)) => tracing::info!(taskmanager = %id, "taskmanager joined"),
            Some((id, Applied::Restarted)) => {
                tracing::info!(taskmanager = %id, "taskmanager restarted")
            }
            Some((id, Applied::Recovered)) => {
                tracing::info!(taskmanager = %id, "taskmanager reports again")
            }
            _ => {}
        }
        for reply in replies {
            let _ = socket.send_to(&reply, from).await;
        }
    }
}

async fn sweep(inner: std::sync::Weak<Inner>) {
    let mut ticker = tokio::time::interval(SWEEP);
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (suspected, forgotten) = lock(&inner.core).sweep(Instant::now());
        for id in suspected {
            tracing::info!(taskmanager = %id, "taskmanager silent; passed over until it reports");
        }
        for id in forgotten {
            tracing::info!(taskmanager = %id, "taskmanager forgotten after a long silence");
        }
    }
}

impl ReportsConfig {
    /// The table's timings.
    pub fn times(&self) -> TableTimes {
        TableTimes {
            suspect_after: Duration::from_millis(self.suspect_after_ms),
            forget_after: Duration::from_millis(self.forget_after_ms),
            down_for: Duration::from_millis(self.down_for_ms),
        }
    }
}
