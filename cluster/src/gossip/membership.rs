//! [`Membership`] over gossip: the live, non-draining members of one role, minus those a
//! failed request marked down (passive detection acts at once; gossip confirms later).

use super::{Gossip, Peer};
use crate::membership::{Health, Member, Membership};
use flotilla_protocol::NodeRole;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The members of one role, as gossip and this process's own failed requests see them.
pub struct GossipMembership {
    gossip: Gossip,
    role: NodeRole,
    down: Mutex<HashMap<String, DownMark>>,
    down_for: Duration,
}

struct DownMark {
    until: Instant,
    generation: Option<u64>,
    reason: String,
}

impl GossipMembership {
    /// Follows the members of `role` in `gossip`.
    pub fn new(gossip: Gossip, role: NodeRole) -> Self {
        let down_for = Duration::from_millis(gossip.config().passive_down_ms);
        Self {
            gossip,
            role,
            down: Mutex::new(HashMap::new()),
            down_for,
        }
    }

    /// Returns the live, non-draining peers of the role, with their load, that no failed
    /// request marked down.
    pub fn serving_peers(&self) -> Vec<Peer> {
        let peers = self.gossip.serving(self.role);
        let mut down = self
            .down
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let now = Instant::now();
        down.retain(|_, mark| mark.until > now);
        peers
            .into_iter()
            .filter(|peer| {
                let Some(url) = &peer.info.grpc_url else {
                    return false;
                };
                match down.get(url) {
                    // A restart (new generation) lifts the mark at once.
                    Some(mark) => mark.generation.is_some_and(|seen| seen != peer.generation),
                    None => true,
                }
            })
            .collect()
    }

    /// Returns the gossip membership this view reads.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }
}

impl Membership for GossipMembership {
    fn members(&self) -> Vec<Member> {
        let serving: Vec<String> = self
            .serving_peers()
            .into_iter()
            .filter_map(|peer| peer.info.grpc_url)
            .collect();
        let down = self
            .down
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut members: Vec<Member> = self
            .gossip
            .serving(self.role)
            .into_iter()
            .filter_map(|peer| peer.info.grpc_url)
            .map(|address| {
                let up = serving.contains(&address);
                Member {
                    last_error: if up {
                        None
                    } else {
                        down.get(&address).map(|mark| mark.reason.clone())
                    },
                    health: if up { Health::Up } else { Health::Down },
                    address,
                }
            })
            .collect();
        members.sort_by(|a, b| a.address.cmp(&b.address));
        members
    }

    fn mark_down(&self, address: &str, reason: &str) {
        let generation = self
            .gossip
            .serving(self.role)
            .into_iter()
            .find(|peer| peer.info.grpc_url.as_deref() == Some(address))
            .map(|peer| peer.generation);
        tracing::info!(%address, %reason, "member marked down after a failed request");
        self.down
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(
                address.to_string(),
                DownMark {
                    until: Instant::now() + self.down_for,
                    generation,
                    reason: reason.to_string(),
                },
            );
    }
}
