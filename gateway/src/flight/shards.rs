//! [`Shards`]: what the Flight SQL front door asks shards besides queries (describe a
//! statement, list the tables), on the statement's own shard first and on the next ones when a
//! shard is unreachable, as the route layer does for queries.

use crate::error::GatewayError;
use crate::route::ring::RingCache;
use crate::shard::ShardClient;
use bytes::Bytes;
use flotilla_cluster::Membership;
use flotilla_protocol::{ErrorCode, TraceContext};
use std::sync::Arc;

pub(super) struct Shards {
    pub(super) members: Arc<dyn Membership>,
    pub(super) ring: RingCache,
    pub(super) client: ShardClient,
    /// Most shards one call tries.
    pub(super) attempts: usize,
}

impl Shards {
    /// Calls `DoAction(kind, body)` on the shard of `key`, then on the next ones while they
    /// are unreachable.
    pub(super) async fn ask(
        &self,
        key: &str,
        kind: &str,
        body: Vec<u8>,
        trace: &TraceContext,
    ) -> Result<Bytes, GatewayError> {
        let healthy = self.members.healthy();
        let mut last = GatewayError::NoShard("every shard is down or none is configured".into());
        for shard in self
            .ring
            .candidates(key, &healthy)
            .into_iter()
            .take(self.attempts.max(1))
        {
            match self.client.action(&shard, kind, body.clone(), trace).await {
                Err(error) if error.code() == ErrorCode::Unavailable => {
                    if matches!(error, GatewayError::ShardUnavailable { .. }) {
                        self.members.mark_down(&shard, &error.to_string());
                    }
                    last = error;
                }
                answer => return answer,
            }
        }
        Err(last)
    }
}
