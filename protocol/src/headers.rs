//! HTTP header names of the public API.

/// Carries the query id on every gateway response.
pub const QUERY_ID_HEADER: &str = "x-flotilla-query-id";
/// Chooses the shard by consistent hashing instead of the SQL text.
pub const ROUTING_KEY_HEADER: &str = "x-flotilla-routing-key";
/// Names the tenant a query runs for.
pub const TENANT_HEADER: &str = "x-flotilla-tenant";
