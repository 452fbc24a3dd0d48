//! Reserving slots on a batch of TaskManagers at once, without waiting on a silent one.

use super::{LeaseGuard, Leased, STRAGGLER_WAIT, SlotLeaser};
use crate::lease::{RESERVE_ACTION, ReserveRequest};
use flotilla_protocol::{ErrorCode, QueryCommand};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prost::Message;
use std::future::Future;
use std::sync::Arc;

// === impl SlotLeaser ===

impl SlotLeaser {
    /// Tries candidates (in power-of-two order) until the query holds `taskmanagers_per_query`
    /// leases, asking as many at once as leases are missing; returns the TaskManagers that
    /// granted one. Once one has granted, the others of its batch get [`STRAGGLER_WAIT`] more:
    /// a TaskManager that went silent (cut off, frozen) costs the query a narrower plan, not
    /// a keep-alive. A straggler's call runs on, still counted unanswered (so choices avoid
    /// it), and a lease it grants late is returned.
    pub(super) async fn reserve_on(
        self: &Arc<Self>,
        command: &QueryCommand,
        lease_id: &str,
        candidates: Vec<String>,
        want: usize,
    ) -> Vec<String> {
        let want = want
            .clamp(1, self.config.taskmanagers_per_query)
            .min(candidates.len());
        let request = ReserveRequest {
            lease_id: lease_id.to_string(),
            query_id: command.query_id.to_string(),
            slots: self.config.slots_per_query,
            ttl_ms: self.config.lease_ttl_ms,
            holder: self.node_id.clone(),
        }
        .encode_to_vec();
        let mut holders = Vec::with_capacity(want);
        let mut order = candidates.into_iter();
        // Dropped before it answers (the gateway gave up on the query): every TaskManager
        // asked is told to return the lease, since a reservation on the wire may still be
        // granted and nobody would hand it over (it would hold its slots a whole TTL).
        let mut asked = LeaseGuard {
            leaser: Arc::clone(self),
            leased: Leased {
                lease_id: lease_id.to_string(),
                holders: Vec::new(),
            },
            armed: true,
        };
        while holders.len() < want {
            let batch: Vec<String> = order.by_ref().take(want - holders.len()).collect();
            if batch.is_empty() {
                break;
            }
            asked.leased.holders.extend(batch.iter().cloned());
            let mut answers: FuturesUnordered<_> = batch
                .into_iter()
                .map(|url| {
                    let (leaser, request) = (Arc::clone(self), request.clone());
                    async move {
                        let answer = leaser.call(&url, RESERVE_ACTION, request).await;
                        (url, answer)
                    }
                })
                .collect();
            let mut cutoff = None;
            loop {
                let next = match cutoff.as_mut() {
                    None => answers.next().await,
                    Some(cutoff) => tokio::select! {
                        next = answers.next() => next,
                        () = cutoff => break,
                    },
                };
                let Some((url, answer)) = next else { break };
                if self.granted(url, answer, &mut holders) && cutoff.is_none() {
                    cutoff = Some(Box::pin(tokio::time::sleep(STRAGGLER_WAIT)));
                }
            }
            if !answers.is_empty() {
                self.metrics.stragglers.inc_by(answers.len() as u64);
                self.return_late(lease_id, answers);
                break;
            }
        }
        asked.armed = false;
        holders
    }

    /// Handles one reservation's answer; true when it was granted (added to `holders`).
    fn granted(
        &self,
        url: String,
        answer: Result<bytes::Bytes, flotilla_protocol::ErrorBody>,
        holders: &mut Vec<String>,
    ) -> bool {
        match answer {
            Ok(_) => {
                holders.push(url);
                return true;
            }
            Err(error) if error.code == ErrorCode::ClusterBusy => {
                self.metrics.leases_refused.inc();
            }
            Err(error) if error.code == ErrorCode::Unavailable => {
                self.mark_down(&url, &error.message);
            }
            Err(error) => {
                tracing::warn!(taskmanager = %url, code = %error.code, error = %error.message, "lease reservation failed");
            }
        }
        false
    }

    /// Lets stragglers' reservations finish in the background, then returns the lease on each.
    fn return_late<F>(self: &Arc<Self>, lease_id: &str, mut answers: FuturesUnordered<F>)
    where
        F: Future<Output = (String, Result<bytes::Bytes, flotilla_protocol::ErrorBody>)>
            + Send
            + 'static,
    {
        let leaser = Arc::clone(self);
        let lease_id = lease_id.to_string();
        flotilla_cluster::spawn_instrumented(async move {
            // Every straggler is asked to return the lease, granted or not: a reservation that
            // timed out here may still reach its TaskManager (a link that heals), and
            // returning a lease a TaskManager does not hold does nothing.
            let mut late = Vec::new();
            while let Some((url, _)) = answers.next().await {
                late.push(url);
            }
            leaser.release(&Leased {
                lease_id,
                holders: late,
            });
        });
    }
}
