//! Queries of death. A statement whose attempts end with their member failing (a reset, a
//! lost connection, the member's death) is run again once elsewhere, as for any failure; if
//! that member fails too, the statement is the likelier cause than two coincidences, so it is
//! refused for `routing.quarantine_ms` instead of being carried to every member in turn.
//!
//! The other side of it: one request's failure is not evidence against its member. A shard is
//! marked down at once only when it cannot be reached (connection refused, draining); a stream
//! that broke counts as a strike, and only strikes from several distinct statements within
//! [`STRIKE_WINDOW`] mark the shard down (the probes see a member that really died).

use crate::error::GatewayError;
use crate::query::normalized;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a broken stream counts against its shard.
pub(super) const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// Most statements kept in quarantine at once; the oldest leaves first past it.
const MAX_QUARANTINED: usize = 10_000;

/// A statement's fingerprint: its normalized text, hashed.
pub(super) fn fingerprint(sql: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    normalized(sql).hash(&mut hasher);
    hasher.finish()
}

/// A TaskManager failed an attempt: later attempts avoid it, and it counts towards quarantine
/// when it died under the statement.
pub(super) async fn charge_taskmanager(
    taskmanager: &str,
    message: &str,
    failed_under: &mut Vec<String>,
    avoid: &mut Vec<String>,
) {
    avoid.push(taskmanager.to_string());
    if blame(message, taskmanager).await == Failure::Died {
        failed_under.push(taskmanager.to_string());
    }
}

// === impl Shared ===

impl super::service::Shared {
    /// Ends a statement that broke a member twice: it is not run a third time, and when two
    /// different members failed under it, it is quarantined.
    pub(super) fn give_up(
        &self,
        fingerprint: u64,
        failed_under: &[String],
        last: GatewayError,
    ) -> GatewayError {
        let mut members = failed_under.to_vec();
        members.dedup();
        if members.len() < 2 || !self.quarantine.add(fingerprint) {
            return last;
        }
        self.metrics.quarantined.inc();
        tracing::warn!(members = ?members, error = %last, "statement quarantined as a query of death");
        GatewayError::Quarantined(format!(
            "two members ({}) failed while this statement ran ({last}); it is taken for a query of death and refused for {} s (routing.quarantine_ms)",
            members.join(", "),
            self.quarantine.duration().as_secs()
        ))
    }
}

/// How a failed attempt bears on its member and its statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The member could not be reached or said it is leaving: its failure, not the statement's.
    MemberDown,
    /// The attempt broke while it ran (reset, lost stream): it may be the statement's doing.
    DuringStatement,
    /// It broke while the statement ran and the member no longer takes connections: it died
    /// under the statement.
    Died,
    /// Neither (a ticket fetched too late): run it again.
    Other,
}

/// Classifies a failure as [`classify`] does, and when it broke under the statement, looks
/// whether `member` (`scheme://host:port`) still takes TCP connections: a member that died
/// under a statement is evidence against the statement; one that is still there (a stream
/// reset by a busy or stalled peer) is not.
pub(super) async fn blame(message: &str, member: &str) -> Failure {
    match classify(message) {
        Failure::DuringStatement if gone(member).await => Failure::Died,
        other => other,
    }
}

/// How long a look at a member may take; past it the member is taken as still there (stalled).
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// Says whether `member` refuses connections now or within a moment: a process that is
/// aborting (writing a core, unmapping gigabytes) still holds its listening socket for a while.
async fn gone(member: &str) -> bool {
    let authority = member
        .split_once("://")
        .map_or(member, |(_, rest)| rest)
        .trim_end_matches('/');
    for pause_ms in [0, 100, 200, 400] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let probe = tokio::net::TcpStream::connect(authority);
        if let Ok(Err(_)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            return true;
        }
    }
    false
}

/// Classifies the message of a transport-level failure. A member that cannot be reached, is
/// leaving, or went silent (keep-alive or deadline expired: a partition or a stall) is down
/// whatever it ran; a connection that was reset or closed under a running statement may be the
/// statement's doing (a crash).
pub(super) fn classify(message: &str) -> Failure {
    let lower = message.to_lowercase();
    let unreachable = [
        "tcp connect error",
        "connection refused",
        "dns error",
        "connect timeout",
        "timed out",
        "keep-alive",
        "keepalive",
        "deadline",
        "draining",
        "no route to host",
    ];
    if unreachable.iter().any(|pattern| lower.contains(pattern)) {
        Failure::MemberDown
    } else if lower.contains("ticket") {
        Failure::Other
    } else {
        Failure::DuringStatement
    }
}

/// Statements refused until a time, by fingerprint, and each shard's recent strikes.
pub(super) struct Quarantine {
    duration: Duration,
    statements: Mutex<HashMap<u64, Instant>>,
    strikes: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
    strikes_to_mark_down: usize,
}

impl Quarantine {
    /// Quarantines for `duration` (zero: never); a shard is marked down after broken streams of
    /// `strikes_to_mark_down` distinct statements within the strike window.
    pub(super) fn new(duration: Duration, strikes_to_mark_down: usize) -> Self {
        Self {
            duration,
            statements: Mutex::new(HashMap::new()),
            strikes: Mutex::new(HashMap::new()),
            strikes_to_mark_down: strikes_to_mark_down.max(1),
        }
    }

    /// How much longer `fingerprint` stays refused, if it is.
    pub(super) fn remaining(&self, fingerprint: u64) -> Option<Duration> {
        let mut statements = self.statements.lock().unwrap_or_else(|e| e.into_inner());
        let until = *statements.get(&fingerprint)?;
        let now = Instant::now();
        if until <= now {
            statements.remove(&fingerprint);
            return None;
        }
        Some(until - now)
    }

    /// Refuses `fingerprint` from now on for the quarantine's duration. Returns false when
    /// quarantine is off.
    pub(super) fn add(&self, fingerprint: u64) -> bool {
        if self.duration.is_zero() {
            return false;
        }
        let mut statements = self.statements.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if statements.len() >= MAX_QUARANTINED {
            statements.retain(|_, until| *until > now);
            if let Some(oldest) = statements.iter().min_by_key(|(_, until)| **until) {
                let oldest = *oldest.0;
                statements.remove(&oldest);
            }
        }
        statements.insert(fingerprint, now + self.duration);
        true
    }

    /// The quarantine's duration.
    pub(super) fn duration(&self) -> Duration {
        self.duration
    }

    /// Counts a broken stream of `fingerprint` against `shard`; says whether the shard now has
    /// enough distinct statements' strikes to be marked down.
    pub(super) fn strike(&self, shard: &str, fingerprint: u64) -> bool {
        let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        strikes.retain(|_, recent| {
            while recent
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > STRIKE_WINDOW)
            {
                recent.pop_front();
            }
            !recent.is_empty()
        });
        let recent = strikes.entry(shard.to_string()).or_default();
        recent.push_back((now, fingerprint));
        let mut distinct: Vec<u64> = recent.iter().map(|(_, fingerprint)| *fingerprint).collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.len() >= self.strikes_to_mark_down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_case_and_spacing() {
        assert_eq!(fingerprint("SELECT  1"), fingerprint("select 1"));
        assert_ne!(fingerprint("select 1"), fingerprint("select 2"));
    }

    #[test]
    fn failures_are_classified_by_what_broke() {
        assert_eq!(
            classify("tcp connect error: Connection refused (os error 111)"),
            Failure::MemberDown
        );
        assert_eq!(classify("shard s1 is draining"), Failure::MemberDown);
        assert_eq!(
            classify("transport error: http2 error: keep-alive timed out"),
            Failure::MemberDown
        );
        assert_eq!(
            classify("h2 protocol error: error reading a body from connection"),
            Failure::DuringStatement
        );
        assert_eq!(
            classify("connection reset by peer"),
            Failure::DuringStatement
        );
        assert_eq!(classify("ticket abc is unknown"), Failure::Other);
    }

    #[tokio::test]
    async fn only_a_member_that_no_longer_answers_died_under_the_statement() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive = format!("http://{}", listener.local_addr().unwrap());
        let reset = "http2 error: connection reset";
        assert_eq!(blame(reset, &alive).await, Failure::DuringStatement);
        drop(listener);
        assert_eq!(blame(reset, &alive).await, Failure::Died);
        assert_eq!(
            blame("tcp connect error", &alive).await,
            Failure::MemberDown
        );
    }

    #[test]
    fn a_statement_is_refused_for_the_duration_and_then_again_allowed() {
        let quarantine = Quarantine::new(Duration::from_millis(50), 3);
        assert_eq!(quarantine.remaining(7), None);
        assert!(quarantine.add(7));
        assert!(quarantine.remaining(7).is_some());
        assert_eq!(quarantine.remaining(8), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(quarantine.remaining(7), None);
        assert!(!Quarantine::new(Duration::ZERO, 3).add(7), "off");
    }

    #[test]
    fn one_statement_breaking_again_and_again_does_not_mark_its_shard_down() {
        let quarantine = Quarantine::new(Duration::from_secs(60), 3);
        for _ in 0..10 {
            assert!(!quarantine.strike("a", 1));
        }
        assert!(!quarantine.strike("a", 2));
        assert!(!quarantine.strike("b", 3), "strikes are per shard");
        assert!(quarantine.strike("a", 3), "three distinct statements");
    }
}
