//! Refusing what was seen before: the nonces of accepted datagrams and calls, remembered for as
//! long as their time could still be accepted.

use super::MAX_SKEW_MS;
use std::collections::HashSet;

/// The nonces accepted lately. A message is accepted only within [`MAX_SKEW_MS`] of its time,
/// so a nonce needs remembering for at most twice that after it arrived: two generations of
/// that length, the older dropped whole when the newer fills its span.
#[derive(Debug)]
pub struct ReplayWindow {
    current: HashSet<u128>,
    previous: HashSet<u128>,
    started_ms: u64,
}

impl ReplayWindow {
    /// An empty window starting at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            current: HashSet::new(),
            previous: HashSet::new(),
            started_ms: now_ms,
        }
    }

    /// Remembers `nonce` (its last 16 bytes: a datagram's random part, a call's whole nonce);
    /// false when it was seen before (a replay).
    pub fn first_time(&mut self, nonce: &[u8], now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.started_ms) >= 2 * MAX_SKEW_MS {
            self.previous = std::mem::take(&mut self.current);
            self.started_ms = now_ms;
        }
        let mut key = [0u8; 16];
        let tail = &nonce[nonce.len().saturating_sub(16)..];
        key[..tail.len()].copy_from_slice(tail);
        let key = u128::from_le_bytes(key);
        if self.previous.contains(&key) {
            return false;
        }
        self.current.insert(key)
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Says whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
