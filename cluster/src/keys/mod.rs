//! The cluster's keys: one or more shared secrets (`cluster.secret`; the first signs and seals,
//! every one verifies and opens, so a secret rotates by rolling restarts) and the keys derived
//! from each, one per kind of traffic, so that no secret itself ever crosses the network.
//!
//! ```text
//!  cluster.secret = ["new", "old"]
//!        │ HKDF-SHA256 (salt "flotilla cluster keys v1", info = traffic)
//!        ▼
//!  gossip key ── seals every gossip datagram      (XChaCha20-Poly1305, seal.rs)
//!  reports key ─ seals every load report and shard list
//!  calls key ─── signs every internal gRPC call   (HMAC-SHA256, calls.rs)
//!  tickets key ─ seals the Flight SQL tickets gateways hand to clients (seal.rs)
//! ```
//! A datagram or call that fails is dropped before it is parsed and counted in
//! `flotilla_cluster_refused_total{traffic, reason}`.

mod calls;
mod layers;
mod replay;
mod seal;
mod secrets;

pub use calls::{AUTH_HEADER, CallSigner, CallVerifier};
pub use layers::{Signed, SignedLayer, Verified, VerifiedLayer};
pub use replay::ReplayWindow;
pub use seal::{Opened, SEAL_OVERHEAD, Sealer};
pub use secrets::Secrets;

use prometheus::{IntCounterVec, Opts};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest difference between two members' clocks (and the age of a datagram or call) that is
/// still accepted, in milliseconds. Anything older is refused as stale, so a replay can only
/// happen within it (and there the replay window or the sequence numbers refuse it).
pub const MAX_SKEW_MS: u64 = 10_000;

/// What a key is used for; each has its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// Gossip of gateways and shards.
    Gossip,
    /// TaskManagers' load reports and the shards' lists.
    Reports,
    /// Internal gRPC calls.
    Calls,
    /// Flight SQL tickets: sealed by one gateway, opened by any.
    Tickets,
    /// Hand-overs a shard puts in a ticket: sealed by a shard, opened by the TaskManager the
    /// ticket names.
    Handovers,
}

impl Traffic {
    /// The label of its metric, and its HKDF info.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gossip => "gossip",
            Self::Reports => "reports",
            Self::Calls => "calls",
            Self::Tickets => "tickets",
            Self::Handovers => "handovers",
        }
    }
}

/// Why a datagram or call was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not sealed or signed at all (or not a datagram of this version).
    #[error("not sealed")]
    Unsealed,
    /// Sealed with a key this process does not hold.
    #[error("unknown key")]
    UnknownKey,
    /// Its tag or signature does not verify.
    #[error("forged")]
    Forged,
    /// Its time is further from this process's clock than [`MAX_SKEW_MS`].
    #[error("stale")]
    Stale,
    /// Seen before.
    #[error("replayed")]
    Replayed,
}

impl Refused {
    /// The metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsealed => "unsealed",
            Self::UnknownKey => "unknown_key",
            Self::Forged => "forged",
            Self::Stale => "stale",
            Self::Replayed => "replayed",
        }
    }
}

/// `flotilla_cluster_refused_total`: one per process, registered by
/// [`crate::process_registry`].
pub(crate) static REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let refused = IntCounterVec::new(
        Opts::new(
            "flotilla_cluster_refused_total",
            "Datagrams and internal calls refused before they were parsed, by traffic and reason \
             (not sealed, unknown key, forged, stale, replayed)",
        ),
        &["traffic", "reason"],
    )
    .expect("a valid metric");
    // Every series exists from the start, at 0: rates and alerts see a healthy member too.
    for traffic in [
        Traffic::Gossip,
        Traffic::Reports,
        Traffic::Calls,
        Traffic::Tickets,
        Traffic::Handovers,
    ] {
        for reason in [
            Refused::Unsealed,
            Refused::UnknownKey,
            Refused::Forged,
            Refused::Stale,
            Refused::Replayed,
        ] {
            refused.with_label_values(&[traffic.as_str(), reason.as_str()]);
        }
    }
    refused
});

/// Counts one refusal.
pub fn count_refused(traffic: Traffic, reason: Refused) {
    REFUSED
        .with_label_values(&[traffic.as_str(), reason.as_str()])
        .inc();
}

/// How many of `traffic` were refused for `reason` in this process.
pub fn refused(traffic: Traffic, reason: Refused) -> u64 {
    REFUSED
        .with_label_values(&[traffic.as_str(), reason.as_str()])
        .get()
}

/// This process's wall clock, in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The key `secret` gives `traffic`: for checks that it never crosses the network (the trust
/// test searches a recording of the test hosts' switch for it).
pub fn derive_key(secret: &str, traffic: Traffic) -> [u8; 32] {
    DerivedKey::derive(secret, traffic).bytes
}

/// One secret's key for one traffic, and its id (sent in the clear so the receiver picks the
/// key without trying each).
#[derive(Clone)]
pub(crate) struct DerivedKey {
    pub(crate) id: [u8; 4],
    pub(crate) bytes: [u8; 32],
}

impl DerivedKey {
    fn derive(secret: &str, traffic: Traffic) -> Self {
        use ring::hkdf::{HKDF_SHA256, Salt};
        let salt = Salt::new(HKDF_SHA256, b"flotilla cluster keys v1");
        let info = [traffic.as_str().as_bytes()];
        let mut bytes = [0u8; 32];
        salt.extract(secret.as_bytes())
            .expand(&info, HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut bytes))
            .expect("32 bytes is a valid HKDF-SHA256 length");
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest.as_ref()[..4]);
        Self { id, bytes }
    }
}

/// The keys of one traffic: the first seals or signs, all open or verify.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<[DerivedKey]>,
    traffic: Traffic,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Keyring")
            .field("traffic", &self.traffic)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Keyring {
    /// The keys of `traffic` derived from `secrets`; `None` when there is no secret (traffic
    /// goes unsealed, as `cluster.secret` documents).
    pub fn new(secrets: &Secrets, traffic: Traffic) -> Option<Self> {
        let keys: Vec<DerivedKey> = secrets
            .all()
            .iter()
            .map(|secret| DerivedKey::derive(secret, traffic))
            .collect();
        (!keys.is_empty()).then(|| Self {
            keys: keys.into(),
            traffic,
        })
    }

    /// The traffic these keys are for.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    pub(crate) fn first(&self) -> &DerivedKey {
        &self.keys[0]
    }

    /// Counts `reason` against this traffic and returns it.
    pub(crate) fn refuse(&self, reason: Refused) -> Refused {
        count_refused(self.traffic, reason);
        reason
    }
}

#[cfg(test)]
mod tests;
