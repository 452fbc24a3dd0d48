//! The process's memory guard: each query's account (shared by its tasks here), and a watchdog
//! that stops the query holding the most memory once the process's allocated bytes pass its
//! watermark, before the kernel's OOM killer would take the whole process (Trino's low-memory
//! killer, ClickHouse's `max_server_memory_usage`, one process at a time).

use super::account::QueryAccount;
use super::metrics::MemoryMetrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long a stopped query may take to give its memory back before another one is stopped.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The accounts of the queries running here and the watermark over them all.
pub(crate) struct MemoryGuard {
    accounts: Mutex<HashMap<String, Weak<QueryAccount>>>,
    query_limit: (u64, &'static str),
    process_limit: u64,
    metrics: MemoryMetrics,
    /// The last query the watchdog stopped, while it may still be giving memory back.
    last_stop: Mutex<Option<(Weak<QueryAccount>, Instant)>>,
    /// Wakes an idle watchdog when a query opens an account.
    opened: tokio::sync::Notify,
}

/// How often an idle process (no query running) reads jemalloc's counters: refreshing them
/// merges every arena's statistics, most of an idle TaskManager's CPU at the busy interval.
const IDLE_CHECK: Duration = Duration::from_millis(500);

impl MemoryGuard {
    /// A guard stopping any query past `query_limit` bytes here, and the biggest one when the
    /// process passes `process_limit` bytes.
    /// `query_limit` names where it comes from, for the stop message.
    pub(crate) fn new(
        query_limit: (u64, &'static str),
        process_limit: u64,
        metrics: MemoryMetrics,
    ) -> Arc<Self> {
        super::account::install_tracer();
        metrics
            .limit
            .set(i64::try_from(process_limit).unwrap_or(i64::MAX));
        Arc::new(Self {
            accounts: Mutex::new(HashMap::new()),
            query_limit,
            process_limit,
            metrics,
            last_stop: Mutex::new(None),
            opened: tokio::sync::Notify::new(),
        })
    }

    /// Returns the account of `query_id`, shared by all its tasks here while any holds it.
    pub(crate) fn account(&self, query_id: &str) -> Arc<QueryAccount> {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(account) = accounts.get(query_id).and_then(Weak::upgrade) {
            return account;
        }
        accounts.retain(|_, account| account.strong_count() > 0);
        let account = Arc::new(QueryAccount::new(
            query_id,
            self.query_limit,
            Some(self.metrics.clone()),
        ));
        accounts.insert(query_id.to_string(), Arc::downgrade(&account));
        self.opened.notify_one();
        account
    }

    /// Says whether a query holds an account here now.
    fn busy(&self) -> bool {
        let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        accounts.values().any(|account| account.strong_count() > 0)
    }

    /// The running queries' accounts here, most memory first (at most `limit`): query id,
    /// bytes attributed, and why it was stopped if it was.
    pub(crate) fn snapshot(&self, limit: usize) -> Vec<serde_json::Value> {
        let mut live: Vec<Arc<QueryAccount>> = {
            let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            accounts.values().filter_map(Weak::upgrade).collect()
        };
        live.sort_by_key(|account| std::cmp::Reverse(account.bytes()));
        live.iter()
            .take(limit)
            .map(|account| {
                serde_json::json!({
                    "query_id": account.query_id,
                    "bytes": account.bytes(),
                    "stopped": account.stopped(),
                })
            })
            .collect()
    }

    /// Checks the watermark every `interval` while a query runs here (every [`IDLE_CHECK`]
    /// otherwise) for as long as the guard lives.
    pub(crate) fn watch(self: &Arc<Self>, interval: Duration) {
        let guard = Arc::downgrade(self);
        flotilla_cluster::spawn_instrumented(async move {
            loop {
                let Some(strong) = guard.upgrade() else {
                    return;
                };
                strong.check(allocated());
                if strong.busy() {
                    drop(strong);
                    tokio::time::sleep(interval).await;
                } else {
                    // Idle: look again after IDLE_CHECK, or as soon as a query opens an account.
                    let _ = tokio::time::timeout(IDLE_CHECK, strong.opened.notified()).await;
                }
            }
        });
    }

    pub(crate) fn check(&self, allocated: Option<u64>) -> Option<String> {
        let allocated = allocated?;
        self.metrics
            .allocated
            .set(i64::try_from(allocated).unwrap_or(i64::MAX));
        if allocated <= self.process_limit {
            return None;
        }
        let mut last_stop = self.last_stop.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((account, at)) = last_stop.as_ref()
            && account.strong_count() > 0
            && at.elapsed() < STOP_GRACE
        {
            return None;
        }
        let running: Vec<Arc<QueryAccount>> = {
            let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            accounts
                .values()
                .filter_map(Weak::upgrade)
                .filter(|account| account.stopped().is_none())
                .collect()
        };
        let biggest = running.iter().max_by_key(|account| account.bytes())?;
        // A poll that is still running has not been charged yet: when no query holds a fair
        // part of the memory, the growth is in a poll under way, so a query being polled now
        // is the likelier culprit.
        let unexplained = biggest.bytes() < i64::try_from(allocated / 4).unwrap_or(i64::MAX);
        let biggest = match running
            .iter()
            .filter(|account| account.is_active())
            .max_by_key(|account| account.bytes())
        {
            Some(active) if unexplained => active,
            _ => biggest,
        };
        let reason = format!(
            "this member's memory ({} MiB allocated) passed its limit (node.memory_limit_mb, {} MiB), and this query held the most of it ({} MiB)",
            allocated >> 20,
            self.process_limit >> 20,
            biggest.bytes().max(0) >> 20
        );
        tracing::warn!(query_id = %biggest.query_id, allocated, limit = self.process_limit, held = biggest.bytes(), "memory watermark passed: stopping the biggest query");
        biggest.stop("watermark", reason);
        *last_stop = Some((Arc::downgrade(biggest), Instant::now()));
        Some(biggest.query_id.clone())
    }

    #[cfg(test)]
    fn metrics(&self) -> &MemoryMetrics {
        &self.metrics
    }
}

/// Bytes the process has allocated now (jemalloc's statistics), if jemalloc is the allocator.
pub(crate) fn allocated() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|bytes| bytes as u64)
}

/// The memory this process may count on: the cgroup's limit (v2, then v1) if one is set, else
/// the host's memory.
pub(crate) fn available_memory() -> u64 {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|text| text.trim().parse::<u64>().ok());
    let host = read("/proc/meminfo").and_then(|text| {
        text.lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    });
    match (cgroup, host) {
        (Some(cgroup), Some(host)) => cgroup.min(host),
        (cgroup, host) => cgroup.or(host).unwrap_or(8 << 30),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(process_limit: u64) -> Arc<MemoryGuard> {
        let registry = prometheus::Registry::new();
        MemoryGuard::new(
            (u64::MAX, "test"),
            process_limit,
            MemoryMetrics::new(&registry).unwrap(),
        )
    }

    #[test]
    fn past_the_watermark_the_biggest_query_is_stopped_once() {
        let guard = guard(100 << 20);
        let small = guard.account("small");
        let big = guard.account("big");
        assert!(Arc::ptr_eq(&big, &guard.account("big")));
        let _small_bytes = super::super::account::charged(&small, || vec![1u8; 1 << 20]);
        let _big_bytes = super::super::account::charged(&big, || vec![1u8; 8 << 20]);
        assert_eq!(guard.check(Some(50 << 20)), None, "under the watermark");
        assert_eq!(guard.check(Some(150 << 20)).as_deref(), Some("big"));
        assert!(big.stopped().unwrap().contains("node.memory_limit_mb"));
        assert!(small.stopped().is_none());
        // While the stopped query still holds its memory, nobody else is stopped.
        assert_eq!(guard.check(Some(150 << 20)), None);
        assert!(small.stopped().is_none());
        assert_eq!(guard.metrics().stopped_total("watermark"), 1);
    }

    #[test]
    fn memory_available_is_known() {
        assert!(available_memory() >= 64 << 20);
    }
}
