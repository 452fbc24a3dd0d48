//! Which TaskManagers a query may lease slots on: the members of its pool that take work (a
//! fixed list, or the shard's table of reporting TaskManagers), at most one per host when
//! asked, in the order power of two choices gives. With reports the choice samples the pool
//! (O(1) in its size); a fixed list is short and ordered whole.

use flotilla_cluster::reports::{Choice, Counts, ReportListener, TaskManagerEntry, Traffic};
use flotilla_cluster::{Health, Member, Membership, StaticMembership};
use flotilla_protocol::DEFAULT_POOL;
use std::sync::Arc;
use std::time::Instant;

/// Where the shard finds TaskManagers: a fixed list, or their reports (with pools and free
/// slots).
pub(super) enum TaskManagers {
    Static(Arc<StaticMembership>),
    Reports(ReportedMembership),
}

// === impl TaskManagers ===

impl TaskManagers {
    /// Up to `limit` TaskManagers of `pool` that take work now, in power-of-two order, their
    /// reported free slots less `busy(url)`.
    pub(super) fn choose(
        &self,
        pool: &str,
        limit: usize,
        busy: &dyn Fn(&str) -> u64,
    ) -> Vec<String> {
        let mut random = random();
        match self {
            Self::Static(membership) if pool == DEFAULT_POOL => {
                let left = membership
                    .healthy()
                    .into_iter()
                    .map(|url| Choice {
                        slots_free: u64::MAX - busy(&url),
                        url,
                    })
                    .collect();
                let mut order = power_of_two_order(left, random);
                order.truncate(limit);
                order
            }
            Self::Static(_) => Vec::new(),
            Self::Reports(reported) => reported
                .0
                .with_table(|table| table.choose(pool, limit, busy, &mut random))
                .into_iter()
                .map(|choice| choice.url)
                .collect(),
        }
    }

    /// The report table's counts, heap estimate and traffic (None with a fixed list).
    pub(super) fn table_figures(&self) -> Option<(Counts, usize, Traffic)> {
        match self {
            Self::Static(_) => None,
            Self::Reports(reported) => {
                let (counts, bytes) = reported
                    .0
                    .with_table(|table| (table.counts().0, table.approx_bytes()));
                Some((counts, bytes, reported.0.traffic()))
            }
        }
    }

    pub(super) fn membership(&self) -> &dyn Membership {
        match self {
            Self::Static(membership) => membership.as_ref(),
            Self::Reports(reported) => reported,
        }
    }

    /// What `/v1/state` and the gateway's `/v1/cluster` show: counts by state and pool, then
    /// one page of TaskManagers (state or pool `filter`), the unusable and the busiest first.
    pub(super) fn json(
        &self,
        filter: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> serde_json::Value {
        match self {
            Self::Static(membership) => {
                let members = membership.members();
                serde_json::json!({
                    "total": members.len(),
                    "members": members.into_iter().skip(offset).take(limit).collect::<Vec<_>>(),
                })
            }
            Self::Reports(reported) => reported.0.with_table(|table| {
                let (counts, pools) = table.counts();
                let (total, rows) = table.page(filter, offset, limit, Instant::now());
                serde_json::json!({
                    "counts": counts,
                    "pools": pools,
                    "table_bytes": table.approx_bytes(),
                    "total": total,
                    "offset": offset,
                    "members": rows,
                })
            }),
        }
    }
}

/// [`Membership`] over the shard's report table: the TaskManagers that take work, up or not.
pub(super) struct ReportedMembership(pub(super) ReportListener);

impl Membership for ReportedMembership {
    fn members(&self) -> Vec<Member> {
        self.0
            .with_table(|table| table.all(Instant::now()))
            .into_iter()
            .filter(|row| !matches!(row.state, "draining" | "starting"))
            .map(|row: TaskManagerEntry| Member {
                health: if row.state == "up" {
                    Health::Up
                } else {
                    Health::Down
                },
                last_error: row.last_error.or_else(|| {
                    (row.state == "suspect").then(|| format!("silent for {} ms", row.silent_ms))
                }),
                address: row.report.grpc_url,
            })
            .collect()
    }

    fn mark_down(&self, address: &str, reason: &str) {
        if self
            .0
            .with_table(|table| table.mark_down(address, reason, Instant::now()))
        {
            tracing::info!(%address, %reason, "taskmanager marked down after a failed request");
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
    mut left: Vec<Choice>,
    mut random: impl FnMut() -> usize,
) -> Vec<String> {
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let first = random() % left.len();
        let second = match left.len() {
            1 => first,
            others => (first + 1 + random() % (others - 1)) % others,
        };
        let chosen = if left[second].slots_free > left[first].slots_free {
            second
        } else {
            first
        };
        ordered.push(left.swap_remove(chosen).url);
    }
    ordered
}
