//! The shard's plan cache: encoded plans of the statements it has seen, so a repeated query
//! skips parsing, planning, optimizing and encoding. Gateways route the same SQL to the same
//! shard, so each shard's cache holds its share of the cluster's statements.
//!
//! A plan is reused only for the same statement text, parameters, pool and TaskManager count,
//! and only while every table it reads is at the version it was planned from. Plans that call
//! functions whose value is not fixed by their arguments (`now()`, `random()`) are not kept:
//! DataFusion folds `now()` into a constant when it plans.

use super::metrics::JobManagerMetrics;
use super::planner::PlannedQuery;
use super::planner::calls_any;
use crate::catalog::snapshot::SnapshotTable;
use crate::catalog::versions::{CatalogVersions, Version};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::{LogicalPlan, Volatility};
use flotilla_protocol::QueryCommand;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a plan depends on besides the tables' files. Session options are fixed per shard.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PlanKey {
    sql: String,
    /// The bound parameters (an Arrow IPC stream: their types and values).
    params: Vec<u8>,
    pool: String,
    /// How many TaskManagers the stages are sized for.
    workers: usize,
}

impl PlanKey {
    pub(super) fn new(command: &QueryCommand, workers: usize) -> Self {
        Self {
            sql: command.sql.trim().to_string(),
            params: command.params.clone(),
            pool: command.pool.clone(),
            workers,
        }
    }

    fn bytes(&self) -> usize {
        self.sql.len() + self.params.len() + self.pool.len() + size_of::<Self>()
    }
}

/// A bounded, least-recently-used cache of encoded plans.
pub(super) struct PlanCache {
    entries: Mutex<Entries>,
    /// Most bytes kept; 0 keeps nothing.
    capacity: usize,
    metrics: JobManagerMetrics,
}

struct Entries {
    lru: LruCache<PlanKey, Entry>,
    bytes: usize,
}

struct Entry {
    planned: Arc<PlannedQuery>,
    /// The tables the plan reads, with the versions it was planned from.
    tables: Vec<(String, Version)>,
    bytes: usize,
}

impl PlanCache {
    pub(super) fn new(capacity: usize, metrics: JobManagerMetrics) -> Self {
        Self {
            entries: Mutex::new(Entries {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
            metrics,
        }
    }

    /// Returns the plan kept for `key` if the tables it reads are still at the versions it was
    /// planned from; drops it if not.
    pub(super) fn get(
        &self,
        key: &PlanKey,
        versions: &CatalogVersions,
    ) -> Option<Arc<PlannedQuery>> {
        if self.capacity == 0 {
            return None;
        }
        let metrics = &self.metrics;
        let mut entries = self.lock();
        let fresh = entries.lru.get(key).map(|entry| {
            let current = entry
                .tables
                .iter()
                .all(|(table, version)| versions.version(table) == Some(*version));
            (current, Arc::clone(&entry.planned))
        });
        match fresh {
            Some((true, planned)) => {
                metrics.plan_cache_hits.inc();
                return Some(planned);
            }
            Some((false, _)) => {
                let stale = entries.lru.pop(key).expect("just seen");
                entries.bytes -= stale.bytes;
                metrics.plan_cache_invalidations.inc();
                self.publish(&entries);
            }
            None => {}
        }
        metrics.plan_cache_misses.inc();
        None
    }

    /// Keeps `planned` for `key`, read from `tables` at their `versions`; evicts the least
    /// recently used plans beyond the capacity.
    pub(super) fn insert(
        &self,
        key: PlanKey,
        planned: Arc<PlannedQuery>,
        tables: Vec<(String, Version)>,
    ) {
        let bytes = key.bytes()
            + planned.plan.len()
            + tables
                .iter()
                .map(|(name, _)| name.len() + 32)
                .sum::<usize>()
            + size_of::<Entry>();
        if bytes > self.capacity {
            return;
        }
        let mut entries = self.lock();
        let entry = Entry {
            planned,
            tables,
            bytes,
        };
        entries.bytes += bytes;
        if let Some(replaced) = entries.lru.put(key, entry) {
            entries.bytes -= replaced.bytes;
        }
        while entries.bytes > self.capacity {
            let Some((_, evicted)) = entries.lru.pop_lru() else {
                break;
            };
            entries.bytes -= evicted.bytes;
            self.metrics.plan_cache_evictions.inc();
        }
        self.publish(&entries);
    }

    /// Drops the plans that read any of `tables` (their versions changed).
    pub(super) fn invalidate(&self, tables: &[String]) {
        let mut entries = self.lock();
        let stale: Vec<PlanKey> = entries
            .lru
            .iter()
            .filter(|(_, entry)| entry.tables.iter().any(|(name, _)| tables.contains(name)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            if let Some(entry) = entries.lru.pop(key) {
                entries.bytes -= entry.bytes;
            }
        }
        self.metrics
            .plan_cache_invalidations
            .inc_by(stale.len() as u64);
        self.publish(&entries);
    }

    fn publish(&self, entries: &Entries) {
        self.metrics.plan_cache_bytes.set(entries.bytes as i64);
        self.metrics
            .plan_cache_entries
            .set(entries.lru.len() as i64);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns the tables `plan` reads (subqueries included), or None when its physical plan must
/// not be reused: an `EXPLAIN`, or a call of a function that is not immutable.
pub(super) fn reused_tables(plan: &LogicalPlan) -> Option<Vec<String>> {
    if calls_any(plan, |volatility| volatility != Volatility::Immutable) {
        return None;
    }
    let mut tables = Vec::new();
    let mut explained = false;
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => explained = true,
            LogicalPlan::TableScan(scan) => tables.push(scan.table_name.table().to_string()),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables.sort_unstable();
    tables.dedup();
    (!explained).then_some(tables)
}

/// The versions `plan`'s Delta and Iceberg tables are read at, by the names the plan gives them: a plan
/// says itself which commit it reads, which may be newer than the version last watched.
pub(super) fn snapshot_versions(plan: &LogicalPlan) -> HashMap<String, Version> {
    let mut versions = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = datafusion::datasource::source_as_provider(&scan.source)
            && let Some(snapshot) = provider.downcast_ref::<SnapshotTable>()
        {
            versions.insert(scan.table_name.table().to_string(), snapshot.version);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use datafusion::prelude::SessionContext;

    async fn tables_of(sql: &str) -> Option<Vec<String>> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT) AS VALUES (1)")
            .await
            .unwrap();
        ctx.sql("CREATE TABLE u (b INT) AS VALUES (2)")
            .await
            .unwrap();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        reused_tables(&plan)
    }

    #[tokio::test]
    async fn plans_with_clocks_or_random_values_are_not_reused() {
        assert_eq!(tables_of("SELECT 1").await, Some(vec![]));
        assert_eq!(
            tables_of("SELECT a FROM t WHERE a IN (SELECT b FROM u)").await,
            Some(vec!["t".to_string(), "u".to_string()])
        );
        for sql in [
            "SELECT now()",
            "SELECT a, random() FROM t",
            "SELECT a FROM t WHERE a IN (SELECT b FROM u WHERE current_date() > '2000-01-01')",
            "EXPLAIN SELECT a FROM t",
        ] {
            assert_eq!(tables_of(sql).await, None, "{sql}");
        }
    }

    fn planned(bytes: usize) -> Arc<PlannedQuery> {
        Arc::new(PlannedQuery {
            plan: Bytes::from(vec![0; bytes]),
            options: Default::default(),
            width: 1,
            reads: None,
        })
    }

    fn key(sql: &str) -> PlanKey {
        PlanKey {
            sql: sql.into(),
            params: Vec::new(),
            pool: String::new(),
            workers: 2,
        }
    }

    #[tokio::test]
    async fn plans_are_reused_until_their_tables_change_and_bounded_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.csv"), "a\n1\n").unwrap();
        let catalog = crate::catalog::CatalogConfig {
            tables: vec![crate::catalog::TableConfig::new(
                "t",
                crate::catalog::TableFormat::Csv,
                dir.path().display().to_string(),
            )],
            ..Default::default()
        };
        let runtime = Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default());
        let versions = CatalogVersions::new(&catalog, runtime).unwrap();
        versions.refresh().await;
        let metrics = JobManagerMetrics::new(&prometheus::Registry::new()).unwrap();
        let cache = PlanCache::new(20_000, metrics.clone());
        let version = versions.version("t").unwrap();

        assert!(cache.get(&key("SELECT a FROM t"), &versions).is_none());
        cache.insert(
            key("SELECT a FROM t"),
            planned(100),
            vec![("t".into(), version)],
        );
        assert!(cache.get(&key("SELECT a FROM t"), &versions).is_some());
        assert!(
            cache
                .get(&key("SELECT a FROM t WHERE a = 1"), &versions)
                .is_none()
        );
        let mut other = key("SELECT a FROM t");
        other.workers = 1;
        assert!(
            cache.get(&other, &versions).is_none(),
            "sized for another pool"
        );
        assert_eq!(metrics.plan_cache_hits.get(), 1);
        assert_eq!(metrics.plan_cache_misses.get(), 3);

        // A new file: the plan is dropped, never served.
        std::fs::write(dir.path().join("u.csv"), "a\n2\n").unwrap();
        versions.refresh().await;
        assert!(cache.get(&key("SELECT a FROM t"), &versions).is_none());
        assert_eq!(metrics.plan_cache_invalidations.get(), 1);
        assert_eq!(metrics.plan_cache_entries.get(), 0);

        // Invalidation by table name, as the refresher does.
        let version = versions.version("t").unwrap();
        cache.insert(
            key("SELECT a FROM t"),
            planned(100),
            vec![("t".into(), version)],
        );
        cache.insert(key("SELECT 1"), planned(100), vec![]);
        cache.invalidate(&["t".to_string()]);
        assert_eq!(metrics.plan_cache_invalidations.get(), 2);
        assert!(cache.get(&key("SELECT 1"), &versions).is_some());

        // Bounded: the least recently used go first.
        for n in 0..10 {
            cache.insert(key(&format!("SELECT {n}")), planned(4_000), vec![]);
        }
        assert!(metrics.plan_cache_bytes.get() <= 20_000);
        assert!(metrics.plan_cache_evictions.get() >= 6);
        assert!(cache.get(&key("SELECT 9"), &versions).is_some());
        assert!(cache.get(&key("SELECT 0"), &versions).is_none());
        // A plan larger than the whole cache is not kept.
        cache.insert(key("SELECT big"), planned(30_000), vec![]);
        assert!(cache.get(&key("SELECT big"), &versions).is_none());
    }
}
