//! [`Results`]: statement results between their `GetFlightInfo` and their `DoGet`, each under
//! an unguessable ticket and for a bounded time. A result dropped here (expired, cancelled,
//! replaced) ends its query everywhere.

use crate::outcome::Outcome;
use crate::query::Messages;
use flotilla_protocol::QueryId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes of a ticket's statement handle: the query id, then 16 random bytes.
const HANDLE_BYTES: usize = 32;

/// A started query whose result waits for the client.
pub(super) struct Pending {
    /// The tenant it runs for: only its callers may fetch or cancel it.
    pub(super) tenant: String,
    /// Its messages, from the schema on.
    pub(super) messages: Messages,
    /// Records its end (`cancelled` if dropped unfetched).
    pub(super) outcome: Outcome,
    created: Instant,
}

impl Pending {
    pub(super) fn new(tenant: String, messages: Messages, outcome: Outcome) -> Self {
        Self {
            tenant,
            messages,
            outcome,
            created: Instant::now(),
        }
    }
}

/// The waiting results of this gateway, and the handles it has served or dropped (for as
/// long as their tickets open), so that a ticket is spent once on the gateway that issued it.
pub(super) struct Results {
    ttl: Duration,
    waiting: Mutex<HashMap<[u8; HANDLE_BYTES], Pending>>,
    spent: Mutex<HashMap<[u8; HANDLE_BYTES], Instant>>,
}

impl Results {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            waiting: Mutex::default(),
            spent: Mutex::default(),
        }
    }

    fn spent(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; HANDLE_BYTES], Instant>> {
        self.spent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Says whether `handle`'s result was started here and is already served, cancelled or
    /// expired.
    pub(super) fn is_spent(&self, handle: &[u8]) -> bool {
        <[u8; HANDLE_BYTES]>::try_from(handle)
            .is_ok_and(|handle| self.spent().contains_key(&handle))
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; HANDLE_BYTES], Pending>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Keeps `pending` for query `query_id`; returns its statement handle.
    pub(super) fn insert(&self, query_id: QueryId, pending: Pending) -> Vec<u8> {
        let mut handle = [0u8; HANDLE_BYTES];
        handle[..16].copy_from_slice(&query_id.to_bytes());
        handle[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        self.waiting().insert(handle, pending);
        handle.to_vec()
    }

    /// Takes the result of `handle` if it is still waiting and `allowed` accepts its tenant.
    pub(super) fn take_if(
        &self,
        handle: &[u8],
        allowed: impl FnOnce(&str) -> bool,
    ) -> Option<Pending> {
        let handle: [u8; HANDLE_BYTES] = handle.try_into().ok()?;
        let mut waiting = self.waiting();
        if !allowed(&waiting.get(&handle)?.tenant) {
            return None;
        }
        let pending = waiting.remove(&handle);
        self.spent().insert(handle, Instant::now());
        pending
    }

    /// Drops every result that waited longer than the TTL, cancelling its query; returns how
    /// many.
    pub(super) fn expire(&self) -> usize {
        let ttl = self.ttl;
        let expired: Vec<Pending> = {
            let mut waiting = self.waiting();
            let old: Vec<_> = waiting
                .iter()
                .filter(|(_, pending)| pending.created.elapsed() > ttl)
                .map(|(handle, _)| *handle)
                .collect();
            self.spent()
                .extend(old.iter().map(|handle| (*handle, Instant::now())));
            old.iter()
                .filter_map(|handle| waiting.remove(handle))
                .collect()
        };
        // A spent handle is remembered while its ticket still opens (the TTL, and the clock
        // skew a ticket from another gateway's clock may have).
        let remembered = ttl + Duration::from_millis(flotilla_cluster::keys::MAX_SKEW_MS);
        self.spent()
            .retain(|_, spent| spent.elapsed() <= remembered);
        for pending in &expired {
            tracing::info!(
                parent: &pending.outcome.span,
                ttl_ms = ttl.as_millis() as u64,
                "result not fetched within flight.ticket_ttl_ms; query cancelled"
            );
        }
        expired.len()
    }

    /// How many results wait.
    pub(super) fn len(&self) -> usize {
        self.waiting().len()
    }
}

/// The query a statement handle belongs to (its first 16 bytes), whatever its state.
pub(super) fn query_of(handle: &[u8]) -> Option<QueryId> {
    let bytes: [u8; 16] = handle.get(..16)?.try_into().ok()?;
    (handle.len() == HANDLE_BYTES).then(|| QueryId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::Timeline;
    use crate::metrics::GatewayMetrics;
    use futures::StreamExt;
    use std::sync::Arc;

    fn pending(tenant: &str, metrics: &GatewayMetrics) -> (QueryId, Pending) {
        let query_id = QueryId::new();
        let timeline = Arc::new(Timeline::new(
            query_id,
            flotilla_protocol::TraceContext::root(),
        ));
        timeline.describe(tenant, "SELECT 1");
        let outcome = Outcome::new(metrics.clone(), timeline, tracing::Span::none());
        let messages = futures::stream::empty().boxed();
        (query_id, Pending::new(tenant.into(), messages, outcome))
    }

    #[test]
    fn a_ticket_is_taken_once_by_its_tenant_and_names_its_query() {
        let metrics = GatewayMetrics::new(&prometheus::Registry::new()).unwrap();
        let results = Results::new(Duration::from_secs(60));
        let (query_id, waiting) = pending("alpha", &metrics);
        let handle = results.insert(query_id, waiting);
        assert_eq!(handle.len(), HANDLE_BYTES);
        assert_eq!(query_of(&handle), Some(query_id));
        assert!(
            results
                .take_if(&handle, |tenant| tenant == "beta")
                .is_none()
        );
        assert!(results.take_if(&handle[..16], |_| true).is_none());
        let mut forged = handle.clone();
        forged[31] ^= 1;
        assert!(
            results.take_if(&forged, |_| true).is_none(),
            "the random half counts"
        );
        assert!(
            results
                .take_if(&handle, |tenant| tenant == "alpha")
                .is_some()
        );
        assert!(results.take_if(&handle, |_| true).is_none(), "taken once");
        assert!(results.is_spent(&handle) && !results.is_spent(&forged));
    }

    #[test]
    fn unfetched_results_expire_and_are_recorded_as_cancelled() {
        let metrics = GatewayMetrics::new(&prometheus::Registry::new()).unwrap();
        let results = Results::new(Duration::ZERO);
        let (query_id, waiting) = pending("alpha", &metrics);
        let handle = results.insert(query_id, waiting);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(results.expire(), 1);
        assert_eq!(results.len(), 0);
        assert!(results.is_spent(&handle), "its ticket is spent");
        let cancelled = metrics
            .queries
            .with_label_values(&["cancelled", "http"])
            .get();
        assert_eq!(cancelled, 1);
    }
}
