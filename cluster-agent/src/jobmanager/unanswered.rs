//! The calls a shard has sent each TaskManager and not had answered yet. A TaskManager's free
//! slots, as the shard's choice sees them, are its reported free slots less its open calls;
//! one that has had calls open for [`SILENT_AFTER`] without answering any call meanwhile is
//! *silent* (cut off, frozen) and is not chosen while another can take the work. Both are
//! preferences of this shard alone, never a verdict: marking a TaskManager down still takes a
//! failed call or the ≥ 1 s keep-alive, and a silent one that answers is chosen again at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a TaskManager may leave calls open, answering none, before it counts as silent.
/// Calls answer in about a millisecond; a busy 2-core host takes tens.
pub(super) const SILENT_AFTER: Duration = Duration::from_millis(100);

/// Open calls per TaskManager URL. Entries exist only while calls are open: bounded by the
/// TaskManagers this shard is waiting on.
#[derive(Default)]
pub(super) struct Unanswered {
    calls: Mutex<HashMap<String, Calls>>,
}

/// One TaskManager's open calls.
#[derive(Clone, Copy)]
pub(super) struct Calls {
    open: u64,
    /// When it last answered a call, or when its first open call was sent.
    heard: Instant,
}

/// A view of the open calls while a choice is made.
pub(super) struct Table<'a>(&'a HashMap<String, Calls>);

/// Counts one call as open until dropped.
pub(super) struct Open<'a> {
    table: &'a Unanswered,
    url: &'a str,
}

impl Unanswered {
    /// Counts a call to `url` as open until the returned guard is dropped.
    pub(super) fn open<'a>(&'a self, url: &'a str) -> Open<'a> {
        self.calls()
            .entry(url.to_string())
            .or_insert(Calls {
                open: 0,
                heard: Instant::now(),
            })
            .open += 1;
        Open { table: self, url }
    }

    /// Records that `url` answered a call (with a result or an error of its own).
    pub(super) fn answered(&self, url: &str) {
        if let Some(calls) = self.calls().get_mut(url) {
            calls.heard = Instant::now();
        }
    }

    /// Reads the open calls.
    pub(super) fn with<T>(&self, read: impl FnOnce(&Table<'_>) -> T) -> T {
        read(&Table(&self.calls()))
    }

    /// True when no call is open.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.calls().is_empty()
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<String, Calls>> {
        self.calls
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Table<'_> {
    /// Calls open to `url`.
    pub(super) fn open(&self, url: &str) -> u64 {
        self.0.get(url).map_or(0, |calls| calls.open)
    }

    /// Whether `url` has left calls open for [`SILENT_AFTER`] without answering any.
    pub(super) fn silent(&self, url: &str) -> bool {
        self.0
            .get(url)
            .is_some_and(|calls| calls.open > 0 && calls.heard.elapsed() >= SILENT_AFTER)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let mut calls = self.table.calls();
        if let Some(entry) = calls.get_mut(self.url) {
            entry.open -= 1;
            if entry.open == 0 {
                calls.remove(self.url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taskmanager_is_silent_while_calls_stay_open_and_it_answers_none() {
        let unanswered = Unanswered::default();
        let first = unanswered.open("tm-1");
        let second = unanswered.open("tm-1");
        unanswered.with(|table| {
            assert_eq!(table.open("tm-1"), 2);
            assert!(!table.silent("tm-1"), "just sent");
        });
        std::thread::sleep(SILENT_AFTER + Duration::from_millis(10));
        assert!(unanswered.with(|table| table.silent("tm-1")));
        // An answer to any call: heard from, not silent, though a call is still open.
        unanswered.answered("tm-1");
        drop(first);
        assert!(!unanswered.with(|table| table.silent("tm-1")));
        drop(second);
        assert!(unanswered.is_empty());
    }
}
