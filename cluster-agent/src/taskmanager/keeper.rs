//! Keeps a headed query's slot leases alive: renews them on every TaskManager of the query
//! while its result streams, and releases them all when the guard drops.

use super::leases::LeaseTable;
use crate::flight_clients::{FlightClients, call_action};
use crate::lease::{LeaseIds, RELEASE_ACTION, RENEW_ACTION};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Held by a pending or streaming query; dropping it releases the query's leases.
pub(crate) struct LeaseGuard {
    _stop: oneshot::Sender<()>,
}

/// Starts renewing `lease_id` every `ttl / 3` on `holders` (`self_url` is this TaskManager,
/// renewed in `local`), until the returned guard drops; then releases it everywhere.
pub(crate) fn keep_leases(
    lease_id: String,
    holders: Vec<String>,
    self_url: String,
    ttl: Duration,
    local: Arc<LeaseTable>,
    peers: Arc<FlightClients>,
) -> LeaseGuard {
    let (stop, stopped) = oneshot::channel::<()>();
    flotilla_cluster::spawn_instrumented(async move {
        let ids = vec![lease_id];
        let remote: Vec<String> = holders.into_iter().filter(|url| *url != self_url).collect();
        let mut stopped = stopped;
        let mut ticker = tokio::time::interval(ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the lease may be close to expiry when the fetch comes.
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticker.tick() => {
                    local.renew(&ids, ttl);
                    let body = LeaseIds { lease_ids: ids.clone(), ttl_ms: ttl.as_millis() as u64 }.encode_to_vec();
                    for url in &remote {
                        if let Err(error) = call_action(&peers, url, RENEW_ACTION, body.clone()).await {
                            tracing::warn!(taskmanager = %url, error = %error.message, "lease renewal failed");
                        }
                    }
                }
            }
        }
        local.release(&ids);
        let body = LeaseIds {
            lease_ids: ids.clone(),
            ttl_ms: 0,
        }
        .encode_to_vec();
        let releases = remote
            .iter()
            .map(|url| call_action(&peers, url, RELEASE_ACTION, body.clone()));
        for (url, result) in remote.iter().zip(futures::future::join_all(releases).await) {
            if let Err(error) = result {
                tracing::warn!(taskmanager = %url, error = %error.message, "lease release failed; it expires by TTL");
            }
        }
    });
    LeaseGuard { _stop: stop }
}
