//! Slot leases between shards and TaskManagers: each TaskManager is the only authority over its
//! own slots. A shard reserves slots on the TaskManagers it picks, under one lease id per
//! query; once the result is fetched, the query's head TaskManager renews them while it streams
//! and releases them at its end. Leases nobody renews expire after their TTL, so a crashed holder leaks nothing for
//! longer than that.
//!
//! ```text
//!  shard ──reserve(lease, slots, ttl)──▶ TM₁, TM₂      (refused beyond free slots)
//!  shard ──hand-over(plan, lease, [TM₁, TM₂])──▶ TM₁ (head)
//!  gateway ──DoGet(ticket)──▶ TM₁                       (within the TTL, else refused)
//!  TM₁ ──renew(lease) every ttl/3──▶ TM₁, TM₂          (while the result streams)
//!  TM₁ ──release(lease)──▶ TM₁, TM₂                    (stream ended, failed or dropped)
//!  TM₂ runs a task only with header x-flotilla-lease naming a live lease
//! ```
//!
//! A query that runs on one TaskManager is reserved by the head itself: in the reserving
//! hand-over call, or when the gateway presents the ticket that carries the hand-over
//! (`handover.rs`); nothing is held before.

/// The Flight action that reserves slots.
pub const RESERVE_ACTION: &str = "flotilla.lease.reserve";
/// The Flight action that extends leases.
pub const RENEW_ACTION: &str = "flotilla.lease.renew";
/// The Flight action that returns leased slots.
pub const RELEASE_ACTION: &str = "flotilla.lease.release";
/// The gRPC header naming the lease a stage task runs under.
pub const LEASE_HEADER: &str = "x-flotilla-lease";

/// Asks a TaskManager for slots.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReserveRequest {
    /// The lease id, the same on every TaskManager of the query.
    #[prost(string, tag = "1")]
    pub lease_id: String,
    /// The query, for logs.
    #[prost(string, tag = "2")]
    pub query_id: String,
    /// Slots wanted.
    #[prost(uint64, tag = "3")]
    pub slots: u64,
    /// Lifetime unless renewed, in milliseconds.
    #[prost(uint64, tag = "4")]
    pub ttl_ms: u64,
    /// The shard asking, for operators: who holds the slots until the hand-over.
    #[prost(string, tag = "5")]
    pub holder: String,
}

/// A granted reservation.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReserveResponse {
    /// Slots still free after the grant.
    #[prost(uint64, tag = "1")]
    pub slots_free: u64,
}

/// Extends or returns leases.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseIds {
    /// The leases.
    #[prost(string, repeated, tag = "1")]
    pub lease_ids: Vec<String>,
    /// New lifetime from now, in milliseconds (renew only).
    #[prost(uint64, tag = "2")]
    pub ttl_ms: u64,
}

/// The answer to a renewal.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RenewResponse {
    /// Leases this TaskManager does not hold (expired or never granted).
    #[prost(string, repeated, tag = "1")]
    pub unknown: Vec<String>,
}
