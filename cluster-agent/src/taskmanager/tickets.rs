//! Handed-over plans waiting for their `DoGet`, bounded in count and time.

use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A decoded plan ready to run, with the context it runs in and the slot lease it runs under.
pub(crate) struct PendingQuery {
    pub(crate) query_id: String,
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    pub(crate) task_ctx: Arc<TaskContext>,
    pub(crate) lease: QueryLease,
    /// The result cache entry its stream fills, when the shard may reuse its result.
    pub(crate) fill: Option<super::result_cache::Filler>,
    created: Instant,
}

/// The lease a handed-over query holds on its TaskManagers. Nobody renews it while the ticket
/// waits: a result nobody fetches (its shard died before answering) frees its slots by TTL.
pub(crate) struct QueryLease {
    pub(crate) lease_id: String,
    /// Every TaskManager holding it, the head included.
    pub(crate) holders: Vec<String>,
    /// The head's own URL among `holders`.
    pub(crate) head_url: String,
    pub(crate) ttl: Duration,
}

impl PendingQuery {
    pub(crate) fn new(
        query_id: String,
        plan: Arc<dyn ExecutionPlan>,
        task_ctx: Arc<TaskContext>,
        lease: QueryLease,
    ) -> Self {
        Self {
            query_id,
            plan,
            task_ctx,
            lease,
            fill: None,
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

    /// Stores a plan; returns the number of expired plans dropped on the way, or `None` when the
    /// store is full of live plans.
    pub(crate) fn insert(&self, ticket: String, query: PendingQuery) -> Option<usize> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let expired = drop_expired(&mut pending, self.ttl);
        if pending.len() >= self.capacity {
            return None;
        }
        pending.insert(ticket, query);
        Some(expired)
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

    /// Drops expired plans (and so releases their leases); returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        drop_expired(&mut pending, self.ttl)
    }

    /// Takes out the plans that have waited `age` or longer: a draining TaskManager gives up on
    /// results nobody came for (a gateway fetches its ticket at once, so one that waits is one
    /// whose client went away) and releases their leases.
    pub(crate) fn take_older_than(&self, age: Duration) -> Vec<PendingQuery> {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let old: Vec<String> = pending
            .iter()
            .filter(|(_, query)| query.created.elapsed() >= age)
            .map(|(ticket, _)| ticket.clone())
            .collect();
        old.iter()
            .filter_map(|ticket| pending.remove(ticket))
            .collect()
    }

    /// How long a handed-over plan waits for its fetch.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Returns how many plans wait.
    pub(crate) fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .len()
    }
}

/// Drops the plans older than `ttl`; returns how many.
fn drop_expired(pending: &mut HashMap<String, PendingQuery>, ttl: Duration) -> usize {
    let before = pending.len();
    pending.retain(|_, query| query.created.elapsed() < ttl);
    before - pending.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;

    fn query() -> PendingQuery {
        let plan = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
        PendingQuery::new(
            "q".into(),
            plan,
            Arc::new(TaskContext::default()),
            QueryLease {
                lease_id: "l".into(),
                holders: Vec::new(),
                head_url: String::new(),
                ttl: Duration::from_secs(1),
            },
        )
    }

    #[test]
    fn tickets_are_served_once_and_expire() {
        let store = TicketStore::new(Duration::from_millis(50), 2);
        assert_eq!(store.insert("a".into(), query()), Some(0));
        assert!(store.take("a").is_some());
        assert!(store.take("a").is_none(), "a ticket is served once");

        store.insert("b".into(), query()).unwrap();
        store.insert("c".into(), query()).unwrap();
        assert!(
            store.insert("d".into(), query()).is_none(),
            "the store is bounded"
        );
        std::thread::sleep(Duration::from_millis(60));
        assert!(store.take("b").is_none(), "expired tickets are not served");
        assert_eq!(
            store.insert("e".into(), query()),
            Some(1),
            "expired plans are swept"
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_drain_drops_the_tickets_nobody_came_for() {
        let store = TicketStore::new(Duration::from_secs(60), 4);
        store.insert("old".into(), query()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        store.insert("new".into(), query()).unwrap();
        let taken = store.take_older_than(Duration::from_millis(20));
        assert_eq!(taken.len(), 1);
        assert!(store.take("old").is_none());
        assert!(
            store.take("new").is_some(),
            "a ticket just handed over waits"
        );
    }
}
