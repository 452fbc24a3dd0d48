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
//! carries `reserve_slots`, and the head reserves and adopts the lease in one step.

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
}

/// The answer to a hand-over.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HandoverResponse {
    /// Opaque bytes the gateway presents in `DoGet`.
    #[prost(bytes = "vec", tag = "1")]
    pub ticket: Vec<u8>,
}
