//! Per-query memory: each query's tasks on a TaskManager draw on the shared DataFusion pool
//! through a pool of their own, capped at `taskmanager.query_memory_limit_mb`.
//!
//! DataFusion's operators treat a refused reservation as the signal to spill (sorts,
//! aggregations, joins where they can); what cannot spill fails with `ResourcesExhausted`. So
//! one query over its share spills or fails alone, and the other queries keep their memory.

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Hands out one runtime per running query (shared by its head and its stage tasks here),
/// whose memory pool is the query's own view of the TaskManager's pool.
pub(crate) struct QueryMemory {
    base: Arc<RuntimeEnv>,
    limit: usize,
    /// Runtimes of running queries by query id; an entry dies with the query's last task.
    running: Mutex<HashMap<String, Weak<RuntimeEnv>>>,
}

impl QueryMemory {
    pub(crate) fn new(base: Arc<RuntimeEnv>, limit: usize) -> Self {
        Self {
            base,
            limit,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the runtime of query `query_id`, made on its first task here.
    pub(crate) fn runtime(&self, query_id: &str) -> Result<Arc<RuntimeEnv>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(runtime) = running.get(query_id).and_then(Weak::upgrade) {
            return Ok(runtime);
        }
        running.retain(|_, runtime| runtime.strong_count() > 0);
        let pool = Arc::new(QueryPool {
            shared: Arc::clone(&self.base.memory_pool),
            limit: self.limit,
            used: AtomicUsize::new(0),
        });
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.base)
            .with_memory_pool(pool)
            .build_arc()?;
        running.insert(query_id.to_string(), Arc::downgrade(&runtime));
        Ok(runtime)
    }
}

/// One query's share of the shared pool: every reservation counts against both.
#[derive(Debug)]
struct QueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "query pool of {} bytes over {}",
            self.limit, self.shared
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "flotilla-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let limit = self.limit;
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|total| *total <= limit)
            })
            .map_err(|used| {
                DataFusionError::ResourcesExhausted(format!(
                    "the query's memory limit on this TaskManager (taskmanager.query_memory_limit_mb, {} MiB) is reached: {} MiB in use, {} bytes more asked by {}",
                    limit >> 20,
                    used >> 20,
                    additional,
                    reservation.consumer().name()
                ))
            })?;
        if let Err(error) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(error);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(pool_mib: usize, query_mib: usize) -> QueryMemory {
        let base = RuntimeEnvBuilder::new()
            .with_memory_limit(pool_mib << 20, 1.0)
            .build_arc()
            .unwrap();
        QueryMemory::new(base, query_mib << 20)
    }

    #[test]
    fn a_query_is_capped_alone_and_gives_its_memory_back() {
        let memory = memory(100, 40);
        let greedy = memory.runtime("q1").unwrap();
        // The same query's tasks share one pool; another query has its own.
        assert!(Arc::ptr_eq(&greedy, &memory.runtime("q1").unwrap()));
        let other = memory.runtime("q2").unwrap();
        let big = MemoryConsumer::new("big").register(&greedy.memory_pool);
        big.try_grow(30 << 20).unwrap();
        let error = big.try_grow(20 << 20).unwrap_err();
        assert!(
            matches!(error, DataFusionError::ResourcesExhausted(_)),
            "{error}"
        );
        assert!(
            error.to_string().contains("query_memory_limit_mb"),
            "{error}"
        );
        // The refused query holds what it had; the other still gets its own share.
        let small = MemoryConsumer::new("small").register(&other.memory_pool);
        small.try_grow(40 << 20).unwrap();
        assert_eq!(memory.base.memory_pool.reserved(), 70 << 20);
        // The shared pool still bounds the sum: 30 + 40 + 40 > 100.
        let third = memory.runtime("q3").unwrap();
        let late = MemoryConsumer::new("late").register(&third.memory_pool);
        assert!(late.try_grow(40 << 20).is_err());
        assert_eq!(third.memory_pool.reserved(), 0);
        drop((big, small, late));
        assert_eq!(memory.base.memory_pool.reserved(), 0);
        assert_eq!(greedy.memory_pool.reserved(), 0);
        // Finished queries' runtimes are forgotten.
        drop((greedy, other, third));
        let _fresh = memory.runtime("q4").unwrap();
        assert_eq!(memory.running.lock().unwrap().len(), 1);
    }
}

#[cfg(test)]
mod spill_tests {
    use super::*;
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Runs `sql` over 200,000 rows of 40-character strings (about 10 MB) as query `query` of
    /// `memory`; returns the row count and the plan's spill count.
    async fn run(memory: &QueryMemory, query: &str, sql: &str) -> Result<(usize, usize)> {
        let config = SessionConfig::new().with_target_partitions(1).set_usize(
            "datafusion.execution.sort_spill_reservation_bytes",
            256 << 10,
        );
        let ctx = SessionContext::new_with_config_rt(config, memory.runtime(query)?);
        ctx.sql(
            "CREATE VIEW t AS SELECT value AS k, repeat(CAST(value * 7919 % 100003 AS VARCHAR), 6) || 'abcdefgh' AS s FROM generate_series(1, 200000)",
        )
        .await?;
        let plan = ctx.sql(sql).await?.create_physical_plan().await?;
        let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await?;
        let rows = batches.iter().map(|batch| batch.num_rows()).sum();
        let mut spills = 0;
        let mut stack: Vec<Arc<dyn ExecutionPlan>> = vec![plan];
        while let Some(node) = stack.pop() {
            spills += node.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
            stack.extend(node.children().into_iter().cloned());
        }
        Ok((rows, spills))
    }

    #[tokio::test]
    async fn over_its_share_a_sort_spills_and_a_hash_join_which_cannot_spill_fails() {
        let memory = {
            let base = RuntimeEnvBuilder::new()
                .with_memory_limit(256 << 20, 1.0)
                .build_arc()
                .unwrap();
            QueryMemory::new(base, 4 << 20)
        };
        let (rows, spills) = run(&memory, "sort", "SELECT k, s FROM t ORDER BY s")
            .await
            .unwrap();
        assert_eq!(rows, 200_000);
        assert!(spills > 0, "the sort spilled");
        let error = run(
            &memory,
            "join",
            "SELECT count(*) FROM t a JOIN t b ON a.s = b.s",
        )
        .await
        .unwrap_err();
        assert!(
            crate::error::datafusion_code(&error)
                == flotilla_protocol::ErrorCode::ResourcesExhausted,
            "{error}"
        );
        assert_eq!(memory.base.memory_pool.reserved(), 0);
    }
}
