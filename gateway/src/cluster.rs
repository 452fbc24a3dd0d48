//! The cluster secret: every internal gRPC call carries it, every internal server refuses calls
//! without it, and it keys gossip, so that only members that know it can join.
//!
//! ```text
//!  gateway ──GetFlightInfo / DoGet──▶ shard / TaskManager   x-flotilla-cluster-secret: <secret>
//!  shard ──hand-over, reserve──────▶ TaskManager            (checked by ClusterSecret::check,
//!  TaskManager ──ExecuteTask, renew─▶ TaskManager             a tonic interceptor)
//!  gossip: cluster id = <gossip.cluster_id>-<first 16 hex of SHA-256(secret)>
//! ```
//! The secret travels as it is: on a network others can read, put the internal traffic on TLS
//! or a private network. An empty secret turns the checks off (a warning is logged).

use crate::gossip::GossipConfig;
use flotilla_protocol::CLUSTER_SECRET_HEADER;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What every process of one cluster shares.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The shared secret of internal calls and gossip (`local` generates one per run). Empty:
    /// internal calls are not checked.
    pub secret: String,
}

impl ClusterConfig {
    /// Logs a warning when no secret is set: anything that reaches an internal port can then
    /// hand a TaskManager a plan (which may read any file it can).
    pub fn warn_if_open(&self) {
        if self.secret.is_empty() {
            tracing::warn!(
                "cluster.secret is empty: internal calls are not checked; set the same secret on every process"
            );
        }
    }

    /// The secret, when one is set.
    pub fn secret(&self) -> ClusterSecret {
        ClusterSecret::new(&self.secret)
    }

    /// The gossip config keyed by the secret: members without it are in another cluster.
    pub fn gossip(&self, gossip: &GossipConfig) -> GossipConfig {
        let mut keyed = gossip.clone();
        if !self.secret.is_empty() {
            let digest = Sha256::digest(self.secret.as_bytes());
            let hex: String = digest[..8]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            keyed.cluster_id = format!("{}-{hex}", gossip.cluster_id);
        }
        keyed
    }
}

/// The cluster secret, cheap to clone; `None` inside when checks are off.
#[derive(Clone, Debug, Default)]
pub struct ClusterSecret(Option<Arc<str>>);

impl ClusterSecret {
    /// Wraps `secret`; empty means no secret.
    pub fn new(secret: &str) -> Self {
        Self((!secret.is_empty()).then(|| Arc::from(secret)))
    }

    /// Says whether calls are checked.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Adds the secret to an outgoing call's metadata.
    pub fn attach(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Some(secret) = &self.0
            && let Ok(value) = secret.parse()
        {
            metadata.insert(CLUSTER_SECRET_HEADER, value);
        }
    }

    /// Wraps `message` into a request carrying the secret.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.attach(request.metadata_mut());
        request
    }

    /// Says whether `presented` is the secret (always, when there is none). Compares in
    /// constant time.
    pub fn accepts(&self, presented: Option<&[u8]>) -> bool {
        let Some(secret) = &self.0 else {
            return true;
        };
        let Some(presented) = presented else {
            return false;
        };
        let secret = secret.as_bytes();
        presented.len() == secret.len()
            && presented
                .iter()
                .zip(secret)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }
}

impl tonic::service::Interceptor for ClusterSecret {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let presented = request
            .metadata()
            .get(CLUSTER_SECRET_HEADER)
            .map(|value| value.as_bytes());
        if self.accepts(presented) {
            Ok(request)
        } else {
            Err(tonic::Status::unauthenticated(
                "internal calls need the cluster secret (cluster.secret)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn only_calls_with_the_secret_pass() {
        let mut secret = ClusterSecret::new("s3cret");
        assert!(secret.call(secret.request(())).is_ok());
        assert!(secret.call(tonic::Request::new(())).is_err());
        let mut wrong = tonic::Request::new(());
        ClusterSecret::new("s3creT").attach(wrong.metadata_mut());
        assert_eq!(
            secret.call(wrong).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let mut open = ClusterSecret::new("");
        assert!(!open.is_set() && open.call(tonic::Request::new(())).is_ok());
    }

    #[test]
    fn the_secret_keys_gossip_without_showing() {
        let gossip = GossipConfig::default();
        let plain = ClusterConfig::default().gossip(&gossip);
        assert_eq!(plain.cluster_id, gossip.cluster_id);
        let keyed = ClusterConfig {
            secret: "s3cret".into(),
        }
        .gossip(&gossip);
        assert!(keyed.cluster_id.starts_with(&gossip.cluster_id));
        assert!(!keyed.cluster_id.contains("s3cret"));
        let other = ClusterConfig {
            secret: "other".into(),
        }
        .gossip(&gossip);
        assert_ne!(keyed.cluster_id, other.cluster_id);
    }
}
