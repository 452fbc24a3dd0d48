//! Identical statements in flight at once go to the same shard, whatever the bounded load
//! says: that shard runs the statement once and the others wait for its result (the result
//! cache's coalescing), which costs it almost nothing. Spread over shards by the load bound,
//! each shard would run it. A statement asked fresh (`cache-control: no-cache`) is routed as
//! any other.

use super::service::Shared;
use crate::query::QueryRequest;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// The shard each statement in flight runs on, with how many of its queries are there.
#[derive(Default)]
pub(super) struct Together {
    statements: Mutex<HashMap<u64, (String, usize)>>,
}

impl Together {
    /// The key of `request`'s statement; None when it may not wait for another's result.
    pub(super) fn key(request: &QueryRequest) -> Option<u64> {
        if request.no_cache {
            return None;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (
            crate::query::normalized(&request.sql),
            &request.params,
            &request.tenant,
            &request.pool,
        )
            .hash(&mut hasher);
        Some(hasher.finish())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, usize)>> {
        self.statements
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === impl Shared ===

impl Shared {
    /// The shard for an attempt of `statement`: the one an identical statement runs on now,
    /// else the bounded-load choice among `candidates` not `passed` (else not `failed`). The
    /// statement counts as running there until the guard drops; the choice and the count are
    /// one step, so identical statements arriving together all go to one shard.
    pub(super) fn pick(
        &self,
        statement: Option<u64>,
        candidates: &[String],
        passed: &[String],
        failed: &[String],
    ) -> Option<(String, Option<Entered<'_>>)> {
        let choose = || {
            self.choose(candidates, passed)
                .or_else(|| self.choose(candidates, failed))
        };
        let Some(key) = statement else {
            return choose().map(|shard| (shard, None));
        };
        let mut statements = self.together.lock();
        let running = statements
            .get(&key)
            .map(|(shard, _)| shard.clone())
            .filter(|shard| candidates.contains(shard) && !passed.contains(shard));
        if running.is_some() {
            self.metrics
                .routing_decisions
                .with_label_values(&["together"])
                .inc();
        }
        let shard = running.or_else(choose)?;
        let (current, count) = statements.entry(key).or_insert_with(|| (shard.clone(), 0));
        // A retry elsewhere moves it: later identical queries follow it there.
        current.clone_from(&shard);
        *count += 1;
        let entered = Entered {
            together: &self.together,
            key,
        };
        Some((shard, Some(entered)))
    }
}

/// A query of a statement in flight; the statement is forgotten when its last one ends.
pub(super) struct Entered<'a> {
    together: &'a Together,
    key: u64,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        let mut statements = self.together.lock();
        if let Some((_, count)) = statements.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                statements.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_statements_follow_the_first_until_the_last_ends() {
        let request = QueryRequest::new(flotilla_protocol::QueryId::new(), "SELECT 1");
        let key = Together::key(&request).unwrap();
        assert_eq!(
            Together::key(&QueryRequest::new(
                flotilla_protocol::QueryId::new(),
                "select   1"
            )),
            Some(key)
        );
        let shared = super::super::service::tests::shared(&["a", "b"]);
        let candidates = ["a".to_string(), "b".to_string()];
        let first = shared.pick(Some(key), &candidates, &[], &[]).unwrap();
        let shard = first.0.clone();
        // However loaded its shard, an identical statement goes where the first runs; others
        // spill.
        *shared
            .in_flight
            .lock()
            .unwrap()
            .entry(shard.clone())
            .or_default() += 10;
        let second = shared.pick(Some(key), &candidates, &[], &[]).unwrap();
        assert_eq!(second.0, shard);
        let other = shared.pick(None, &candidates, &[], &[]).unwrap();
        assert_ne!(other.0, shard, "the load bound holds for the others");
        drop((first, second));
        assert!(
            shared.together.lock().is_empty(),
            "forgotten when the last ends"
        );
        let fresh = QueryRequest {
            no_cache: true,
            ..request
        };
        assert_eq!(Together::key(&fresh), None, "asked fresh: routed as any");
    }
}
