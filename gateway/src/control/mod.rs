//! Query control: every running query is registered under its id with a cancel switch and a
//! deadline, from admission to the last byte of its result.
//!
//! ```text
//!  DELETE /v1/query/{id} ─▶ Registry::cancel ─┐
//!  deadline (timeout)  ───────────────────────┼─▶ the query future or its result stream
//!  client disconnect (hyper drops the body) ──┘   is dropped ─▶ DoGet cancelled on the head
//!                                                  TaskManager ─▶ stages stop, lease released
//! ```
//! Before the first byte the client gets `cancelled` (499) or `query_timeout` (504); after it,
//! the response is aborted, never ended cleanly.
//!
//! Each query carries a [`Timeline`] that the layers mark (admitted, planned, first byte, end);
//! the registry keeps the timelines of the last `query.history` ended queries for
//! `GET /v1/query/{id}`.

mod layer;
mod registry;
mod service;
mod timeline;

pub use layer::ControlLayer;
pub use registry::{Registry, RunningQuery};
pub use service::Control;
pub use timeline::{PhaseDurations, Protocol, Timeline};
