//! Members the gateway stops sending work to for a while: a TaskManager that leaves calls
//! unanswered three times (attempts its hedge beat, probes) is *sidelined*: every attempt
//! asks its shard to avoid it while others can take the work, and it is probed until it
//! answers again. Sidelining is the caller's own preference, never a verdict: the member is
//! not marked down anywhere (that takes a failed call or the ≥ 1 s keep-alive), a member
//! that answers its first probe is cleared at once, and one under CPU stress that answers a
//! probe within [`PROBE_TIMEOUT`] is never sidelined.

use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Asks a member (a TaskManager's gRPC URL) for a cheap answer; true when it answered.
pub type Probe = Arc<dyn Fn(String, Duration) -> BoxFuture<'static, bool> + Send + Sync>;

/// Unanswered calls that sideline a member.
const STRIKES: u32 = 3;
/// How long a probe may take before it counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);
/// Pause between probes of one member.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// A member that has not answered for this long is forgotten (membership has its verdict).
const GIVE_UP: Duration = Duration::from_secs(60);
/// Members watched at once: the cost per query stays bounded whatever the cluster's size.
const MAX_WATCHED: usize = 256;

/// The gateway's sidelined and suspected members, shared by every query.
#[derive(Clone)]
pub(super) struct Sideline {
    inner: Arc<Inner>,
}

struct Inner {
    watched: Mutex<HashMap<String, Suspect>>,
    probe: Probe,
    sidelined_total: prometheus::IntCounter,
}

struct Suspect {
    strikes: u32,
    since: Instant,
}

impl Sideline {
    pub(super) fn new(probe: Probe, sidelined_total: prometheus::IntCounter) -> Self {
        Self {
            inner: Arc::new(Inner {
                watched: Mutex::default(),
                probe,
                sidelined_total,
            }),
        }
    }

    /// The members sidelined now.
    pub(super) fn sidelined(&self) -> Vec<String> {
        self.inner
            .watched()
            .iter()
            .filter(|(_, suspect)| suspect.strikes >= STRIKES)
            .map(|(member, _)| member.clone())
            .collect()
    }

    /// Counts a call each of `members` left unanswered (its attempt's hedge answered first)
    /// and probes those not probed yet: a member that answers is cleared.
    pub(super) fn strike(&self, members: &[String]) {
        for member in members {
            let first = {
                let mut watched = self.inner.watched();
                if !watched.contains_key(member) && watched.len() >= MAX_WATCHED {
                    continue;
                }
                let first = !watched.contains_key(member);
                let suspect = watched.entry(member.clone()).or_insert(Suspect {
                    strikes: 0,
                    since: Instant::now(),
                });
                self.inner.count(member, suspect);
                first
            };
            if first {
                let inner = Arc::clone(&self.inner);
                let member = member.clone();
                flotilla_cluster::spawn_instrumented(async move { inner.watch(member).await });
            }
        }
    }
}

impl Inner {
    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<String, Suspect>> {
        self.watched
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// One more unanswered call of `member`; the third sidelines it.
    fn count(&self, member: &str, suspect: &mut Suspect) {
        suspect.strikes += 1;
        if suspect.strikes == STRIKES {
            self.sidelined_total.inc();
            tracing::warn!(
                member,
                "sidelined: three calls unanswered; probing it until it answers"
            );
        }
    }

    /// Probes `member` until it answers (then clears it) or [`GIVE_UP`] passes.
    async fn watch(&self, member: String) {
        while self.answered_or_counted(&member, (self.probe)(member.clone(), PROBE_TIMEOUT).await) {
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    /// Clears `member` when it `answered` (or after [`GIVE_UP`]), else counts the unanswered
    /// probe; true while it is to be probed again.
    fn answered_or_counted(&self, member: &str, answered: bool) -> bool {
        let mut watched = self.watched();
        let Some(suspect) = watched.get_mut(member) else {
            return false;
        };
        if answered || suspect.since.elapsed() >= GIVE_UP {
            if suspect.strikes >= STRIKES {
                tracing::info!(member, answered, "no longer sidelined");
            }
            watched.remove(member);
            return false;
        }
        self.count(member, suspect);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn sideline(alive: &Arc<AtomicBool>) -> Sideline {
        let alive = Arc::clone(alive);
        let probe: Probe = Arc::new(move |_, _| {
            let answered = alive.load(Ordering::SeqCst);
            Box::pin(async move { answered })
        });
        Sideline::new(
            probe,
            prometheus::IntCounter::new("sidelined", "test").unwrap(),
        )
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_member_that_answers_its_probe_is_never_sidelined() {
        let alive = Arc::new(AtomicBool::new(true));
        let sideline = sideline(&alive);
        for _ in 0..5 {
            sideline.strike(&["http://tm-0".into()]);
            settle().await;
        }
        assert!(sideline.sidelined().is_empty());
        assert_eq!(sideline.inner.sidelined_total.get(), 0);
    }

    #[tokio::test]
    async fn a_silent_member_is_sidelined_until_it_answers() {
        let alive = Arc::new(AtomicBool::new(false));
        let sideline = sideline(&alive);
        sideline.strike(&["http://tm-1".into(), "http://tm-0".into()]);
        sideline.strike(&["http://tm-1".into()]);
        settle().await;
        // Two strikes, then the first probe went unanswered: sidelined.
        let mut sidelined = sideline.sidelined();
        sidelined.sort();
        assert_eq!(sidelined, ["http://tm-1"]);
        assert_eq!(sideline.inner.sidelined_total.get(), 1);
        alive.store(true, Ordering::SeqCst);
        tokio::time::sleep(PROBE_EVERY * 2).await;
        assert!(sideline.sidelined().is_empty(), "answered its probe");
        assert!(sideline.inner.watched().is_empty());
    }
}
