//! The TaskManager's slot ledger: leases granted to shards, each with slots and an expiry.
//! One mutex makes reserve-or-refuse atomic, so racing shards cannot oversubscribe.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Slots and leases of one TaskManager.
pub(crate) struct LeaseTable {
    slots_total: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    leases: HashMap<String, Lease>,
    used: u64,
    used_max: u64,
    granted_total: u64,
    refused_total: u64,
    expired_total: u64,
}

struct Lease {
    query_id: String,
    holder: String,
    slots: u64,
    expires: Instant,
    /// Set once a head TaskManager keeps the lease alive (hand-over accepted or renewed):
    /// from then on the shard that reserved it is out of the picture.
    adopted: bool,
}

/// One lease, as `/v1/state` shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LeaseView {
    pub(crate) lease_id: String,
    pub(crate) query_id: String,
    pub(crate) holder: String,
    pub(crate) slots: u64,
    pub(crate) adopted: bool,
    pub(crate) expires_in_ms: u64,
}

/// A point-in-time view of the ledger, for gossip, metrics and `/v1/state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct LeaseStats {
    pub(crate) slots_total: u64,
    pub(crate) slots_used: u64,
    /// The most slots ever leased at once: never above `slots_total`.
    pub(crate) slots_used_max: u64,
    pub(crate) leases_active: u64,
    pub(crate) leases_granted_total: u64,
    pub(crate) leases_refused_total: u64,
    pub(crate) leases_expired_total: u64,
}

impl LeaseTable {
    pub(crate) fn new(slots_total: u64) -> Self {
        Self {
            slots_total,
            state: Mutex::new(State::default()),
        }
    }

    /// Grants `slots` under `lease_id` for `ttl`, or refuses with the free slot count. A lease
    /// id already held is renewed, not granted twice.
    pub(crate) fn reserve(
        &self,
        lease_id: &str,
        query_id: &str,
        holder: &str,
        slots: u64,
        ttl: Duration,
    ) -> Result<u64, u64> {
        let mut state = self.lock();
        let now = Instant::now();
        state.sweep(now);
        if let Some(lease) = state.leases.get_mut(lease_id) {
            lease.expires = now + ttl;
            return Ok(self.slots_total - state.used);
        }
        let free = self.slots_total - state.used;
        if slots == 0 || slots > free {
            state.refused_total += 1;
            return Err(free);
        }
        state.used += slots;
        state.used_max = state.used_max.max(state.used);
        state.granted_total += 1;
        state.leases.insert(
            lease_id.to_string(),
            Lease {
                query_id: query_id.to_string(),
                holder: holder.to_string(),
                slots,
                expires: now + ttl,
                adopted: false,
            },
        );
        tracing::debug!(%lease_id, %query_id, slots, "lease granted");
        Ok(free - slots)
    }

    /// Extends the leases it holds; returns the ids it does not hold.
    pub(crate) fn renew(&self, lease_ids: &[String], ttl: Duration) -> Vec<String> {
        let mut state = self.lock();
        let now = Instant::now();
        state.sweep(now);
        lease_ids
            .iter()
            .filter(|lease_id| match state.leases.get_mut(lease_id.as_str()) {
                Some(lease) => {
                    lease.expires = now + ttl;
                    lease.adopted = true;
                    false
                }
                None => true,
            })
            .cloned()
            .collect()
    }

    /// Returns the slots of the given leases.
    pub(crate) fn release(&self, lease_ids: &[String]) {
        let mut state = self.lock();
        for lease_id in lease_ids {
            if let Some(lease) = state.leases.remove(lease_id) {
                state.used -= lease.slots;
                tracing::debug!(%lease_id, query_id = %lease.query_id, "lease released");
            }
        }
    }

    /// Marks a lease as kept alive by this TaskManager as the query's head, to expire within
    /// `fetch_window` unless the result's fetch renews it; false when it is not held.
    pub(crate) fn adopt(&self, lease_id: &str, fetch_window: Duration) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep(now);
        match state.leases.get_mut(lease_id) {
            Some(lease) => {
                lease.adopted = true;
                lease.expires = lease.expires.min(now + fetch_window);
                true
            }
            None => false,
        }
    }

    /// Returns up to `limit` live leases, soonest to expire first.
    pub(crate) fn list(&self, limit: usize) -> Vec<LeaseView> {
        let mut state = self.lock();
        let now = Instant::now();
        state.sweep(now);
        let mut views: Vec<LeaseView> = state
            .leases
            .iter()
            .map(|(lease_id, lease)| LeaseView {
                lease_id: lease_id.clone(),
                query_id: lease.query_id.clone(),
                holder: lease.holder.clone(),
                slots: lease.slots,
                adopted: lease.adopted,
                expires_in_ms: lease.expires.saturating_duration_since(now).as_millis() as u64,
            })
            .collect();
        views.sort_by_key(|view| view.expires_in_ms);
        views.truncate(limit);
        views
    }

    /// Says whether `lease_id` is held and live.
    pub(crate) fn is_valid(&self, lease_id: &str) -> bool {
        let mut state = self.lock();
        state.sweep(Instant::now());
        state.leases.contains_key(lease_id)
    }

    /// Sweeps expired leases and returns the ledger's figures.
    pub(crate) fn stats(&self) -> LeaseStats {
        let mut state = self.lock();
        state.sweep(Instant::now());
        LeaseStats {
            slots_total: self.slots_total,
            slots_used: state.used,
            slots_used_max: state.used_max,
            leases_active: state.leases.len() as u64,
            leases_granted_total: state.granted_total,
            leases_refused_total: state.refused_total,
            leases_expired_total: state.expired_total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl State {
    fn sweep(&mut self, now: Instant) {
        let before = self.leases.len();
        let mut returned = 0;
        self.leases.retain(|lease_id, lease| {
            let live = lease.expires > now;
            if !live {
                tracing::info!(%lease_id, query_id = %lease.query_id, "lease expired; its slots return");
                returned += lease.slots;
            }
            live
        });
        self.used -= returned;
        self.expired_total += (before - self.leases.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn refuses_beyond_free_slots_and_returns_released_ones() {
        let table = LeaseTable::new(2);
        assert_eq!(table.reserve("a", "q1", "jm", 1, TTL), Ok(1));
        assert_eq!(
            table.reserve("a", "q1", "jm", 1, TTL),
            Ok(1),
            "a held lease renews"
        );
        assert_eq!(table.reserve("b", "q2", "jm", 1, TTL), Ok(0));
        assert_eq!(table.reserve("c", "q3", "jm", 1, TTL), Err(0));
        assert_eq!(table.reserve("d", "q4", "jm", 3, TTL), Err(0));
        table.release(&["a".to_string()]);
        assert!(!table.is_valid("a"));
        assert!(table.is_valid("b"));
        assert_eq!(table.reserve("c", "q3", "jm", 1, TTL), Ok(0));
        let stats = table.stats();
        assert_eq!((stats.slots_used, stats.slots_used_max), (2, 2));
        assert_eq!(stats.leases_refused_total, 2);
    }

    #[test]
    fn expired_leases_return_their_slots_and_cannot_be_renewed() {
        let table = LeaseTable::new(1);
        table
            .reserve("a", "q1", "jm", 1, Duration::from_millis(20))
            .unwrap();
        assert_eq!(table.reserve("b", "q2", "jm", 1, TTL), Err(0));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(table.renew(&["a".to_string()], TTL), vec!["a".to_string()]);
        assert_eq!(table.reserve("b", "q2", "jm", 1, TTL), Ok(0));
        assert_eq!(table.stats().leases_expired_total, 1);
    }

    #[test]
    fn an_adopted_lease_waits_only_its_fetch_window_until_renewed() {
        let table = LeaseTable::new(1);
        table.reserve("a", "q1", "jm", 1, TTL).unwrap();
        assert!(table.adopt("a", Duration::from_millis(20)));
        std::thread::sleep(Duration::from_millis(30));
        // Never fetched: its slot is back long before the TTL.
        assert_eq!(table.reserve("b", "q2", "jm", 1, TTL), Ok(0));
        assert!(!table.adopt("a", TTL));
        // Fetched in time: the fetch's renewal gives it the whole TTL again.
        assert!(table.adopt("b", Duration::from_millis(20)));
        assert!(table.renew(&["b".to_string()], TTL).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert!(table.is_valid("b"));
    }

    #[test]
    fn racing_reservations_never_oversubscribe() {
        let table = std::sync::Arc::new(LeaseTable::new(3));
        let granted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|thread| {
                    let table = std::sync::Arc::clone(&table);
                    scope.spawn(move || {
                        (0..50)
                            .filter(|round| {
                                table
                                    .reserve(&format!("{thread}-{round}"), "q", "jm", 1, TTL)
                                    .is_ok()
                            })
                            .count()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .sum()
        });
        assert_eq!(granted, 3);
        assert_eq!(table.stats().slots_used_max, 3);
    }
}
