//! The [`Registry`] of running queries, and the bounded history of recent ones.

use super::timeline::Timeline;
use flotilla_protocol::QueryId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;

/// Running queries by id; an entry lives from admission to the end of the result stream. Ended
/// queries stay findable in a history of the last `history` ones.
pub struct Registry {
    running: Mutex<HashMap<QueryId, Entry>>,
    recent: Mutex<VecDeque<Arc<Timeline>>>,
    history: usize,
}

struct Entry {
    tenant: String,
    started: Instant,
    cancel: watch::Sender<bool>,
    timeline: Arc<Timeline>,
}

/// A running query, as listed by [`Registry::list`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunningQuery {
    /// The query's id.
    pub query_id: QueryId,
    /// Its tenant.
    pub tenant: String,
    /// Milliseconds since it was admitted.
    pub elapsed_ms: u64,
}

/// Keeps a query registered; unregisters it when dropped.
pub(super) struct Registration {
    registry: Arc<Registry>,
    query_id: QueryId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let ended = self.registry.lock().remove(&self.query_id);
        if let Some(entry) = ended {
            self.registry.remember(entry.timeline);
        }
    }
}

impl Registry {
    /// Returns an empty registry that remembers the last 1,000 ended queries.
    pub fn new() -> Arc<Self> {
        Self::with_history(1000)
    }

    /// Returns an empty registry that remembers the last `history` ended queries.
    pub fn with_history(history: usize) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::default(),
            recent: Mutex::default(),
            history,
        })
    }

    /// Keeps the record of a query that ended before it was registered (refused while its
    /// request was read), so that its id can be looked up too.
    pub fn remember(&self, timeline: Arc<Timeline>) {
        if self.history == 0 {
            return;
        }
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if recent.len() >= self.history {
            recent.pop_front();
        }
        recent.push_back(timeline);
    }

    /// Returns the record of a running or recently ended query.
    pub fn find(&self, query_id: &QueryId) -> Option<Arc<Timeline>> {
        if let Some(entry) = self.lock().get(query_id) {
            return Some(Arc::clone(&entry.timeline));
        }
        self.recent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .iter()
            .rev()
            .find(|timeline| timeline.query_id() == *query_id)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueryId, Entry>> {
        self.running
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Registers a query; the receiver turns `true` when it is cancelled. `None` when a query
    /// with this id runs already (ids may come from clients).
    pub(super) fn register(
        self: &Arc<Self>,
        query_id: QueryId,
        tenant: &str,
        timeline: Arc<Timeline>,
    ) -> Option<(Registration, watch::Receiver<bool>)> {
        let (cancel, cancelled) = watch::channel(false);
        let mut running = self.lock();
        if running.contains_key(&query_id) {
            return None;
        }
        running.insert(
            query_id,
            Entry {
                tenant: tenant.to_string(),
                started: Instant::now(),
                cancel,
                timeline,
            },
        );
        drop(running);
        let registration = Registration {
            registry: Arc::clone(self),
            query_id,
        };
        Some((registration, cancelled))
    }

    /// Cancels a running query; returns `false` when no query of that id runs here.
    pub fn cancel(&self, query_id: &QueryId) -> bool {
        match self.lock().get(query_id) {
            Some(entry) => {
                entry.cancel.send_replace(true);
                true
            }
            None => false,
        }
    }

    /// Returns the tenant of a running query.
    pub fn tenant_of(&self, query_id: &QueryId) -> Option<String> {
        self.lock().get(query_id).map(|entry| entry.tenant.clone())
    }

    /// Returns how many queries run now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Says whether no query runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the records of the running queries, newest first, then of the ended ones,
    /// newest first: up to `limit` of those `visible` accepts.
    pub fn records(&self, limit: usize, visible: impl Fn(&Timeline) -> bool) -> Vec<Arc<Timeline>> {
        let mut running: Vec<(Instant, Arc<Timeline>)> = self
            .lock()
            .values()
            .map(|entry| (entry.started, Arc::clone(&entry.timeline)))
            .collect();
        running.sort_by_key(|(started, _)| std::cmp::Reverse(*started));
        let mut records: Vec<Arc<Timeline>> = running
            .into_iter()
            .map(|(_, timeline)| timeline)
            .filter(|timeline| visible(timeline))
            .take(limit)
            .collect();
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let room = limit.saturating_sub(records.len());
        records.extend(
            recent
                .iter()
                .rev()
                // A query is remembered when its registration drops, so it is never in both.
                .filter(|timeline| visible(timeline))
                .take(room)
                .cloned(),
        );
        records
    }

    /// Lists up to `limit` running queries, oldest first.
    pub fn list(&self, limit: usize) -> Vec<RunningQuery> {
        let mut queries: Vec<RunningQuery> = self
            .lock()
            .iter()
            .map(|(query_id, entry)| RunningQuery {
                query_id: *query_id,
                tenant: entry.tenant.clone(),
                elapsed_ms: entry.started.elapsed().as_millis() as u64,
            })
            .collect();
        queries.sort_by_key(|query| std::cmp::Reverse(query.elapsed_ms));
        queries.truncate(limit);
        queries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(query_id: QueryId) -> Arc<Timeline> {
        Arc::new(Timeline::new(
            query_id,
            flotilla_protocol::TraceContext::root(),
        ))
    }

    #[test]
    fn cancel_reaches_the_registered_query_and_drop_unregisters() {
        let registry = Registry::new();
        let query_id = QueryId::new();
        let (registration, cancelled) = registry
            .register(query_id, "a", timeline(query_id))
            .unwrap();
        assert!(
            registry
                .register(query_id, "b", timeline(query_id))
                .is_none(),
            "ids are unique"
        );
        assert_eq!(registry.tenant_of(&query_id).as_deref(), Some("a"));
        assert!(!*cancelled.borrow());
        assert!(registry.cancel(&query_id));
        assert!(*cancelled.borrow());
        drop(registration);
        assert!(registry.is_empty());
        assert!(
            !registry.cancel(&query_id),
            "an ended query cannot be cancelled"
        );
        assert!(registry.find(&query_id).is_some(), "it is remembered");
    }

    #[test]
    fn the_history_keeps_only_the_last_queries() {
        let registry = Registry::with_history(2);
        let ids: Vec<QueryId> = (0..3).map(|_| QueryId::new()).collect();
        for query_id in &ids {
            let (registration, _) = registry
                .register(*query_id, "a", timeline(*query_id))
                .unwrap();
            assert!(
                registry.find(query_id).is_some(),
                "a running query is found"
            );
            drop(registration);
        }
        assert!(registry.find(&ids[0]).is_none(), "the oldest was forgotten");
        assert!(registry.find(&ids[1]).is_some());
        assert!(registry.find(&ids[2]).is_some());
        assert!(registry.find(&QueryId::new()).is_none());
    }

    #[test]
    fn records_list_running_then_ended_newest_first_and_filtered() {
        let registry = Registry::with_history(10);
        let ended: Vec<QueryId> = (0..3).map(|_| QueryId::new()).collect();
        for (index, query_id) in ended.iter().enumerate() {
            let record = timeline(*query_id);
            record.describe(if index == 1 { "b" } else { "a" }, "SELECT 1");
            drop(registry.register(*query_id, "a", record).unwrap());
        }
        let running = QueryId::new();
        let record = timeline(running);
        record.describe("a", "SELECT 2");
        let _registration = registry.register(running, "a", record).unwrap();
        let ids = |records: Vec<Arc<Timeline>>| -> Vec<QueryId> {
            records.iter().map(|record| record.query_id()).collect()
        };
        assert_eq!(
            ids(registry.records(10, |_| true)),
            vec![running, ended[2], ended[1], ended[0]]
        );
        assert_eq!(
            ids(registry.records(10, |record| record.tenant() == "a")),
            vec![running, ended[2], ended[0]]
        );
        assert_eq!(ids(registry.records(2, |_| true)), vec![running, ended[2]]);
    }
}
