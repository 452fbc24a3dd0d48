//! The tables a shard could not read when it started (their object store down, their files
//! unreadable): the shard serves every other table, answers a statement that names one of these
//! with `unavailable` naming its store, and registers each again as soon as it reads.

use crate::catalog::UnreachableTable;
use crate::error::AgentError;
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The tables not registered yet, by name.
#[derive(Default)]
pub(crate) struct UnreachableTables {
    tables: Mutex<BTreeMap<String, UnreachableTable>>,
}

impl UnreachableTables {
    pub(crate) fn new(tables: Vec<UnreachableTable>) -> Arc<Self> {
        Arc::new(Self {
            tables: Mutex::new(
                tables
                    .into_iter()
                    .map(|unreachable| (unreachable.table.name.clone(), unreachable))
                    .collect(),
            ),
        })
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, UnreachableTable>> {
        self.tables
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Refuses `statement` with `unavailable` when it names a table that is not readable yet;
    /// a name no table has is left to planning (`sql_planning`).
    pub(crate) fn check(
        &self,
        state: &SessionState,
        statement: &Statement,
    ) -> Result<(), AgentError> {
        let tables = self.tables();
        if tables.is_empty() {
            return Ok(());
        }
        let Ok(references) = state.resolve_table_references(statement) else {
            return Ok(());
        };
        for reference in references {
            let name = reference.table();
            let found = tables.get(name).or_else(|| {
                tables
                    .values()
                    .find(|unreachable| unreachable.table.name.eq_ignore_ascii_case(name))
            });
            if let Some(unreachable) = found {
                return Err(AgentError::TableUnavailable(unreachable.reason.clone()));
            }
        }
        Ok(())
    }

    /// Tries every unreachable table again each `every`, registering those that read in `ctx`
    /// (which shares the planner's catalog); stops once none is left or the shard is gone.
    pub(crate) fn spawn_retry(self: &Arc<Self>, ctx: SessionContext, every: Duration) {
        if self.tables().is_empty() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        flotilla_cluster::spawn_instrumented(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(unreachable) = weak.upgrade() else {
                    return;
                };
                let waiting: Vec<UnreachableTable> =
                    unreachable.tables().values().cloned().collect();
                for mut table in waiting {
                    match table.table.register(&ctx).await {
                        Ok(()) => {
                            tracing::info!(table = %table.table.name, "table readable again; serving it");
                            unreachable.tables().remove(&table.table.name);
                        }
                        Err(reason) => {
                            table.reason = reason;
                            unreachable.tables().insert(table.table.name.clone(), table);
                        }
                    }
                }
                if unreachable.tables().is_empty() {
                    return;
                }
            }
        });
    }
}
