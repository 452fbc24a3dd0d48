//! The simulated cluster: N TaskManagers ([`ReporterCore`]) and S shards ([`ShardCore`]) — the
//! real encoders, decoders and state machines — exchanging datagrams through a lossy network
//! in virtual time (an event queue; nothing sleeps).

use flotilla_cluster::reports::{Applied, Report, ReporterCore, SWEEP, ShardCore, TableTimes};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// One-way delay of every datagram.
const LATENCY: Duration = Duration::from_micros(200);

/// Who a datagram goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Node {
    TaskManager(usize),
    Shard(usize),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// A TaskManager's reporter may be due.
    Tick(usize),
    /// A shard sweeps its table.
    Sweep(usize),
    /// A datagram arrives.
    Deliver {
        to: Node,
        from: usize,
        bytes: Rc<[u8]>,
    },
    /// A watch starts: shards that already pass its TaskManager over count at 0 ms.
    Watch(usize),
}

/// What happened to one TaskManager, as the scenario asks.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Fate {
    /// Joins (sends its first report) at this time.
    pub(super) joins_at: Duration,
    /// Crashes (sends nothing more) at this time.
    pub(super) crashes_at: Option<Duration>,
    /// Frozen (sends and handles nothing) during this time.
    pub(super) paused: Option<(Duration, Duration)>,
}

/// What the shards saw of one TaskManager: when each first had it choosable after `since`,
/// and when each passed it over after `since`.
#[derive(Clone, Debug, Default)]
pub(super) struct Watch {
    pub(super) taskmanager: usize,
    pub(super) since: Duration,
    pub(super) usable: Vec<Option<Duration>>,
    pub(super) suspected: Vec<Option<Duration>>,
}

/// The simulated cluster.
pub(super) struct World {
    start: Instant,
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    sequence: u64,
    pub(super) taskmanagers: Vec<ReporterCore>,
    pub(super) shards: Vec<ShardCore>,
    pub(super) fates: Vec<Fate>,
    shard_addrs: HashMap<SocketAddr, usize>,
    loss: f64,
    rng: fastrand::Rng,
    /// Datagrams lost on the way.
    pub(super) lost: u64,
    /// Live TaskManagers a shard passed over (not crashed, not frozen at the time).
    pub(super) false_suspicions: u64,
    /// When each of those began, by (shard, TaskManager), until its next report.
    suspected_since: HashMap<(usize, usize), Duration>,
    /// Their total time, over every TaskManager-shard pair.
    pub(super) false_suspicion_time: Duration,
    /// Live TaskManagers a shard forgot.
    pub(super) false_forgets: u64,
    pub(super) watches: Vec<Watch>,
}

impl World {
    /// `taskmanagers` fates, `shards` shards; TaskManagers seed with the first three shards.
    pub(super) fn new(
        fates: Vec<Fate>,
        shards: usize,
        interval: Duration,
        times: TableTimes,
        loss: f64,
        seed: u64,
    ) -> Self {
        let start = Instant::now();
        let cluster = flotilla_cluster::reports::cluster_tag("flotilla");
        // Sealed as in a real cluster: the bytes counted include the seal.
        let sealer = flotilla_cluster::keys::Sealer::new(
            &"simulated secret".into(),
            flotilla_cluster::keys::Traffic::Reports,
        );
        let shard_addrs: Vec<SocketAddr> = (0..shards)
            .map(|index| SocketAddr::from(([10, 1, (index >> 8) as u8, index as u8], 50051)))
            .collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut world = World {
            start,
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            sequence: 0,
            taskmanagers: Vec::with_capacity(fates.len()),
            shards: (0..shards)
                .map(|_| {
                    let mut core = ShardCore::new(cluster, times, start, sealer.clone());
                    core.set_shards(&shard_addrs);
                    core
                })
                .collect(),
            fates: Vec::new(),
            shard_addrs: shard_addrs
                .iter()
                .enumerate()
                .map(|(index, addr)| (*addr, index))
                .collect(),
            loss,
            rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
            lost: 0,
            false_suspicions: 0,
            suspected_since: HashMap::new(),
            false_suspicion_time: Duration::ZERO,
            false_forgets: 0,
            watches: Vec::new(),
        };
        for (index, fate) in fates.iter().enumerate() {
            // Members of the first start are spread over an interval; a joiner reports at once.
            let phase = Duration::from_micros(rng.u64(0..interval.as_micros() as u64));
            let first = if fate.joins_at.is_zero() {
                phase
            } else {
                fate.joins_at
            };
            let report = Report {
                cluster,
                id: format!("taskmanager-{index:05}"),
                generation: 1_765_000_000_000_000 + index as u64,
                seq: 0,
                grpc_url: format!("http://10.2.{}.{}:50051", (index >> 8) & 255, index & 255),
                admin_addr: format!("10.2.{}.{}:9090", (index >> 8) & 255, index & 255),
                pool: "default".to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                previous_exit: String::new(),
                slots_total: 16,
                slots_free: 16,
                in_flight: 0,
                draining: false,
                starting: false,
                shards_hash: 0,
            };
            let seeds = shard_addrs.iter().take(3).copied().collect();
            world.taskmanagers.push(ReporterCore::new(
                report,
                interval,
                seeds,
                start + first,
                sealer.clone(),
            ));
            world.push(first, Event::Tick(index));
        }
        world.fates = fates;
        for shard in 0..shards {
            let phase = Duration::from_micros(rng.u64(0..SWEEP.as_micros() as u64));
            world.push(phase, Event::Sweep(shard));
        }
        world
    }

    /// Follows what the shards see of `taskmanager` from `since` on.
    pub(super) fn watch(&mut self, taskmanager: usize, since: Duration) -> usize {
        self.watches.push(Watch {
            taskmanager,
            since,
            usable: vec![None; self.shards.len()],
            suspected: vec![None; self.shards.len()],
        });
        let index = self.watches.len() - 1;
        self.push(since, Event::Watch(index));
        index
    }

    /// Runs every event up to `until`.
    pub(super) fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, event))) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.handle(event);
        }
        self.now = until;
    }

    fn push(&mut self, at: Duration, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, event)));
    }

    fn instant(&self) -> Instant {
        self.start + self.now
    }

    /// Where the TaskManager is: None when it runs, or when it will run again.
    fn blocked(&self, taskmanager: usize) -> Option<Option<Duration>> {
        let fate = &self.fates[taskmanager];
        if fate.crashes_at.is_some_and(|at| self.now >= at) {
            return Some(None);
        }
        match fate.paused {
            Some((from, to)) if self.now >= from && self.now < to => Some(Some(to)),
            _ => None,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Watch(index) => {
                let id = self.taskmanagers[self.watches[index].taskmanager]
                    .id()
                    .to_string();
                for shard in 0..self.shards.len() {
                    if !self.shards[shard].table().is_up(&id) {
                        self.watches[index].suspected[shard] = Some(Duration::ZERO);
                    }
                }
            }
            Event::Tick(index) => match self.blocked(index) {
                Some(None) => {}
                Some(Some(resumes)) => self.push(resumes, Event::Tick(index)),
                None => self.tick(index),
            },
            Event::Sweep(shard) => {
                let now = self.instant();
                let (suspected, forgotten) = self.shards[shard].sweep(now);
                for id in &suspected {
                    let index = index_of(id);
                    if self.blocked(index).is_none() {
                        self.false_suspicions += 1;
                        self.suspected_since.insert((shard, index), self.now);
                    }
                    for watch in &mut self.watches {
                        if watch.taskmanager == index && self.now >= watch.since {
                            watch.suspected[shard].get_or_insert(self.now - watch.since);
                        }
                    }
                }
                for id in &forgotten {
                    if self.blocked(index_of(id)).is_none() {
                        self.false_forgets += 1;
                    }
                }
                self.push(self.now + SWEEP, Event::Sweep(shard));
            }
            Event::Deliver {
                to: Node::Shard(shard),
                from,
                bytes,
            } => {
                let now = self.instant();
                let from_addr = SocketAddr::from(([10, 2, (from >> 8) as u8, from as u8], 7946));
                let (applied, replies) = self.shards[shard].receive(from_addr, &bytes, now);
                if let Some((id, applied)) = applied
                    && applied != Applied::Stale
                {
                    let index = index_of(&id);
                    if let Some(since) = self.suspected_since.remove(&(shard, index)) {
                        self.false_suspicion_time += self.now - since;
                    }
                    let now = self.now;
                    let watched = self.watches.iter().any(|watch| watch.taskmanager == index);
                    if watched && self.shards[shard].table().is_up(&id) {
                        for watch in &mut self.watches {
                            if watch.taskmanager == index && now >= watch.since {
                                watch.usable[shard].get_or_insert(now - watch.since);
                            }
                        }
                    }
                }
                for reply in replies {
                    self.send(Node::TaskManager(from), shard, reply.into());
                }
            }
            Event::Deliver {
                to: Node::TaskManager(index),
                bytes,
                ..
            } => match self.blocked(index) {
                Some(None) => {}
                Some(Some(resumes)) => self.push(
                    resumes,
                    Event::Deliver {
                        to: Node::TaskManager(index),
                        from: 0,
                        bytes,
                    },
                ),
                None => {
                    let now = self.instant();
                    if self.taskmanagers[index].receive(&bytes, now) {
                        // Its next report is due at once.
                        self.push(self.now, Event::Tick(index));
                    }
                }
            },
        }
    }

    fn tick(&mut self, index: usize) {
        let now = self.instant();
        let Some((bytes, targets)) = self.taskmanagers[index].poll(now, (16, 16, 0)) else {
            let next = self.taskmanagers[index].next_at() - self.start;
            self.push(next.max(self.now), Event::Tick(index));
            return;
        };
        let bytes: Rc<[u8]> = bytes.into();
        for target in targets {
            if let Some(&shard) = self.shard_addrs.get(&target) {
                self.send(Node::Shard(shard), index, Rc::clone(&bytes));
            }
        }
        let next = self.taskmanagers[index].next_at() - self.start;
        self.push(next, Event::Tick(index));
    }

    fn send(&mut self, to: Node, from: usize, bytes: Rc<[u8]>) {
        if self.loss > 0.0 && self.rng.f64() < self.loss {
            self.lost += 1;
            return;
        }
        self.push(self.now + LATENCY, Event::Deliver { to, from, bytes });
    }
}

/// The index in `taskmanager-00042`.
fn index_of(id: &str) -> usize {
    id.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_cluster::reports::ReportsConfig;

    #[test]
    fn joins_crashes_and_freezes_reach_every_shard_in_time() {
        let mut fates = vec![Fate::default(); 101];
        fates[100].joins_at = Duration::from_secs(10);
        fates[0].crashes_at = Some(Duration::from_secs(12));
        fates[1].paused = Some((Duration::from_secs(14), Duration::from_secs(19)));
        let times = ReportsConfig::default().times();
        let mut world = World::new(fates, 4, Duration::from_secs(1), times, 0.0, 3);
        let join = world.watch(100, Duration::from_secs(10));
        let crash = world.watch(0, Duration::from_secs(12));
        let freeze = world.watch(1, Duration::from_secs(14));
        let back = world.watch(1, Duration::from_secs(19));
        world.run_until(Duration::from_secs(30));
        let slowest =
            |times: &[Option<Duration>]| times.iter().map(|time| time.unwrap()).max().unwrap();
        assert!(slowest(&world.watches[join].usable) < Duration::from_secs(2));
        assert!(slowest(&world.watches[crash].suspected) < Duration::from_secs(3));
        assert!(slowest(&world.watches[freeze].suspected) < Duration::from_secs(3));
        assert!(slowest(&world.watches[back].usable) < Duration::from_secs(2));
        assert_eq!((world.false_suspicions, world.false_forgets), (0, 0));
        for shard in &mut world.shards {
            // 100 live (the joiner in, the crashed one passed over) and the frozen one back.
            assert_eq!(shard.table().counts().0.up, 100);
        }
        let largest = world
            .taskmanagers
            .iter()
            .map(|reporter| reporter.traffic.largest)
            .max();
        assert!(largest.unwrap() <= flotilla_cluster::reports::MAX_DATAGRAM);
    }
}
