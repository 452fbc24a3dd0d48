//! Hand-overs presented inside tickets (`crate::handover::seal_ticket`): opened with the
//! cluster's hand-over key, taken once (a lease id seen before is refused), then reserved and
//! decoded as a hand-over call would be. Every refusal comes before the first byte.

use super::service::TaskManager;
use super::tickets::PendingQuery;
use crate::error::AgentError;
use crate::handover::open_ticket;
use flotilla_cluster::keys::{ReplayWindow, Sealer, unix_ms};
use flotilla_protocol::{ErrorCode, TraceContext};
use std::sync::Mutex;

/// Opens hand-over tickets and remembers the ones taken. A ticket lives within
/// `MAX_SKEW_MS` of its issue, and the window remembers each lease id for longer than that.
pub(super) struct TicketHandovers {
    sealer: Sealer,
    taken: Mutex<ReplayWindow>,
}

impl TicketHandovers {
    pub(super) fn new(sealer: Sealer) -> Self {
        Self {
            sealer,
            taken: Mutex::new(ReplayWindow::new(unix_ms())),
        }
    }
}

// === impl TaskManager ===

impl TaskManager {
    /// Takes the hand-over a ticket carries: its slots reserved here and its plan decoded.
    /// `ticket_not_found` when it does not open, is stale or was presented before;
    /// `cluster_busy` when the slots are not free (the gateway then asks for a hand-over that
    /// waits in the shard's queue).
    pub(super) fn take_ticket_handover(
        &self,
        ticket: &[u8],
        trace: TraceContext,
    ) -> Result<PendingQuery, AgentError> {
        let inner = &self.inner;
        let counted = |outcome: &str| {
            inner
                .metrics
                .handovers_in_ticket
                .with_label_values(&[outcome])
                .inc();
        };
        let now = unix_ms();
        let request = open_ticket(&inner.ticket_handovers.sealer, ticket, now).map_err(|why| {
            counted("refused");
            AgentError::TicketNotFound(format!("a hand-over ticket refused: {why}"))
        })?;
        let lease = uuid::Uuid::try_parse(&request.lease_id).map_err(|_| {
            counted("refused");
            AgentError::TicketNotFound("a hand-over ticket with a malformed lease id".into())
        })?;
        let first_time = inner
            .ticket_handovers
            .taken
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .first_time(lease.as_bytes(), now);
        if !first_time {
            counted("refused");
            return Err(AgentError::TicketNotFound(format!(
                "the hand-over ticket of query {} was presented before",
                request.query_id
            )));
        }
        let taken = self.take_over(&request, trace);
        match &taken {
            Ok(_) => counted("run"),
            Err(error) if error.code() == ErrorCode::ClusterBusy => counted("busy"),
            Err(_) => {}
        }
        taken
    }
}
