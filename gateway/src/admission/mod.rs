//! Admission: per-tenant concurrency limits with bounded, time-limited queues, under one
//! global bound. A tenant over its limit waits in its own queue, so one tenant flooding fills
//! only its own queue (429 `tenant_queue_full`) and never delays another tenant's queries.
//!
//! Permits are held until the result stream ends, not just until the first byte: tower's
//! `ConcurrencyLimit` releases when the response future completes, which here is when the
//! stream *starts*, and its limit is one number rather than one per tenant.

mod layer;
mod service;
mod tenants;

pub use layer::AdmissionLayer;
pub use service::Admission;
pub(crate) use tenants::Tenants;
