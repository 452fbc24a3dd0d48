//! The consistent-hash ring over the healthy shards, rebuilt only when that set changes.

use consistent_hash::{DefaultHash, Node, StaticHashRing};
use std::sync::{Arc, Mutex};

struct Ring {
    members: Vec<String>,
    ring: StaticHashRing<'static, String, (), DefaultHash>,
}

/// Caches the ring of the last healthy set seen.
pub(crate) struct RingCache {
    virtual_nodes: usize,
    current: Mutex<Option<Arc<Ring>>>,
}

impl RingCache {
    pub(crate) fn new(virtual_nodes: usize) -> Self {
        Self {
            virtual_nodes: virtual_nodes.max(1),
            current: Mutex::new(None),
        }
    }

    /// Returns `members` in ring order for `key`: the key's own shard first, then the next ones
    /// clockwise. The order depends only on the key and the member set.
    pub(crate) fn candidates(&self, key: &str, members: &[String]) -> Vec<String> {
        let ring = {
            let mut current = self
                .current
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            match current.as_ref() {
                Some(ring) if ring.members == members => Arc::clone(ring),
                _ => {
                    let nodes = members
                        .iter()
                        .map(|member| Node::new(member.clone()).quantity(self.virtual_nodes));
                    let ring = Arc::new(Ring {
                        members: members.to_vec(),
                        ring: StaticHashRing::new(DefaultHash, nodes),
                    });
                    *current = Some(Arc::clone(&ring));
                    ring
                }
            }
        };
        ring.ring
            .calc_candidates(&key)
            .map(|node| node.key.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shards(count: usize) -> Vec<String> {
        (0..count)
            .map(|index| format!("http://127.0.0.1:{}", 5000 + index))
            .collect()
    }

    #[test]
    fn a_key_keeps_its_shard_and_keys_spread() {
        let cache = RingCache::new(64);
        let members = shards(4);
        let first = cache.candidates("select 1", &members);
        assert_eq!(first.len(), 4, "every shard is a candidate");
        assert_eq!(
            cache.candidates("select 1", &members),
            first,
            "stable for a key"
        );
        let mut owners = std::collections::HashSet::new();
        for key in 0..200 {
            owners.insert(cache.candidates(&format!("key-{key}"), &members)[0].clone());
        }
        assert_eq!(owners.len(), 4, "200 keys reach every shard");
    }

    #[test]
    fn removing_a_shard_moves_only_its_keys() {
        let cache = RingCache::new(64);
        let members = shards(3);
        let fewer: Vec<String> = members[..2].to_vec();
        for key in 0..100 {
            let key = format!("key-{key}");
            let before = cache.candidates(&key, &members)[0].clone();
            let after = cache.candidates(&key, &fewer)[0].clone();
            if before != members[2] {
                assert_eq!(before, after, "{key} moved although its shard stayed");
            }
        }
    }
}
