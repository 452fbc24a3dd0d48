//! Handed-over plans waiting for their `DoGet`, bounded in count and time.

use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A decoded plan ready to run, with the context it runs in.
pub(crate) struct PendingQuery {
    pub(crate) query_id: String,
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    pub(crate) task_ctx: Arc<TaskContext>,
    created: Instant,
}

impl PendingQuery {
    pub(crate) fn new(
        query_id: String,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
    ) -> Self {
        Self {
            query_id,
            plan,
            task_ctx,
            created: Instant::now(),
        }
    }
}

/// Plans keyed by ticket. A ticket is served once; unfetched plans expire after `ttl`.
pub(crate) struct TicketStore {
    pending: Mutex<HashMap<String, PendingQuery>>,
    ttl: Duration,
    capacity: usize,
}

impl TicketStore {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    /// Stores a plan; returns the number of expired plans dropped on the way, or `Err` when the
    /// store is full of live plans.
    pub(crate) fn insert(
        &self,
        ticket: String,
        query: PendingQuery,
    ) -> Result<usize, PendingQuery> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let before = pending.len();
        let ttl = self.ttl;
        pending.retain(|_, query| query.created.elapsed() < ttl);
        let expired = before - pending.len();
        if pending.len() >= self.capacity {
            return Err(query);
        }
        pending.insert(ticket, query);
        Ok(expired)
    }

    /// Takes the plan of a ticket, once; `None` when unknown, served or expired.
    pub(crate) fn take(&self, ticket: &str) -> Option<PendingQuery> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        pending
            .remove(ticket)
            .filter(|query| query.created.elapsed() < self.ttl)
    }

    /// Returns how many plans wait.
    pub(crate) fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;

    fn query() -> PendingQuery {
        let plan = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
        PendingQuery::new("q".into(), plan, Arc::new(TaskContext::default()))
    }

    #[test]
    fn tickets_are_served_once_and_expire() {
        let store = TicketStore::new(Duration::from_millis(50), 2);
        assert_eq!(store.insert("a".into(), query()).ok(), Some(0));
        assert!(store.take("a").is_some());
        assert!(store.take("a").is_none(), "a ticket is served once");

        store.insert("b".into(), query()).ok().unwrap();
        store.insert("c".into(), query()).ok().unwrap();
        assert!(
            store.insert("d".into(), query()).is_err(),
            "the store is bounded"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.take("b").is_none(), "expired tickets are not served");
        assert_eq!(
            store.insert("e".into(), query()).ok(),
            Some(1),
            "expired plans are swept"
        );
        assert_eq!(store.len(), 1);
    }
}
