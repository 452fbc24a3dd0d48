//! The shard → TaskManager hand-over: a planned query, given to the TaskManager that will run
//! its head stage, which keeps it under a ticket until the gateway's `DoGet` fetches it.
//!
//! ```text
//!  gateway ──GetFlightInfo(sql)──▶ shard ──DoAction("flotilla.handover", plan)──▶ head TM
//!     ▲                              │◀────────────── ticket ─────────────────────┘
//!     └──── FlightInfo(ticket, TM) ──┘
//!  gateway ──DoGet(ticket)──▶ head TM: execute, stream Arrow back
//! ```
//!
//! A query whose plan runs on its head alone skips the separate reservation: its hand-over
//! carries `reserve_slots`, and the head reserves and adopts the lease in one step. Such a
//! hand-over can also travel inside the ticket itself, sealed by the shard, so that the shard
//! makes no call at all (one round trip fewer per query):
//!
//! ```text
//!  gateway ──GetFlightInfo(sql)──▶ shard: plan, pick the head
//!     ▲                              │
//!     └── FlightInfo("handover:" + seal(hand-over), head) ──┘
//!  gateway ──DoGet(ticket)──▶ head TM: open, refuse a replay, reserve, execute, stream
//! ```
//!
//! Nothing is reserved until the ticket is presented, so a ticket nobody presents holds no
//! slot; a TaskManager that refuses it (no free slot, presented before, stale, forged) does so
//! before the first byte, and the gateway asks the shard again for a hand-over
//! (`QueryCommand::via_handover`), which waits for slots in the shard's queue.

use flotilla_cluster::keys::{MAX_SKEW_MS, Sealer};
use flotilla_protocol::HANDOVER_TICKET_PREFIX;
use prost::Message;

/// The Flight action type of a hand-over.
pub const HANDOVER_ACTION: &str = "flotilla.handover";

/// A planned query, encoded by the shard.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HandoverRequest {
    /// The gateway's query id.
    #[prost(string, tag = "1")]
    pub query_id: String,
    /// The physical plan, encoded with `codec::encode_plan`.
    #[prost(bytes = "bytes", tag = "2")]
    pub plan: bytes::Bytes,
    /// The planning session's options (`datafusion.*`, `distributed.*`), so the head runs the
    /// plan with the settings it was planned with.
    #[prost(map = "string, string", tag = "3")]
    pub options: std::collections::HashMap<String, String>,
    /// TaskManager URLs the query's other stages may run on.
    #[prost(string, repeated, tag = "4")]
    pub worker_urls: Vec<String>,
    /// The receiving TaskManager's own URL as the shard knows it.
    #[prost(string, tag = "5")]
    pub head_url: String,
    /// The slot lease the shard reserved on every TaskManager of `worker_urls`; the head
    /// renews and releases it from now on.
    #[prost(string, tag = "6")]
    pub lease_id: String,
    /// The lease's lifetime unless renewed, in milliseconds.
    #[prost(uint64, tag = "7")]
    pub lease_ttl_ms: u64,
    /// When not 0: the shard reserved nothing yet, and the head reserves this many slots under
    /// `lease_id` itself, or refuses with `cluster_busy` (a query that runs on its head alone
    /// saves the round trip of a separate reservation).
    #[prost(uint64, tag = "8")]
    pub reserve_slots: u64,
    /// The shard the reservation is made for, with `reserve_slots`.
    #[prost(string, tag = "9")]
    pub holder: String,
    /// When not empty: the result may be reused, and the head keeps it in its result cache
    /// under this id (which the shard's index names in later tickets, `cache:<id>`).
    #[prost(string, tag = "10")]
    pub cache_entry: String,
    /// When the shard issued it, in ms since the Unix epoch (its clock): a hand-over carried
    /// in a ticket is taken within [`MAX_SKEW_MS`] of it, and only once.
    #[prost(uint64, tag = "11")]
    pub issued_unix_ms: u64,
}

/// The answer to a hand-over.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HandoverResponse {
    /// Opaque bytes the gateway presents in `DoGet`.
    #[prost(bytes = "vec", tag = "1")]
    pub ticket: Vec<u8>,
}

/// Puts `request` in a ticket: the prefix, then the request sealed with the cluster's
/// hand-over key (passed through unsealed on a cluster without a secret).
pub fn seal_ticket(sealer: &Sealer, request: &HandoverRequest) -> Vec<u8> {
    let sealed = sealer.seal(&request.encode_to_vec(), request.issued_unix_ms);
    let mut ticket = Vec::with_capacity(HANDOVER_TICKET_PREFIX.len() + sealed.len());
    ticket.extend_from_slice(HANDOVER_TICKET_PREFIX);
    ticket.extend_from_slice(&sealed);
    ticket
}

/// Why a hand-over ticket was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketRefused {
    /// It is not sealed with a key of this cluster, or was altered.
    #[error("not sealed by this cluster ({0})")]
    Unsealed(&'static str),
    /// It was issued further than [`MAX_SKEW_MS`] from now.
    #[error("issued {0} ms from now, more than the {MAX_SKEW_MS} ms a ticket lives")]
    Stale(u64),
    /// It does not decode.
    #[error("it does not decode: {0}")]
    Malformed(String),
}

/// Opens a ticket made by [`seal_ticket`] at `now_ms`: the request, if the ticket is sealed by
/// this cluster and was issued within [`MAX_SKEW_MS`] of now (replays are the caller's to
/// refuse: its lease id is unique).
pub fn open_ticket(
    sealer: &Sealer,
    ticket: &[u8],
    now_ms: u64,
) -> Result<HandoverRequest, TicketRefused> {
    let sealed = ticket
        .strip_prefix(HANDOVER_TICKET_PREFIX)
        .ok_or(TicketRefused::Unsealed("no hand-over prefix"))?;
    let opened = sealer
        .open(sealed, now_ms)
        .map_err(|refused| TicketRefused::Unsealed(refused.as_str()))?;
    let request = HandoverRequest::decode(opened.payload.as_slice())
        .map_err(|error| TicketRefused::Malformed(error.to_string()))?;
    let age = now_ms.abs_diff(request.issued_unix_ms);
    if age > MAX_SKEW_MS {
        return Err(TicketRefused::Stale(age));
    }
    if request.lease_id.is_empty() || request.reserve_slots == 0 {
        return Err(TicketRefused::Malformed(
            "a hand-over ticket names its lease and slots".into(),
        ));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_cluster::keys::{Secrets, Traffic};

    fn sealer(secret: &str) -> Sealer {
        Sealer::new(&Secrets::from(secret), Traffic::Handovers)
    }

    fn request(issued_unix_ms: u64) -> HandoverRequest {
        HandoverRequest {
            query_id: "q".into(),
            lease_id: "l".into(),
            reserve_slots: 1,
            issued_unix_ms,
            ..HandoverRequest::default()
        }
    }

    #[test]
    fn a_ticket_opens_with_the_clusters_key_within_its_life() {
        let sealer = sealer("s3cret");
        let ticket = seal_ticket(&sealer, &request(1_000_000));
        assert!(ticket.starts_with(HANDOVER_TICKET_PREFIX));
        assert_eq!(
            open_ticket(&sealer, &ticket, 1_000_050),
            Ok(request(1_000_000))
        );
        let late = 1_000_000 + MAX_SKEW_MS + 1;
        assert!(open_ticket(&sealer, &ticket, late).is_err(), "too old");
        let early = 1_000_000 - MAX_SKEW_MS - 1;
        assert!(
            open_ticket(&sealer, &ticket, early).is_err(),
            "from the future"
        );
    }

    #[test]
    fn a_forged_or_foreign_ticket_is_refused() {
        let sealer = sealer("s3cret");
        let mut ticket = seal_ticket(&sealer, &request(5_000));
        let last = ticket.len() - 1;
        ticket[last] ^= 1;
        assert!(matches!(
            open_ticket(&sealer, &ticket, 5_000),
            Err(TicketRefused::Unsealed(_))
        ));
        let foreign = seal_ticket(&self::sealer("other"), &request(5_000));
        assert!(open_ticket(&sealer, &foreign, 5_000).is_err());
        let unsealed = seal_ticket(&Sealer::open_cluster(), &request(5_000));
        assert!(
            open_ticket(&sealer, &unsealed, 5_000).is_err(),
            "a cluster with a secret takes no unsealed hand-over"
        );
        assert!(open_ticket(&sealer, b"q.123", 5_000).is_err());
    }

    #[test]
    fn without_a_secret_the_age_is_still_checked() {
        let open = Sealer::open_cluster();
        let ticket = seal_ticket(&open, &request(5_000));
        assert!(open_ticket(&open, &ticket, 5_100).is_ok());
        assert_eq!(
            open_ticket(&open, &ticket, 5_000 + MAX_SKEW_MS + 1),
            Err(TicketRefused::Stale(MAX_SKEW_MS + 1))
        );
    }
}
