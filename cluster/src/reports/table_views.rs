//! What a shard shows of its TaskManager table: counts by state and pool, pages of members
//! (the unusable and the busiest first), and the table's size.

use super::{Entry, TaskManagerTable};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Rough heap per entry beyond its strings: the entry, two map slots, the pool slot.
const ENTRY_OVERHEAD: usize = 256;

/// One TaskManager as this shard knows it.
#[derive(Clone, Debug, Serialize)]
pub struct TaskManagerEntry {
    /// Its latest report.
    #[serde(flatten)]
    pub report: ReportView,
    /// `up`, `suspect` (silent), `down` (a failed call), `draining` or `starting`.
    pub state: &'static str,
    /// Milliseconds since its last report.
    pub silent_ms: u64,
    /// Why a failed call marked it down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The parts of a report `/v1/state` shows (named as gossip names a member's).
#[derive(Clone, Debug, Serialize)]
pub struct ReportView {
    /// Node id.
    pub id: String,
    /// Always `taskmanager`.
    pub role: &'static str,
    /// gRPC URL.
    pub grpc_url: String,
    /// Admin address.
    pub admin_addr: String,
    /// Pool.
    pub pool: String,
    /// Version.
    pub version: String,
    /// Generation.
    pub generation: u64,
    /// Slots in all.
    pub slots_total: u32,
    /// Slots free.
    pub slots_free: u32,
    /// Takes no new work.
    pub draining: bool,
    /// Not ready yet.
    pub starting: bool,
    /// How its previous process ended, when a supervisor restarted it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_exit: Option<String>,
}

/// Counts of one pool, or of the whole table.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Known TaskManagers.
    pub known: usize,
    /// Choosable now.
    pub up: usize,
    /// Silent past `suspect_after`.
    pub suspect: usize,
    /// Marked down by a failed call.
    pub down: usize,
    /// Draining or starting.
    pub not_serving: usize,
    /// Slots of the choosable ones.
    pub slots_total: u64,
    /// Free slots of the choosable ones, as last reported.
    pub slots_free: u64,
}

impl TaskManagerTable {
    /// Counts per pool and in all.
    pub fn counts(&self) -> (Counts, BTreeMap<String, Counts>) {
        let mut all = Counts::default();
        let mut pools: BTreeMap<String, Counts> = BTreeMap::new();
        for entry in self.entries.values() {
            for counts in [
                &mut all,
                pools.entry(entry.report.pool.clone()).or_default(),
            ] {
                counts.known += 1;
                if entry.choosable() {
                    counts.up += 1;
                    counts.slots_total += u64::from(entry.report.slots_total);
                    counts.slots_free += u64::from(entry.report.slots_free);
                } else if entry.suspect {
                    counts.suspect += 1;
                } else if entry.down.is_some() {
                    counts.down += 1;
                } else {
                    counts.not_serving += 1;
                }
            }
        }
        (all, pools)
    }

    /// Returns the TaskManagers whose state, pool or id matches `filter`, the unusable first, then
    /// the busiest; `offset` and `limit` page through them.
    pub fn page(
        &self,
        filter: Option<&str>,
        offset: usize,
        limit: usize,
        now: Instant,
    ) -> (usize, Vec<TaskManagerEntry>) {
        let mut rows: Vec<TaskManagerEntry> = self
            .entries
            .values()
            .map(|entry| self.row(entry, now))
            .filter(|row| {
                filter.is_none_or(|wanted| {
                    row.state == wanted || row.report.pool == wanted || row.report.id == wanted
                })
            })
            .collect();
        rows.sort_by_key(|row| {
            (
                row.state == "up",
                row.report.slots_free,
                row.report.id.clone(),
            )
        });
        let total = rows.len();
        (total, rows.into_iter().skip(offset).take(limit).collect())
    }

    /// Every TaskManager, for the `Membership` view (admin paths only: O(N)).
    pub fn all(&self, now: Instant) -> Vec<TaskManagerEntry> {
        let mut rows: Vec<TaskManagerEntry> = self
            .entries
            .values()
            .map(|entry| self.row(entry, now))
            .collect();
        rows.sort_by(|a, b| a.report.grpc_url.cmp(&b.report.grpc_url));
        rows
    }

    /// An estimate of the table's heap, in bytes (reported as a metric).
    pub fn approx_bytes(&self) -> usize {
        self.entries
            .values()
            .map(|entry| {
                let report = &entry.report;
                ENTRY_OVERHEAD
                    + 2 * report.id.len()
                    + 2 * report.grpc_url.len()
                    + report.admin_addr.len()
                    + report.pool.len()
                    + report.version.len()
                    + report.previous_exit.len()
            })
            .sum()
    }

    fn row(&self, entry: &Entry, now: Instant) -> TaskManagerEntry {
        let report = &entry.report;
        let state = if entry.choosable() {
            "up"
        } else if entry.suspect {
            "suspect"
        } else if entry.down.is_some() {
            "down"
        } else if report.draining {
            "draining"
        } else {
            "starting"
        };
        TaskManagerEntry {
            report: ReportView {
                id: report.id.clone(),
                role: "taskmanager",
                grpc_url: report.grpc_url.clone(),
                admin_addr: report.admin_addr.clone(),
                pool: report.pool.clone(),
                version: report.version.clone(),
                generation: report.generation,
                slots_total: report.slots_total,
                slots_free: report.slots_free,
                draining: report.draining,
                starting: report.starting,
                previous_exit: (!report.previous_exit.is_empty())
                    .then(|| report.previous_exit.clone()),
            },
            state,
            silent_ms: now.saturating_duration_since(entry.last_seen).as_millis() as u64,
            last_error: entry.down.as_ref().map(|(_, reason)| reason.clone()),
        }
    }
}
