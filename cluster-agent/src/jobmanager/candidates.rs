//! Which TaskManagers a query may lease slots on: the members of its pool that take work (a
//! fixed list, or gossip with pools and free slots), at most one per host when asked, in the
//! order power of two choices gives.

use flotilla_cluster::{GossipMembership, Membership, StaticMembership};
use flotilla_protocol::DEFAULT_POOL;
use std::sync::Arc;

/// Where the shard finds TaskManagers: a fixed list, or gossip (with pools and free slots).
pub(super) enum TaskManagers {
    Static(Arc<StaticMembership>),
    Gossip(GossipMembership),
}

/// A TaskManager a query could lease slots on.
pub(super) struct Candidate {
    pub(super) url: String,
    /// Free slots as last gossiped; unknown for a fixed list.
    pub(super) slots_free: Option<u64>,
}

// === impl TaskManagers ===

impl TaskManagers {
    /// Returns the TaskManagers of `pool` that take work now.
    pub(super) fn candidates(&self, pool: &str) -> Vec<Candidate> {
        match self {
            Self::Static(membership) if pool == DEFAULT_POOL => membership
                .healthy()
                .into_iter()
                .map(|url| Candidate {
                    url,
                    slots_free: None,
                })
                .collect(),
            Self::Static(_) => Vec::new(),
            Self::Gossip(membership) => membership
                .serving_peers()
                .into_iter()
                .filter(|peer| peer.info.pool.as_deref().unwrap_or(DEFAULT_POOL) == pool)
                .filter_map(|peer| {
                    Some(Candidate {
                        url: peer.info.grpc_url?,
                        slots_free: Some(peer.load.slots_free),
                    })
                })
                .collect(),
        }
    }

    pub(super) fn membership(&self) -> &dyn Membership {
        match self {
            Self::Static(membership) => membership.as_ref(),
            Self::Gossip(membership) => membership,
        }
    }
}

/// Keeps the first URL of each host when `enabled`; all of them otherwise.
pub(super) fn one_per_host(
    urls: impl Iterator<Item = String>,
    enabled: bool,
) -> impl Iterator<Item = String> {
    let mut hosts = std::collections::HashSet::new();
    urls.filter(move |url| {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|parsed| parsed.host_str().map(str::to_string))
            .unwrap_or_else(|| url.clone());
        !enabled || hosts.insert(host)
    })
}

/// A cheap random source for power of two choices, seeded afresh per call.
pub(super) fn random() -> impl FnMut() -> usize {
    let mut seed = uuid::Uuid::new_v4().as_u128();
    move || {
        seed = seed.rotate_left(17) ^ (seed >> 7);
        seed as usize
    }
}

/// Orders candidates by power of two choices: repeatedly sample two different ones of those
/// left and take the one with more free slots. Spreads load without any process seeing every
/// decision, and never picks the fuller of two.
pub(super) fn power_of_two_order(
    mut left: Vec<Candidate>,
    mut random: impl FnMut() -> usize,
) -> Vec<String> {
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let first = random() % left.len();
        let second = match left.len() {
            1 => first,
            others => (first + 1 + random() % (others - 1)) % others,
        };
        let free = |index: usize| left[index].slots_free.unwrap_or(u64::MAX);
        let chosen = if free(second) > free(first) {
            second
        } else {
            first
        };
        ordered.push(left.swap_remove(chosen).url);
    }
    ordered
}
