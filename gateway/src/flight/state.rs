//! [`FlightSql`]: the Flight SQL service's state, shared by its rooms (statements, prepared
//! statements, metadata), and the checks every call makes.

use super::auth::client_status;
use super::metadata::info_for;
use super::prepared::Prepared;
use super::results::Results;
use super::shards::Shards;
use super::tickets::Tickets;
use crate::admission::Tenants;
use crate::auth::Auth;
use crate::control::Registry as QueryRegistry;
use crate::error::GatewayError;
use crate::limits::TenantLimits;
use crate::metrics::GatewayMetrics;
use crate::stack::QueryService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::{FlightDescriptor, FlightInfo};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The Flight SQL service; cheap to clone.
#[derive(Clone)]
pub(crate) struct FlightSql {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) queries: QueryService,
    /// Admission, shared with `queries`: a prepare plans on a shard, so it is admitted too.
    pub(super) tenants: Arc<Tenants>,
    pub(super) auth: Auth,
    pub(super) limits: TenantLimits,
    pub(super) timeout: Duration,
    /// Longest SQL text, and largest row of parameter values, in bytes (`http.max_body_bytes`).
    pub(super) max_request_bytes: usize,
    pub(super) running: Arc<QueryRegistry>,
    pub(super) metrics: GatewayMetrics,
    pub(super) shards: Shards,
    pub(super) results: Results,
    pub(super) tickets: Tickets,
    pub(super) prepared: Prepared,
    pub(super) sql_info: SqlInfoData,
    pub(super) xdbc_types: XdbcTypeInfoData,
}

impl FlightSql {
    pub(super) fn new(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Refuses a request part over the size limit HTTP bodies have.
    pub(super) fn check_size(&self, bytes: usize) -> Result<(), Status> {
        let limit = self.inner.max_request_bytes;
        if bytes > limit {
            return Err(client_status(&GatewayError::PayloadTooLarge { limit }));
        }
        Ok(())
    }
}

impl FlightSql {
    /// The `FlightInfo` of a metadata command, for a caller with a valid token.
    pub(super) fn metadata_info(
        &self,
        request: Request<FlightDescriptor>,
        command: &impl arrow_flight::sql::ProstMessageExt,
        schema: &arrow_schema::Schema,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        info_for(command, schema, request.into_inner()).map(Response::new)
    }
}
