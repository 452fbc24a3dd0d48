//! How a node makes itself known: shards gossip (with gateways); TaskManagers report to the
//! shards. Draining, readiness, leaving and `/v1/state` go through here whichever it is.

use flotilla_cluster::Gossip;
use flotilla_cluster::reports::Reporter;
use std::net::SocketAddr;
use std::time::Duration;

/// A node's membership: gossip, or reports to the shards.
#[derive(Clone)]
pub enum Presence {
    /// A shard: a gossip member.
    Gossip(Gossip),
    /// A TaskManager: reports to every shard.
    Reports(Reporter),
}

impl Presence {
    /// The UDP address it gossips or reports from.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Gossip(gossip) => gossip.addr(),
            Self::Reports(reporter) => reporter.addr(),
        }
    }

    /// Tells peers it takes no new work.
    pub async fn set_draining(&self) {
        match self {
            Self::Gossip(gossip) => gossip.set_draining().await,
            Self::Reports(reporter) => reporter.set_draining(),
        }
    }

    /// How long peers need to see a drain: a few gossip rounds, or one report sent at once.
    pub fn drain_notice(&self) -> Duration {
        match self {
            Self::Gossip(gossip) => {
                Duration::from_millis(gossip.config().interval_ms * 3).min(Duration::from_secs(2))
            }
            Self::Reports(_) => Duration::from_millis(300),
        }
    }

    /// Leaves: gossip peers see it go silent, shards stop hearing its reports.
    pub async fn shutdown(self) {
        match self {
            Self::Gossip(gossip) => gossip.shutdown().await,
            Self::Reports(reporter) => reporter.shutdown(),
        }
    }

    /// What `/v1/state` shows of it.
    pub fn state(&self) -> (serde_json::Value, serde_json::Value) {
        match self {
            Self::Gossip(gossip) => (
                serde_json::json!(gossip.addr()),
                serde_json::json!(*gossip.view()),
            ),
            Self::Reports(reporter) => {
                let traffic = reporter.traffic();
                (
                    serde_json::json!(reporter.addr()),
                    serde_json::json!({
                        "reports_to": reporter.shards(),
                        "reports_sent": traffic.sent,
                        "report_bytes_sent": traffic.sent_bytes,
                    }),
                )
            }
        }
    }
}
