//! Tests of the hedge delay, the race and the extra-work budget.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn hedging(per_second: u32) -> Hedging {
    Hedging::new(&RoutingConfig {
        extra_work_per_second: per_second,
        ..RoutingConfig::default()
    })
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn the_delay_adapts_to_healthy_latencies_within_its_bounds() {
    let hedging = hedging(5);
    assert_eq!(hedging.delay(1), Some(400 * MS), "no data yet: the longest");
    for statement in 0..30 {
        hedging.record(100 + statement, Hedge::NotNeeded, 20 * MS);
    }
    let delay = hedging.delay(1).unwrap();
    assert!(
        (100 * MS..=100 * MS).contains(&delay),
        "2 × 20 ms, raised to 100 ms: {delay:?}"
    );
    for statement in 0..30 {
        hedging.record(200 + statement, Hedge::NotNeeded, 90 * MS);
    }
    let delay = hedging.delay(1).unwrap();
    assert!(
        delay > 170 * MS && delay <= 181 * MS,
        "2 × p95 = 2 × 90 ms: {delay:?}"
    );
    // A statement's own healthy time keeps its hedge from firing too early, and one slower
    // than the longest delay by itself is not hedged at all.
    hedging.record(7, Hedge::Won, 150 * MS);
    assert_eq!(hedging.delay(7), Some(300 * MS));
    hedging.record(8, Hedge::Lost, 250 * MS);
    assert_eq!(hedging.delay(8), None);
}

#[test]
fn a_sick_members_slow_answers_never_raise_the_delay() {
    let hedging = hedging(5);
    for statement in 0..30 {
        hedging.record(statement, Hedge::NotNeeded, 10 * MS);
    }
    // Answers that came late because the budget let no hedge through say nothing healthy.
    for statement in 0..300 {
        hedging.record(statement, Hedge::Refused, 1_500 * MS);
    }
    assert_eq!(hedging.delay(1), Some(100 * MS));
}

#[test]
fn the_budget_allows_a_share_of_the_queries_plus_a_reserve() {
    let hedging = hedging(0);
    assert!(!hedging.withdraw(), "nothing deposited, no reserve");
    for _ in 0..20 {
        hedging.deposit();
    }
    assert!(hedging.withdraw());
    assert!(hedging.withdraw());
    assert!(!hedging.withdraw(), "10 % of 20 queries: 2 extra attempts");
    let reserve = self::hedging(5);
    assert!(reserve.withdraw(), "a lone failure is always re-run");
}

#[test]
fn backoff_doubles_with_jitter_and_stays_bounded() {
    let hedging = hedging(5);
    for _ in 0..50 {
        let first = hedging.backoff(1);
        assert!(first >= 12 * MS && first <= 25 * MS, "{first:?}");
        let third = hedging.backoff(3);
        assert!(third >= 50 * MS && third <= 100 * MS, "{third:?}");
        assert!(hedging.backoff(40) <= MAX_BACKOFF);
    }
}

/// An attempt that answers `result` after `after`, and sets `dropped` if it is dropped first.
fn attempt(
    after: Duration,
    result: Result<&'static str, GatewayError>,
    dropped: &Arc<AtomicBool>,
) -> impl Future<Output = Result<&'static str, GatewayError>> + use<> {
    struct DroppedEarly(Option<Arc<AtomicBool>>);
    impl Drop for DroppedEarly {
        fn drop(&mut self) {
            if let Some(flag) = self.0.take() {
                flag.store(true, Ordering::SeqCst);
            }
        }
    }
    let dropped = Arc::clone(dropped);
    async move {
        let mut guard = DroppedEarly(Some(dropped));
        tokio::time::sleep(after).await;
        guard.0.take();
        result
    }
}

fn unavailable() -> GatewayError {
    GatewayError::NoShard("down".into())
}

#[tokio::test]
async fn a_quick_answer_needs_no_hedge() {
    let flag = Arc::new(AtomicBool::new(false));
    let Raced { result, hedge, .. } = race(attempt(MS, Ok("first"), &flag), Some(200 * MS), || {
        Some(attempt(MS, Ok("hedge"), &flag))
    })
    .await;
    assert_eq!((result.unwrap(), hedge), ("first", Hedge::NotNeeded));
}

#[tokio::test]
async fn a_stalled_attempt_is_hedged_and_the_loser_cancelled() {
    let stalled = Arc::new(AtomicBool::new(false));
    let quick = Arc::new(AtomicBool::new(false));
    let Raced {
        result,
        hedge,
        latency,
        ..
    } = race(
        attempt(Duration::from_secs(30), Ok("first"), &stalled),
        Some(20 * MS),
        || Some(attempt(MS, Ok("hedge"), &quick)),
    )
    .await;
    assert_eq!((result.unwrap(), hedge), ("hedge", Hedge::Won));
    assert!(
        latency < Duration::from_secs(5),
        "the hedge's own time: {latency:?}"
    );
    assert!(
        stalled.load(Ordering::SeqCst),
        "the stalled attempt was dropped"
    );
    assert!(!quick.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_refused_hedge_leaves_the_first_attempt_to_finish() {
    let flag = Arc::new(AtomicBool::new(false));
    let Raced { result, hedge, .. } =
        race(attempt(60 * MS, Ok("first"), &flag), Some(10 * MS), || {
            None::<std::future::Ready<Result<&'static str, GatewayError>>>
        })
        .await;
    assert_eq!((result.unwrap(), hedge), ("first", Hedge::Refused));
}

#[tokio::test]
async fn a_failure_leaves_the_race_to_the_other_attempt() {
    let flag = Arc::new(AtomicBool::new(false));
    let Raced { result, hedge, .. } = race(
        attempt(40 * MS, Err(unavailable()), &flag),
        Some(10 * MS),
        || Some(attempt(150 * MS, Ok("hedge"), &flag)),
    )
    .await;
    assert_eq!((result.unwrap(), hedge), ("hedge", Hedge::Won));
    let Raced { result, hedge, .. } =
        race(attempt(150 * MS, Ok("first"), &flag), Some(10 * MS), || {
            Some(attempt(MS, Err(unavailable()), &flag))
        })
        .await;
    assert_eq!((result.unwrap(), hedge), ("first", Hedge::Lost));
    let Raced {
        result,
        hedge,
        hedge_error,
        ..
    } = race(
        attempt(40 * MS, Err(unavailable()), &flag),
        Some(10 * MS),
        || Some(attempt(MS, Err(GatewayError::Timeout(1)), &flag)),
    )
    .await;
    assert!(
        matches!(result, Err(GatewayError::NoShard(_))),
        "the first attempt's error"
    );
    assert_eq!(hedge, Hedge::Lost);
    // The hedge ran the statement too: its failure is handed back to be counted.
    assert!(matches!(hedge_error, Some(GatewayError::Timeout(1))));
}
