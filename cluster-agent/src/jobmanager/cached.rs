//! How a shard answers from the result cache (`result_index.rs` says what is kept where and
//! when it is reused): before planning, a statement whose result a TaskManager keeps, read
//! from tables still at the same versions, gets a `cache:<entry>` ticket at that TaskManager;
//! after planning, a statement whose result may be kept is handed over with an entry id the
//! head fills as the result streams. Identical statements that arrive while the first still
//! runs get the same ticket and wait for its result on the TaskManager (coalescing).

use super::planner::PlannedQuery;
use super::result_index::{CacheOutcome, Indexed, Leader, ResultKey};
use super::service::JobManager;
use crate::catalog::versions::Version;
use arrow_flight::{FlightEndpoint, FlightInfo, Ticket};
use flotilla_protocol::QueryPlacement;
use std::time::Duration;

/// What the result cache does for a query that is not answered from it.
pub(super) enum Caching {
    /// The result cache is off on this shard.
    Off,
    /// The client asked for a fresh answer.
    Bypass,
    /// Its result may be kept under this key, if the statement allows it; the leader of
    /// identical queries arriving meanwhile, unless another led.
    Try(ResultKey, Option<Leader>),
}

/// How long a query waits for an identical one ahead of it to be planned and handed over.
const FOLLOW_WAIT: Duration = Duration::from_secs(30);

/// The cache entry a query's result fills: its id on the head, and the table versions it is
/// read from (listed after the plan was made from the same versions).
pub(super) struct Entry {
    id: String,
    tables: Vec<(String, Version)>,
}

impl Entry {
    /// Whether `planned` was made from the versions this entry's result is read from.
    pub(super) fn reads(&self, planned: &PlannedQuery) -> bool {
        planned.reads.as_ref() == Some(&self.tables)
    }
}

/// The id of the cache entry a query's result fills; empty when it is not kept.
pub(super) fn entry_id(entry: &Option<Entry>) -> &str {
    entry.as_ref().map_or("", |entry| entry.id.as_str())
}

/// Either the cached answer, or what to do while running the query.
pub(super) enum Lookup {
    Hit(FlightInfo),
    Run(Caching),
}

// === impl JobManager ===

impl JobManager {
    /// Looks `command` up in the result index: a hit when a TaskManager this shard sees up
    /// keeps its result, read from the tables as they are listed now.
    pub(super) async fn look_up_result(&self, command: &flotilla_protocol::QueryCommand) -> Lookup {
        let inner = &self.inner;
        let results = &inner.results;
        if !results.enabled() {
            return Lookup::Run(Caching::Off);
        }
        if command.no_cache {
            results.count(CacheOutcome::Bypass);
            return Lookup::Run(Caching::Bypass);
        }
        let key = ResultKey::new(command);
        let indexed = match results.get(&key) {
            Some(indexed) => indexed,
            None => match results.lead_or_follow(&key, FOLLOW_WAIT).await {
                Ok(leader) => return Lookup::Run(Caching::Try(key, Some(leader))),
                // The entry of the identical query ahead: checked like any other.
                Err(Some(indexed)) => indexed,
                Err(None) => return Lookup::Run(Caching::Try(key, None)),
            },
        };
        if command.avoid.contains(&indexed.taskmanager)
            || !inner.leaser.serves(&indexed.taskmanager)
        {
            // An earlier attempt found the entry gone, or its TaskManager is.
            results.remove(&key, false);
            return Lookup::Run(Caching::Try(key, None));
        }
        let names: Vec<String> = indexed
            .tables
            .iter()
            .map(|(name, _)| name.clone())
            .collect();
        let current = self.current_versions(&names).await;
        if current.as_ref() == Some(&indexed.tables) {
            results.count(CacheOutcome::Hit);
            return Lookup::Hit(hit_info(&indexed));
        }
        results.remove(&key, true);
        Lookup::Run(Caching::Try(key, None))
    }

    /// The entry the result of `planned` fills, when it may be kept: the statement reads only
    /// catalog tables through immutable functions, and its tables, listed now, are still at the
    /// versions its plan was made from.
    pub(super) async fn cache_entry(
        &self,
        caching: &Caching,
        planned: Option<&PlannedQuery>,
    ) -> Option<Entry> {
        let (Caching::Try(..), Some(reads)) = (caching, planned?.reads.as_ref()) else {
            return None;
        };
        let names: Vec<String> = reads.iter().map(|(name, _)| name.clone()).collect();
        let current = self.current_versions(&names).await?;
        (current == *reads).then(|| Entry {
            id: uuid::Uuid::new_v4().simple().to_string(),
            tables: current,
        })
    }

    /// Lists `names` now; plans and kept results of the tables that changed are dropped.
    async fn current_versions(&self, names: &[String]) -> Option<Vec<(String, Version)>> {
        let inner = &self.inner;
        let (current, changed) = inner.versions.current(names).await?;
        if !changed.is_empty() {
            inner.plans.invalidate(&changed);
            inner.results.invalidate(&changed);
        }
        Some(current)
    }

    /// Records where a handed-over query's result is kept, and says in its answer what the
    /// cache did.
    pub(super) fn remember(
        &self,
        caching: Caching,
        entry: Option<Entry>,
        info: FlightInfo,
    ) -> FlightInfo {
        let results = &self.inner.results;
        match (caching, entry) {
            (Caching::Off, _) => info,
            (Caching::Bypass, _) => with_cache(info, CacheOutcome::Bypass, &[]),
            (Caching::Try(key, leader), Some(entry)) => {
                let Some(taskmanager) = head_of(&info) else {
                    return info;
                };
                results.count(CacheOutcome::Miss);
                let info = with_cache(info, CacheOutcome::Miss, &entry.tables);
                let indexed = Indexed {
                    taskmanager,
                    entry: entry.id,
                    tables: entry.tables,
                };
                if let Some(leader) = leader {
                    leader.indexes(&indexed);
                }
                results.insert(key, indexed);
                info
            }
            (Caching::Try(..), None) => {
                results.count(CacheOutcome::Uncachable);
                with_cache(info, CacheOutcome::Uncachable, &[])
            }
        }
    }
}

/// Where a handed-over query's result is fetched: its head TaskManager.
fn head_of(info: &FlightInfo) -> Option<String> {
    let endpoint = info.endpoint.first()?;
    endpoint
        .location
        .first()
        .map(|location| location.uri.clone())
}

/// The answer for a kept result: its TaskManager, with a ticket naming the entry.
fn hit_info(indexed: &Indexed) -> FlightInfo {
    let placement = QueryPlacement {
        taskmanagers: vec![indexed.taskmanager.clone()],
        ..QueryPlacement::default()
    };
    let endpoint = FlightEndpoint::new()
        .with_ticket(Ticket::new(format!(
            "{}{}",
            flotilla_protocol::CACHE_TICKET_PREFIX,
            indexed.entry
        )))
        .with_location(indexed.taskmanager.clone())
        .with_app_metadata(placement.to_bytes());
    with_cache(
        FlightInfo::new().with_endpoint(endpoint),
        CacheOutcome::Hit,
        &indexed.tables,
    )
}

/// Adds the cache's outcome and the tables' versions to the answer's placement.
fn with_cache(
    mut info: FlightInfo,
    outcome: CacheOutcome,
    tables: &[(String, Version)],
) -> FlightInfo {
    for endpoint in &mut info.endpoint {
        let mut placement = QueryPlacement::from_bytes(&endpoint.app_metadata);
        placement.cache = outcome.as_str().to_string();
        placement.table_versions = tables
            .iter()
            .map(|(name, version)| format!("{name}@{version:016x}"))
            .collect();
        endpoint.app_metadata = placement.to_bytes().into();
    }
    info
}
