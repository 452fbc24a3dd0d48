//! What a query may allocate on this process: function calls bounded before they allocate,
//! per-query allocation accounts kept by the allocator, and a watermark over the process.

mod account;
mod functions;
mod guard;
mod metrics;

pub(crate) use account::{Tracked, TrackedFuture, charged};
pub(crate) use functions::register_bounded_functions;
pub(crate) use guard::{MemoryGuard, available_memory};
pub(crate) use metrics::MemoryMetrics;
