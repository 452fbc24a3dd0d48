//! The shard's result index: for the statements it owns (gateways route the same SQL to the
//! same shard), which TaskManager keeps the result, under which entry, read from which table
//! versions. The result's bytes stay on that TaskManager (`taskmanager/result_cache.rs`); a hit
//! sends the gateway there with a `cache:<entry>` ticket, and no plan, lease or hand-over.
//!
//! A result is reused only for the same statement text, bound parameters, pool and tenant
//! (tenants never share an entry), and only while every table it read is, listed again at the
//! hit, at the version it was produced from: an answer from the cache equals the statement's
//! answer on the files as they are when the query arrives. Statements calling functions that
//! are not immutable (`now()`, `random()`, `current_date`), `EXPLAIN`, catalog questions and
//! tables outside the catalog are never cached; a client bypasses with `cache-control:
//! no-cache`.
//!
//! A restarted shard starts with an empty index (its TaskManagers' entries age out of their
//! caches): rebuilding it from announcements would spend report traffic on every TaskManager
//! for what one run of each statement rebuilds.

use crate::catalog::versions::Version;
use flotilla_protocol::QueryCommand;
use lru::LruCache;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// What a result depends on besides its tables' files.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ResultKey {
    sql: String,
    params: Vec<u8>,
    pool: String,
    tenant: String,
}

impl ResultKey {
    pub(super) fn new(command: &QueryCommand) -> Self {
        Self {
            sql: command.sql.trim().to_string(),
            params: command.params.clone(),
            pool: command.pool.clone(),
            tenant: command.tenant.clone(),
        }
    }
}

/// Where a result is kept, and what it was read from.
#[derive(Clone, Debug)]
pub(super) struct Indexed {
    /// The TaskManager keeping it (its gRPC URL).
    pub(super) taskmanager: String,
    /// Its entry id in that TaskManager's result cache.
    pub(super) entry: String,
    /// The tables it read, at the versions it was read from.
    pub(super) tables: Vec<(String, Version)>,
}

/// Why a query was or was not answered from the cache, as `x-flotilla-cache` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CacheOutcome {
    Hit,
    Miss,
    Bypass,
    Uncachable,
}

impl CacheOutcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
            Self::Uncachable => "uncachable",
        }
    }
}

/// A bounded, least-recently-used index of kept results.
pub(super) struct ResultIndex {
    entries: Option<Mutex<LruCache<ResultKey, Indexed>>>,
    /// Statements being planned and handed over now, by the first query that asked: identical
    /// ones wait for its entry instead of planning and running too.
    leading: Mutex<HashMap<ResultKey, watch::Sender<Option<Indexed>>>>,
    metrics: ResultIndexMetrics,
}

/// The first of identical queries: it plans and hands over; the others wait for what it
/// [`Leader::indexes`]. Dropped without an entry (an error, or a result not kept), it lets
/// them go on their own.
pub(super) struct Leader {
    index: Arc<ResultIndex>,
    key: ResultKey,
}

impl Leader {
    /// Tells the queries waiting on this one where its result is kept.
    pub(super) fn indexes(&self, indexed: &Indexed) {
        if let Some(waiting) = self.index.leading().get(&self.key) {
            waiting.send_replace(Some(indexed.clone()));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.index.leading().remove(&self.key);
    }
}

impl ResultIndex {
    /// An index of at most `capacity` results; 0 turns the result cache off.
    pub(super) fn new(capacity: usize, registry: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            entries: NonZeroUsize::new(capacity)
                .map(|capacity| Mutex::new(LruCache::new(capacity))),
            leading: Mutex::default(),
            metrics: ResultIndexMetrics::new(registry)?,
        })
    }

    /// Whether results are cached at all.
    pub(super) fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// Where the result of `key` is kept, if anywhere.
    pub(super) fn get(&self, key: &ResultKey) -> Option<Indexed> {
        self.with(|entries| entries.get(key).cloned()).flatten()
    }

    /// Makes this query the leader of `key`, or, when another identical query leads, waits
    /// (at most `wait`) for where that one's result is kept: None when it was not kept.
    pub(super) async fn lead_or_follow(
        self: &Arc<Self>,
        key: &ResultKey,
        wait: Duration,
    ) -> Result<Leader, Option<Indexed>> {
        let mut waiting = {
            let mut leading = self.leading();
            match leading.get(key) {
                Some(leader) => leader.subscribe(),
                None => {
                    leading.insert(key.clone(), watch::channel(None).0);
                    return Ok(Leader {
                        index: Arc::clone(self),
                        key: key.clone(),
                    });
                }
            }
        };
        let indexed = tokio::time::timeout(wait, waiting.wait_for(Option::is_some)).await;
        Err(match indexed {
            Ok(Ok(indexed)) => indexed.clone(),
            _ => None,
        })
    }

    fn leading(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ResultKey, watch::Sender<Option<Indexed>>>> {
        self.leading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records where the result of `key` is kept.
    pub(super) fn insert(&self, key: ResultKey, indexed: Indexed) {
        let evicted = self.with(|entries| entries.push(key, indexed)).flatten();
        // `push` returns the replaced entry too: only a different key is an eviction.
        if evicted.is_some() {
            self.metrics.evictions.inc();
        }
        self.publish();
    }

    /// Forgets `key`'s result: its tables changed (`stale`), or its TaskManager is gone.
    pub(super) fn remove(&self, key: &ResultKey, stale: bool) {
        self.with(|entries| entries.pop(key));
        if stale {
            self.metrics.invalidations.inc();
        }
        self.publish();
    }

    /// Forgets the results that read any of `tables` (their versions changed).
    pub(super) fn invalidate(&self, tables: &[String]) {
        let dropped = self
            .with(|entries| {
                let stale: Vec<ResultKey> = entries
                    .iter()
                    .filter(|(_, indexed)| {
                        indexed.tables.iter().any(|(name, _)| tables.contains(name))
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in &stale {
                    entries.pop(key);
                }
                stale.len()
            })
            .unwrap_or(0);
        self.metrics.invalidations.inc_by(dropped as u64);
        self.publish();
    }

    /// Counts a query's outcome.
    pub(super) fn count(&self, outcome: CacheOutcome) {
        self.metrics
            .outcomes
            .with_label_values(&[outcome.as_str()])
            .inc();
    }

    /// The index's figures for `/v1/state`.
    pub(super) fn json(&self) -> serde_json::Value {
        let outcome = |label| self.metrics.outcomes.with_label_values(&[label]).get();
        serde_json::json!({
            "enabled": self.enabled(),
            "entries": self.metrics.entries.get(),
            "hits": outcome("hit"),
            "misses": outcome("miss"),
            "bypasses": outcome("bypass"),
            "uncachable": outcome("uncachable"),
            "invalidations": self.metrics.invalidations.get(),
        })
    }

    fn publish(&self) {
        let len = self.with(|entries| entries.len()).unwrap_or(0);
        self.metrics.entries.set(len as i64);
    }

    fn with<T>(&self, read: impl FnOnce(&mut LruCache<ResultKey, Indexed>) -> T) -> Option<T> {
        let entries = self.entries.as_ref()?;
        let mut entries = entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(read(&mut entries))
    }
}

/// The index's metric families.
struct ResultIndexMetrics {
    outcomes: IntCounterVec,
    invalidations: IntCounter,
    evictions: IntCounter,
    entries: IntGauge,
}

impl ResultIndexMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let families = flotilla_cluster::Families::new(registry);
        let metrics = Self {
            outcomes: families.counter_vec(
                "flotilla_jobmanager_result_cache_total",
                "Queries by result cache outcome: hit, miss, bypass (the client asked), uncachable (the statement may not be cached)",
                &["outcome"],
            )?,
            invalidations: families.counter(
                "flotilla_jobmanager_result_cache_invalidations_total",
                "Kept results forgotten because a table they read changed",
            )?,
            evictions: families.counter(
                "flotilla_jobmanager_result_index_evictions_total",
                "Kept results forgotten to keep the index within jobmanager.result_index_entries",
            )?,
            entries: families.gauge(
                "flotilla_jobmanager_result_index_entries",
                "Results the shard's index knows a TaskManager keeps",
            )?,
        };
        for outcome in [
            CacheOutcome::Hit,
            CacheOutcome::Miss,
            CacheOutcome::Bypass,
            CacheOutcome::Uncachable,
        ] {
            metrics.outcomes.with_label_values(&[outcome.as_str()]);
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(sql: &str, tenant: &str) -> QueryCommand {
        QueryCommand {
            tenant: tenant.into(),
            ..QueryCommand::new(sql)
        }
    }

    fn indexed(tables: &[&str]) -> Indexed {
        Indexed {
            taskmanager: "http://tm:1".into(),
            entry: "e".into(),
            tables: tables.iter().map(|name| (name.to_string(), 1)).collect(),
        }
    }

    #[test]
    fn entries_are_per_tenant_dropped_with_their_tables_and_bounded() {
        let index = ResultIndex::new(3, &Registry::new()).unwrap();
        let key = ResultKey::new(&command("SELECT 1 ", "a"));
        index.insert(key.clone(), indexed(&["t"]));
        assert!(
            index
                .get(&ResultKey::new(&command("SELECT 1", "a")))
                .is_some()
        );
        assert!(
            index
                .get(&ResultKey::new(&command("SELECT 1", "b")))
                .is_none(),
            "another tenant never shares an entry"
        );
        let other = ResultKey::new(&command("SELECT 2", "a"));
        index.insert(other.clone(), indexed(&["u"]));
        index.invalidate(&["t".to_string()]);
        assert!(index.get(&key).is_none());
        assert!(index.get(&other).is_some());
        assert_eq!(index.json()["invalidations"], 1);

        for n in 0..5 {
            index.insert(
                ResultKey::new(&command(&format!("SELECT {n}"), "a")),
                indexed(&[]),
            );
        }
        assert_eq!(index.json()["entries"], 3);
        assert!(!ResultIndex::new(0, &Registry::new()).unwrap().enabled());
    }
}
