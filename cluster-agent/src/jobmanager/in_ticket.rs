//! A hand-over carried in the ticket (`crate::handover::seal_ticket`): for a query that runs
//! on one TaskManager, the shard seals the hand-over it would have sent and gives it to the
//! gateway as the ticket, so the query costs the gateway's two calls and nothing more.
//!
//! The lease protocol's guarantees hold as before: slots are reserved by the TaskManager
//! alone, at once or not at all, when the ticket is presented (a ticket never presented holds
//! none); the head keeps them alive while it streams and releases them at the end; a refusal
//! (no free slot, a ticket presented twice, stale or forged) comes before the first byte, and
//! the gateway asks again with `via_handover`, which takes the hand-over call and its queue.

use super::handover::flight_info;
use super::planner::PlannedQuery;
use super::service::JobManager;
use crate::handover::{HandoverRequest, HandoverResponse, seal_ticket};
use arrow_flight::FlightInfo;
use flotilla_protocol::QueryCommand;

// === impl JobManager ===

impl JobManager {
    /// The `FlightInfo` of `planned` handed over in its ticket to the TaskManager the leaser
    /// would reserve on; None when this shard hands over by call (turned off, or asked to by
    /// the gateway), or when no TaskManager has a free slot (then the query queues).
    pub(super) fn hand_over_in_ticket(
        &self,
        command: &QueryCommand,
        planned: &PlannedQuery,
    ) -> Option<FlightInfo> {
        let inner = &self.inner;
        let sealer = inner.handover_tickets.as_ref()?;
        if command.via_handover {
            return None;
        }
        let (head, lease_id, slots) = inner.leaser.solo_head(command)?;
        let workers = [head.clone()];
        let request = HandoverRequest {
            reserve_slots: slots,
            holder: inner.leaser.node_id().to_string(),
            issued_unix_ms: flotilla_cluster::keys::unix_ms(),
            ..self.handover_request(command, planned, &head, &workers, &lease_id)
        };
        inner.metrics.handovers_in_ticket.inc();
        let ticket = seal_ticket(sealer, &request);
        Some(flight_info(HandoverResponse { ticket }, &head, &workers))
    }
}
