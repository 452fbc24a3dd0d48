//! The TaskManager's result cache: the Arrow Flight messages of results this TaskManager
//! produced, kept in memory so that a repeated statement is streamed from here without running
//! again, and so that identical statements arriving while the first still runs wait for it
//! (coalescing) instead of running too. Result bytes never sit in a coordinator: the shard that
//! owns a statement keeps only an index (statement → TaskManager, entry id, table versions).
//!
//! Admission is by frequency, as in W-TinyLFU: a finished result enters a small window (an
//! eighth of `taskmanager.result_cache_mb`); it moves to the main region only when it is asked
//! for again (a hit, or a statement that waited for it while it ran). A statement run once, a
//! big scan included, can only push other once-run results out of the window, never the hot
//! set. A result larger than the window is not kept (and its stream is not slowed).

use arrow_flight::FlightData;
use lru::LruCache;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The share of the cache that admits new results (the rest holds results asked for twice).
const WINDOW_SHARE: usize = 8;

/// A finished result: its Flight messages (schema first), as its first reader got them.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) messages: Vec<FlightData>,
    pub(crate) bytes: usize,
}

/// The state of an entry whose result is still being produced.
#[derive(Clone)]
enum Fill {
    /// Handed over; its gateway has not fetched it yet.
    Waiting,
    Running,
    Done(Arc<Stored>),
    Gone(&'static str),
}

/// What a reader of a cached entry gets: its result, or why there is none.
pub(crate) type Served = Result<(Arc<Stored>, bool), &'static str>;

/// Results kept by entry id, bounded in bytes.
pub(crate) struct ResultCache {
    state: Mutex<State>,
    window_capacity: usize,
    main_capacity: usize,
    metrics: ResultCacheMetrics,
}

#[derive(Default)]
struct State {
    window: Region,
    main: Region,
    filling: HashMap<String, watch::Sender<Fill>>,
}

struct Region {
    lru: LruCache<String, Arc<Stored>>,
    bytes: usize,
}

impl Default for Region {
    fn default() -> Self {
        Self {
            lru: LruCache::unbounded(),
            bytes: 0,
        }
    }
}

impl Region {
    /// Adds `stored` and evicts the least recently used beyond `capacity`; returns how many.
    fn put(&mut self, id: String, stored: Arc<Stored>, capacity: usize) -> u64 {
        self.bytes += stored.bytes;
        if let Some(replaced) = self.lru.put(id, stored) {
            self.bytes -= replaced.bytes;
        }
        let mut evicted = 0;
        while self.bytes > capacity {
            let Some((_, old)) = self.lru.pop_lru() else {
                break;
            };
            self.bytes -= old.bytes;
            evicted += 1;
        }
        evicted
    }
}

impl ResultCache {
    /// A cache of at most `capacity` bytes (0: nothing is kept, nothing coalesced).
    pub(crate) fn new(capacity: usize, registry: &Registry) -> prometheus::Result<Self> {
        let window_capacity = capacity / WINDOW_SHARE;
        Ok(Self {
            state: Mutex::default(),
            window_capacity,
            main_capacity: capacity - window_capacity,
            metrics: ResultCacheMetrics::new(registry)?,
        })
    }

    /// Starts an entry for a result about to be produced: readers of `id` wait for it from now
    /// on. None when the cache is off or the id is taken.
    pub(crate) fn start(self: &Arc<Self>, id: &str) -> Option<Filler> {
        if self.window_capacity == 0 || id.is_empty() {
            return None;
        }
        let mut state = self.lock();
        if state.filling.contains_key(id)
            || state.window.lru.contains(id)
            || state.main.lru.contains(id)
        {
            return None;
        }
        state
            .filling
            .insert(id.to_string(), watch::channel(Fill::Waiting).0);
        Some(Filler {
            id: id.to_string(),
            cache: Arc::clone(self),
            messages: Vec::new(),
            bytes: 0,
            overflowed: false,
            ended: false,
        })
    }

    /// Returns the result of entry `id` and whether the reader waited for it to be produced:
    /// at once when it is kept, after its first run ends (at most `wait`) while it runs. A
    /// first run not fetched within `fetch_window` of the reader's arrival (its gateway went
    /// away) is not waited for longer.
    pub(crate) async fn get(&self, id: &str, fetch_window: Duration, wait: Duration) -> Served {
        let mut running = {
            let mut state = self.lock();
            if let Some(stored) = state.main.lru.get(id).cloned() {
                return self.served(Ok((stored, false)));
            }
            if let Some(stored) = state.window.lru.pop(id) {
                // Asked for twice: into the main region.
                state.window.bytes -= stored.bytes;
                let evicted =
                    state
                        .main
                        .put(id.to_string(), Arc::clone(&stored), self.main_capacity);
                self.metrics.evictions.inc_by(evicted);
                self.publish(&state);
                return self.served(Ok((stored, false)));
            }
            match state.filling.get(id) {
                Some(fill) => fill.subscribe(),
                None => return self.served(Err("evicted, or never stored")),
            }
        };
        let fetched = running.wait_for(|fill| !matches!(fill, Fill::Waiting));
        if !matches!(tokio::time::timeout(fetch_window, fetched).await, Ok(Ok(_))) {
            return self.served(Err("its first run was never fetched"));
        }
        let ended = running.wait_for(|fill| !matches!(fill, Fill::Waiting | Fill::Running));
        let outcome = match tokio::time::timeout(wait, ended).await {
            Ok(Ok(fill)) => match &*fill {
                Fill::Done(stored) => Ok((Arc::clone(stored), true)),
                Fill::Gone(reason) => Err(*reason),
                Fill::Waiting | Fill::Running => Err("still running"),
            },
            Ok(Err(_)) => Err("its first run failed"),
            Err(_) => Err("its first run is still running"),
        };
        self.served(outcome)
    }

    fn served(&self, outcome: Served) -> Served {
        let label = match &outcome {
            Ok((_, false)) => "memory",
            Ok((_, true)) => "coalesced",
            Err(_) => "gone",
        };
        self.metrics.served.with_label_values(&[label]).inc();
        outcome
    }

    /// Ends entry `id`'s run: keeps `stored` (None: not kept, for `reason`) and wakes its
    /// waiters.
    fn end(&self, id: &str, stored: Option<Arc<Stored>>, reason: &'static str) {
        let mut state = self.lock();
        let Some(fill) = state.filling.remove(id) else {
            return;
        };
        match stored {
            Some(stored) => {
                // Statements that waited for it asked for it again: it is hot already.
                let evicted = if fill.receiver_count() > 0 {
                    state
                        .main
                        .put(id.to_string(), Arc::clone(&stored), self.main_capacity)
                } else {
                    state
                        .window
                        .put(id.to_string(), Arc::clone(&stored), self.window_capacity)
                };
                self.metrics.evictions.inc_by(evicted);
                self.metrics.stored.inc();
                fill.send_replace(Fill::Done(stored));
            }
            None => {
                self.metrics.not_stored.with_label_values(&[reason]).inc();
                fill.send_replace(Fill::Gone(reason));
            }
        }
        self.publish(&state);
    }

    fn publish(&self, state: &State) {
        let bytes = state.window.bytes + state.main.bytes;
        self.metrics.bytes.set(bytes as i64);
        let entries = state.window.lru.len() + state.main.lru.len();
        self.metrics.entries.set(entries as i64);
    }

    /// The cache's figures for `/v1/state`.
    pub(crate) fn json(&self) -> serde_json::Value {
        let state = self.lock();
        serde_json::json!({
            "capacity_bytes": self.window_capacity + self.main_capacity,
            "window": {"entries": state.window.lru.len(), "bytes": state.window.bytes},
            "main": {"entries": state.main.lru.len(), "bytes": state.main.bytes},
            "filling": state.filling.len(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Collects a result's messages as its first reader streams them, and stores them when the
/// stream ends complete. Dropped earlier (the query failed, or its reader went away), it
/// stores nothing and sends its waiters to run the statement themselves.
pub(crate) struct Filler {
    id: String,
    cache: Arc<ResultCache>,
    messages: Vec<FlightData>,
    bytes: usize,
    overflowed: bool,
    ended: bool,
}

impl Filler {
    /// Its gateway fetched it: the first run starts.
    pub(crate) fn running(&self) {
        if let Some(fill) = self.cache.lock().filling.get(&self.id) {
            fill.send_replace(Fill::Running);
        }
    }

    /// Adds one message of the stream; past the window's size the result is given up (not
    /// kept), and its stream goes on unslowed.
    pub(crate) fn push(&mut self, message: &FlightData) {
        if self.overflowed {
            return;
        }
        self.bytes +=
            message.data_header.len() + message.data_body.len() + message.app_metadata.len();
        if self.bytes > self.cache.window_capacity {
            self.overflowed = true;
            self.messages = Vec::new();
            self.ended = true;
            self.cache.end(&self.id, None, "too_large");
            return;
        }
        self.messages.push(message.clone());
    }

    /// The stream ended complete: keeps the result.
    pub(crate) fn finish(mut self) {
        if self.overflowed {
            return;
        }
        self.ended = true;
        let stored = Arc::new(Stored {
            messages: std::mem::take(&mut self.messages),
            bytes: self.bytes,
        });
        self.cache.end(&self.id, Some(stored), "");
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if !self.ended {
            self.cache.end(&self.id, None, "failed");
        }
    }
}

/// The result cache's metric families.
#[derive(Clone, Debug)]
struct ResultCacheMetrics {
    bytes: IntGauge,
    entries: IntGauge,
    evictions: IntCounter,
    stored: IntCounter,
    not_stored: IntCounterVec,
    served: IntCounterVec,
}

impl ResultCacheMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let families = flotilla_cluster::Families::new(registry);
        let metrics = Self {
            bytes: families.gauge(
                "flotilla_taskmanager_result_cache_bytes",
                "Bytes of results the result cache holds",
            )?,
            entries: families.gauge(
                "flotilla_taskmanager_result_cache_entries",
                "Results the result cache holds",
            )?,
            evictions: families.counter(
                "flotilla_taskmanager_result_cache_evictions_total",
                "Results dropped to keep the result cache within taskmanager.result_cache_mb",
            )?,
            stored: families.counter(
                "flotilla_taskmanager_result_cache_stored_total",
                "Results kept after their first run",
            )?,
            not_stored: families.counter_vec(
                "flotilla_taskmanager_result_cache_not_stored_total",
                "Results of cacheable statements not kept, by reason (too_large, failed)",
                &["reason"],
            )?,
            served: families.counter_vec(
                "flotilla_taskmanager_result_cache_served_total",
                "Cache tickets served, by source: memory, coalesced (waited for the first run), gone (not held: the query runs again)",
                &["source"],
            )?,
        };
        for reason in ["too_large", "failed"] {
            metrics.not_stored.with_label_values(&[reason]);
        }
        for source in ["memory", "coalesced", "gone"] {
            metrics.served.with_label_values(&[source]);
        }
        Ok(metrics)
    }
}

#[cfg(test)]
#[path = "result_cache_tests.rs"]
mod tests;
