//! Hedged attempts, and the one budget of extra work that hedges and re-runs share.
//!
//! An attempt that has not brought its first batch after a short delay is also sent to
//! another shard, avoiding the TaskManagers the first one waits on; the first to answer wins
//! and the other is dropped, which cancels its calls (the shard returns its lease, the head
//! TaskManager its slots). Short timers only start hedges: marking a member down still takes a
//! failed call or the ≥ 1 s keep-alive.
//!
//! The delay is clamp(2 × p95, min, max) of healthy attempts over the last 10-20 s, and at
//! least twice the statement's own last healthy time. Only latencies for which no faster
//! alternative existed are recorded: an attempt that answered before its hedge was due, a
//! hedge that won (its own time), a first attempt that beat its hedge. A sick member's slow
//! answers, which hedges beat or the budget let through unhedged, never raise the delay
//! (Cassandra's pure-p99 trigger stopped firing once the sick host dragged p99 up).
//!
//! Reused: tower's `TpsBudget` (Finagle's retry budget: a share of recent requests plus a
//! reserve per second, over a sliding 10 s) and `hdrhistogram`, as `tower::hedge` does. Not
//! reused: `tower::hedge` itself, which sends the same request to the same inner service after
//! a plain percentile of every latency: its hedge could neither go to another shard nor avoid
//! the first attempt's TaskManagers, and a sick member would raise its own delay.

use crate::config::RoutingConfig;
use crate::error::GatewayError;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tower::retry::budget::{Budget, TpsBudget};

/// How long one latency window lasts; the delay reads the last full one.
const WINDOW: Duration = Duration::from_secs(10);
/// Latencies a window needs before its p95 is trusted (until then: the longest delay).
const MIN_SAMPLES: u64 = 20;
/// Statements whose own healthy time is remembered (the map starts over when full).
const STATEMENTS: usize = 4096;
/// Longest pause before a re-run.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The hedge delay's inputs and the extra-work budget, shared by every query of a gateway.
pub(super) struct Hedging {
    budget: TpsBudget,
    window: Mutex<Window>,
    /// Per statement fingerprint: its last healthy time to the first batch.
    statements: Mutex<HashMap<u64, Duration>>,
    min: Duration,
    max: Duration,
    backoff: Duration,
}

/// Two latency histograms (microseconds): the one filling and the last full one.
struct Window {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    started: Instant,
}

/// What became of an attempt's hedge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hedge {
    /// The attempt answered before its hedge was due (or hedging is off for it).
    NotNeeded,
    /// Due, but the budget refused it.
    Refused,
    /// Sent; the first attempt answered first (or both failed).
    Lost,
    /// Sent, and it answered first.
    Won,
}

impl Hedging {
    pub(super) fn new(config: &RoutingConfig) -> Self {
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds");
        Self {
            budget: TpsBudget::new(
                Duration::from_secs(10),
                config.extra_work_per_second,
                config.extra_work_ratio.clamp(0.0, 10.0),
            ),
            window: Mutex::new(Window {
                current: histogram(),
                previous: histogram(),
                started: Instant::now(),
            }),
            statements: Mutex::default(),
            min: Duration::from_millis(config.hedge_min_ms),
            max: Duration::from_millis(config.hedge_max_ms),
            backoff: Duration::from_millis(config.retry_backoff_ms),
        }
    }

    /// Counts a query towards the budget.
    pub(super) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Takes one extra attempt (a hedge or a re-run) from the budget, if it allows one.
    pub(super) fn withdraw(&self) -> bool {
        self.budget.withdraw()
    }

    /// How long an attempt of `statement` may go without its first batch before it is
    /// hedged; None when hedging is off, or when the statement takes longer than the longest
    /// delay by itself (a hedge could not beat it and would double its work).
    pub(super) fn delay(&self, statement: u64) -> Option<Duration> {
        if self.max.is_zero() {
            return None;
        }
        let own = self
            .statements
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&statement)
            .map(|own| own.saturating_mul(2));
        if own.is_some_and(|own| own > self.max) {
            return None;
        }
        let p95 = self.with_window(|window| {
            let full = if window.previous.len() >= MIN_SAMPLES {
                &window.previous
            } else {
                &window.current
            };
            (full.len() >= MIN_SAMPLES).then(|| Duration::from_micros(full.value_at_quantile(0.95)))
        });
        let adaptive = p95.map_or(self.max, |p95| p95.saturating_mul(2));
        Some(
            adaptive
                .max(own.unwrap_or_default())
                .clamp(self.min, self.max),
        )
    }

    /// Records the time `statement`'s winning attempt took to its first batch, when it says
    /// something about healthy members (see the module's comment).
    pub(super) fn record(&self, statement: u64, hedge: Hedge, latency: Duration) {
        if hedge == Hedge::Refused {
            return;
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.with_window(|window| window.current.saturating_record(micros.max(1)));
        let mut statements = self
            .statements
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if statements.len() >= STATEMENTS && !statements.contains_key(&statement) {
            statements.clear();
        }
        statements.insert(statement, latency);
    }

    /// The pause before re-run number `rerun` (from 1): the base doubled each time, at most
    /// [`MAX_BACKOFF`], less up to half at random so re-runs of one fault spread out.
    pub(super) fn backoff(&self, rerun: u32) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1 << rerun.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        doubled - doubled / 2 * jitter / 1000
    }

    fn with_window<T>(&self, read: impl FnOnce(&mut Window) -> T) -> T {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if window.started.elapsed() >= WINDOW {
            let Window {
                current, previous, ..
            } = &mut *window;
            std::mem::swap(current, previous);
            current.reset();
            window.started = Instant::now();
        }
        read(&mut window)
    }
}

/// What [`race`] came to: the result, what became of the hedge, the winner's time from its
/// own start, and the hedge's own error when it failed (a hedge is a run of the statement: a
/// query of death it killed a member with must count, `service.rs`).
pub(super) struct Raced<T> {
    pub(super) result: Result<T, GatewayError>,
    pub(super) hedge: Hedge,
    pub(super) latency: Duration,
    pub(super) hedge_error: Option<GatewayError>,
}

/// Runs `primary`; if it has not finished after `delay`, asks `hedge` for a second attempt
/// (None: refused) and returns whichever answers first, dropping the other. An attempt that
/// fails leaves the race to the other.
pub(super) async fn race<T, P, F>(
    primary: P,
    delay: Option<Duration>,
    hedge: impl FnOnce() -> Option<F>,
) -> Raced<T>
where
    P: Future<Output = Result<T, GatewayError>>,
    F: Future<Output = Result<T, GatewayError>>,
{
    let started = Instant::now();
    let raced = |result, hedge, latency: Duration, hedge_error| Raced {
        result,
        hedge,
        latency,
        hedge_error,
    };
    let mut primary = std::pin::pin!(primary);
    let Some(delay) = delay else {
        return raced(primary.await, Hedge::NotNeeded, started.elapsed(), None);
    };
    if let Ok(result) = tokio::time::timeout(delay, primary.as_mut()).await {
        return raced(result, Hedge::NotNeeded, started.elapsed(), None);
    }
    let Some(hedge) = hedge() else {
        return raced(primary.await, Hedge::Refused, started.elapsed(), None);
    };
    let hedged = Instant::now();
    let mut hedge = std::pin::pin!(hedge);
    tokio::select! {
        result = primary.as_mut() => match result {
            Ok(answer) => raced(Ok(answer), Hedge::Lost, started.elapsed(), None),
            Err(error) => match hedge.await {
                Ok(answer) => raced(Ok(answer), Hedge::Won, hedged.elapsed(), None),
                Err(lost) => raced(Err(error), Hedge::Lost, started.elapsed(), Some(lost)),
            },
        },
        result = hedge.as_mut() => match result {
            Ok(answer) => raced(Ok(answer), Hedge::Won, hedged.elapsed(), None),
            Err(lost) => raced(primary.await, Hedge::Lost, started.elapsed(), Some(lost)),
        },
    }
}

#[cfg(test)]
#[path = "hedge_tests.rs"]
mod tests;
