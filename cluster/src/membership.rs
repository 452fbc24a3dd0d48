//! Who is in the cluster and whether they answer: the trait routing reads, and the static
//! implementation (a fixed address list, probed in the background). Gossip replaces the list
//! behind the same trait.

use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The health of one member as this process sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Answered the last probe or request.
    Up,
    /// Refused or failed the last probe or request.
    Down,
}

/// One member: its address and health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The member's gRPC URL, `http://host:port`.
    pub address: String,
    /// Its health.
    pub health: Health,
    /// Why it is down, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A live view of one kind of member (shards, or TaskManagers).
pub trait Membership: Send + Sync + 'static {
    /// Returns every known member, in a stable order.
    fn members(&self) -> Vec<Member>;

    /// Records that a request to `address` failed at the transport level (passive detection):
    /// the member gets no new work until it answers again.
    fn mark_down(&self, address: &str, reason: &str);

    /// Returns the addresses of the members that are up.
    fn healthy(&self) -> Vec<String> {
        self.members()
            .into_iter()
            .filter(|member| member.health == Health::Up)
            .map(|member| member.address)
            .collect()
    }
}

/// A fixed list of members, each probed with a TCP connect every `interval`.
#[derive(Debug)]
pub struct StaticMembership {
    members: RwLock<Vec<Member>>,
}

impl StaticMembership {
    /// Builds the list; every member starts up, so a first query need not wait for a probe.
    pub fn new(addresses: impl IntoIterator<Item = String>) -> Arc<Self> {
        let members = addresses
            .into_iter()
            .map(|address| Member {
                address,
                health: Health::Up,
                last_error: None,
            })
            .collect();
        Arc::new(Self {
            members: RwLock::new(members),
        })
    }

    /// Starts the background prober; it stops when the last `Arc` to the membership is gone.
    pub fn spawn_prober(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        crate::spawn_instrumented(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(membership) = weak.upgrade() else {
                    return;
                };
                let addresses: Vec<String> = membership
                    .members()
                    .into_iter()
                    .map(|member| member.address)
                    .collect();
                drop(membership);
                let probes = addresses.into_iter().map(|address| async move {
                    let result = probe(&address, interval.min(Duration::from_secs(1))).await;
                    (address, result)
                });
                let results = futures::future::join_all(probes).await;
                let Some(membership) = weak.upgrade() else {
                    return;
                };
                for (address, result) in results {
                    membership.set(&address, result.err());
                }
            }
        });
    }

    fn set(&self, address: &str, error: Option<String>) {
        let mut members = self
            .members
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(member) = members.iter_mut().find(|member| member.address == address) {
            let health = if error.is_some() {
                Health::Down
            } else {
                Health::Up
            };
            if member.health != health {
                tracing::info!(%address, ?health, error = error.as_deref(), "member health changed");
            }
            member.health = health;
            member.last_error = error;
        }
    }
}

impl Membership for StaticMembership {
    fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    fn mark_down(&self, address: &str, reason: &str) {
        self.set(address, Some(reason.to_string()));
    }
}

/// Checks that something accepts TCP connections at a `http://host:port` address.
async fn probe(address: &str, timeout: Duration) -> Result<(), String> {
    let authority = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .trim_end_matches('/');
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(authority)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn probes_mark_members_up_and_down() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive = format!("http://{}", listener.local_addr().unwrap());
        let closed = {
            let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}", gone.local_addr().unwrap())
        };
        let membership = StaticMembership::new([alive.clone(), closed.clone()]);
        assert_eq!(membership.healthy().len(), 2, "members start up");
        membership.spawn_prober(Duration::from_millis(20));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while membership.healthy() != vec![alive.clone()] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "prober never marked {closed} down"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        membership.mark_down(&alive, "connection reset");
        assert!(membership.healthy().is_empty());
    }
}
