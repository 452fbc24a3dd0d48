//! A shard's table of TaskManagers, fed by their reports (sans-IO: time is a parameter, so the
//! simulation drives the same code at virtual time). A TaskManager is choosable while its
//! reports arrive, it takes work, and no failed call marked it down; silent for
//! `suspect_after` it is passed over (used again at its next report), silent for
//! `forget_after` it is dropped. A report of an older generation never replaces a newer one.
//!
//! Choosing is O(1) in the pool's size: each pool keeps its choosable members in a vector
//! (swap-remove on change), sampled at random for power of two choices.

use super::wire::Report;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long silence and failures count.
#[derive(Clone, Copy, Debug)]
pub struct TableTimes {
    /// Silence after which a TaskManager is passed over.
    pub suspect_after: Duration,
    /// Silence after which it is forgotten.
    pub forget_after: Duration,
    /// How long a failed call keeps it out (a restart lifts this at once).
    pub down_for: Duration,
}

/// What applying a report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A TaskManager this table did not know.
    Joined,
    /// A newer report of a known one.
    Updated,
    /// A new generation replaced the old one.
    Restarted,
    /// Older than what the table holds (a late or replayed datagram, or an old generation).
    Stale,
    /// Came back after being passed over for silence.
    Recovered,
}

struct Entry {
    report: Report,
    last_seen: Instant,
    suspect: bool,
    down: Option<(Instant, String)>,
    /// Index in its pool's choosable vector while choosable.
    slot: Option<usize>,
}

impl Entry {
    fn serving(&self) -> bool {
        !self.report.draining && !self.report.starting
    }

    fn choosable(&self) -> bool {
        self.serving() && !self.suspect && self.down.is_none()
    }
}

/// A candidate for a lease: its URL and free slots as last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// gRPC URL.
    pub url: String,
    /// Free slots as last reported.
    pub slots_free: u64,
}

/// The TaskManagers one shard knows, by id.
pub struct TaskManagerTable {
    times: TableTimes,
    entries: HashMap<Arc<str>, Entry>,
    by_url: HashMap<String, Arc<str>>,
    choosable: HashMap<String, Vec<Arc<str>>>,
}

impl TaskManagerTable {
    /// An empty table.
    pub fn new(times: TableTimes) -> Self {
        Self {
            times,
            entries: HashMap::new(),
            by_url: HashMap::new(),
            choosable: HashMap::new(),
        }
    }

    /// Applies one report received at `now`.
    pub fn apply(&mut self, report: Report, now: Instant) -> Applied {
        let id: Arc<str> = Arc::from(report.id.as_str());
        let applied = match self.entries.get(&id) {
            None => Applied::Joined,
            Some(entry) if report.generation < entry.report.generation => return Applied::Stale,
            Some(entry) if report.generation > entry.report.generation => Applied::Restarted,
            Some(entry) if report.seq <= entry.report.seq => return Applied::Stale,
            Some(entry) if entry.suspect => Applied::Recovered,
            Some(_) => Applied::Updated,
        };
        let (down, was) = match self.entries.get(&id) {
            // A restart lifts a failed call's mark; a newer report of the same process does not.
            Some(entry) if applied != Applied::Restarted => (entry.down.clone(), true),
            Some(_) => (None, true),
            None => (None, false),
        };
        if was {
            self.unchoose(&id);
            if let Some(old) = self.entries.get(&id)
                && old.report.grpc_url != report.grpc_url
            {
                self.by_url.remove(&old.report.grpc_url);
            }
        }
        self.by_url.insert(report.grpc_url.clone(), Arc::clone(&id));
        self.entries.insert(
            Arc::clone(&id),
            Entry {
                report,
                last_seen: now,
                suspect: false,
                down,
                slot: None,
            },
        );
        self.choose_if_able(&id);
        applied
    }

    /// Passes over the silent, forgets the long silent and lifts expired marks; returns the ids
    /// newly suspected and forgotten.
    pub fn sweep(&mut self, now: Instant) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let mut suspected = Vec::new();
        let mut forgotten = Vec::new();
        let mut lifted = Vec::new();
        for (id, entry) in &mut self.entries {
            let silent = now.saturating_duration_since(entry.last_seen);
            if silent >= self.times.forget_after {
                forgotten.push(Arc::clone(id));
            } else if silent >= self.times.suspect_after && !entry.suspect {
                entry.suspect = true;
                suspected.push(Arc::clone(id));
            }
            if entry.down.as_ref().is_some_and(|(until, _)| *until <= now) {
                entry.down = None;
                lifted.push(Arc::clone(id));
            }
        }
        for id in suspected.iter().chain(&forgotten) {
            self.unchoose(id);
        }
        for id in &forgotten {
            if let Some(entry) = self.entries.remove(id) {
                self.by_url.remove(&entry.report.grpc_url);
            }
        }
        for id in &lifted {
            self.choose_if_able(id);
        }
        (suspected, forgotten)
    }

    /// Keeps the TaskManager at `url` out of choices for `down_for` after a failed call.
    pub fn mark_down(&mut self, url: &str, reason: &str, now: Instant) -> bool {
        let Some(id) = self.by_url.get(url).cloned() else {
            return false;
        };
        self.unchoose(&id);
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.down = Some((now + self.times.down_for, reason.to_string()));
        }
        true
    }

    /// Up to `limit` distinct choosable TaskManagers of `pool` in power-of-two order: each is
    /// the one with more free slots of two sampled at random among those not chosen yet.
    /// `busy(url)` is subtracted from a candidate's free slots (calls in flight to it). Costs
    /// O(limit), not O(pool): a small pool is ordered whole, a large one sampled.
    pub fn choose(
        &self,
        pool: &str,
        limit: usize,
        busy: &dyn Fn(&str) -> u64,
        random: &mut dyn FnMut() -> usize,
    ) -> Vec<Choice> {
        let Some(members) = self.choosable.get(pool) else {
            return Vec::new();
        };
        let choice = |id: &Arc<str>| {
            let entry = &self.entries[id];
            Choice {
                url: entry.report.grpc_url.clone(),
                slots_free: u64::from(entry.report.slots_free)
                    .saturating_sub(busy(&entry.report.grpc_url)),
            }
        };
        let limit = limit.min(members.len());
        let mut chosen = Vec::with_capacity(limit);
        if members.len() <= SMALL_POOL {
            let mut left: Vec<Choice> = members.iter().map(choice).collect();
            while chosen.len() < limit {
                let Some(index) = better_of_two(&left, random) else {
                    break;
                };
                chosen.push(left.swap_remove(index));
            }
            return chosen;
        }
        let mut taken: HashSet<usize> = HashSet::with_capacity(limit * 2);
        while chosen.len() < limit {
            let Some(first) = untaken(members.len(), &taken, random) else {
                break;
            };
            taken.insert(first);
            let second = untaken(members.len(), &taken, random);
            let a = choice(&members[first]);
            let best = match second.map(|second| (second, choice(&members[second]))) {
                Some((second, b)) if b.slots_free > a.slots_free => {
                    taken.remove(&first);
                    taken.insert(second);
                    b
                }
                _ => a,
            };
            chosen.push(best);
        }
        chosen
    }

    /// Says whether the TaskManager `id` is choosable now.
    pub fn is_up(&self, id: &str) -> bool {
        self.entries.get(id).is_some_and(Entry::choosable)
    }

    /// Says whether the TaskManager at gRPC `url` is choosable now.
    pub fn is_up_at(&self, url: &str) -> bool {
        self.by_url.get(url).is_some_and(|id| self.is_up(id))
    }

    /// Returns the number of TaskManagers known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Says whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn choose_if_able(&mut self, id: &Arc<str>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.slot.is_some() || !entry.choosable() {
            return;
        }
        let members = self.choosable.entry(entry.report.pool.clone()).or_default();
        entry.slot = Some(members.len());
        members.push(Arc::clone(id));
    }

    fn unchoose(&mut self, id: &Arc<str>) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let Some(slot) = entry.slot.take() else {
            return;
        };
        let pool = entry.report.pool.clone();
        let Some(members) = self.choosable.get_mut(&pool) else {
            return;
        };
        members.swap_remove(slot);
        if let Some(moved) = members.get(slot).cloned()
            && let Some(entry) = self.entries.get_mut(&moved)
        {
            entry.slot = Some(slot);
        }
        if members.is_empty() {
            self.choosable.remove(&pool);
        }
    }
}

/// Pools up to this size are ordered whole (exact power of two choices over all).
const SMALL_POOL: usize = 64;

/// A random index below `len` not in `taken`, if one turns up in a few tries.
fn untaken(len: usize, taken: &HashSet<usize>, random: &mut dyn FnMut() -> usize) -> Option<usize> {
    (0..16)
        .map(|_| random() % len)
        .find(|index| !taken.contains(index))
}

/// The index of the better of two distinct random entries of `left` (the only one if one).
fn better_of_two(left: &[Choice], random: &mut dyn FnMut() -> usize) -> Option<usize> {
    match left.len() {
        0 => None,
        1 => Some(0),
        len => {
            let first = random() % len;
            let second = (first + 1 + random() % (len - 1)) % len;
            Some(if left[second].slots_free > left[first].slots_free {
                second
            } else {
                first
            })
        }
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;

#[path = "table_views.rs"]
mod views;

pub use views::{Counts, ReportView, TaskManagerEntry};
