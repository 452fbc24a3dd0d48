//! Prepared statements: created by asking a shard to describe the SQL (its result's schema and
//! its parameters' schema), bound to one row of values by `DoPut`, run as many times as the
//! client likes, closed by the client or after `flight.prepared_idle_ms` unused.

use super::auth::client_status;
use super::state::FlightSql;
use crate::control::Protocol;
use crate::error::GatewayError;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandPreparedStatementQuery,
    DoPutPreparedStatementResult,
};
use arrow_flight::{FlightDescriptor, FlightInfo};
use flotilla_protocol::{
    DESCRIBE_ACTION, ErrorBody, ErrorCode, QueryCommand, QueryId, TENANT_HEADER,
};
use futures::TryStreamExt;
use prost::Message;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::Status;
use tonic::metadata::MetadataMap;

/// One open prepared statement.
struct Statement {
    sql: String,
    tenant: String,
    /// One row of values, as an Arrow IPC stream; empty until bound.
    params: Vec<u8>,
    used: Instant,
}

/// The open prepared statements of this gateway, under random 128-bit handles.
pub(super) struct Prepared {
    max: usize,
    tenant_max: usize,
    idle: Duration,
    statements: Mutex<HashMap<[u8; 16], Statement>>,
}

impl Prepared {
    pub(super) fn new(max: usize, tenant_max: usize, idle: Duration) -> Self {
        Self {
            max,
            tenant_max,
            idle,
            statements: Mutex::default(),
        }
    }

    fn statements(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Statement>> {
        self.statements
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Closes the statements unused for longer than the idle limit; returns how many.
    pub(super) fn expire(&self) -> usize {
        let idle = self.idle;
        let mut statements = self.statements();
        let before = statements.len();
        statements.retain(|_, statement| statement.used.elapsed() <= idle);
        before - statements.len()
    }

    /// Opens a statement of `tenant` and returns its handle, unless this gateway
    /// (`flight.max_prepared_statements`) or the tenant
    /// (`flight.tenant_max_prepared_statements`) has as many open as allowed, idle ones closed.
    fn open(&self, sql: String, tenant: String) -> Result<[u8; 16], Status> {
        let full = |what: String| {
            Err(ErrorBody::new(ErrorCode::ResourcesExhausted, what).to_client_status())
        };
        let mut statements = self.statements();
        let of_tenant = |statements: &HashMap<[u8; 16], Statement>| {
            statements
                .values()
                .filter(|statement| statement.tenant == tenant)
                .count()
        };
        if statements.len() >= self.max || of_tenant(&statements) >= self.tenant_max {
            let idle = self.idle;
            statements.retain(|_, statement| statement.used.elapsed() <= idle);
        }
        if statements.len() >= self.max {
            return full(format!(
                "this gateway has {} prepared statements open (flight.max_prepared_statements): close some",
                self.max
            ));
        }
        if of_tenant(&statements) >= self.tenant_max {
            return full(format!(
                "tenant {tenant} has {} prepared statements open on this gateway (flight.tenant_max_prepared_statements): close some",
                self.tenant_max
            ));
        }
        let handle = *uuid::Uuid::new_v4().as_bytes();
        statements.insert(
            handle,
            Statement {
                sql,
                tenant,
                params: Vec::new(),
                used: Instant::now(),
            },
        );
        Ok(handle)
    }

    /// Runs `visit` on the statement of `handle` if `allowed` accepts its tenant.
    fn with<T>(
        &self,
        handle: &[u8],
        allowed: impl FnOnce(&str) -> bool,
        visit: impl FnOnce(&mut Statement) -> T,
    ) -> Result<T, Status> {
        let unknown = || {
            ErrorBody::new(
                ErrorCode::NotFound,
                "the prepared statement is unknown, closed or expired (flight.prepared_idle_ms)",
            )
            .to_client_status()
        };
        let handle: [u8; 16] = handle.try_into().map_err(|_| unknown())?;
        let mut statements = self.statements();
        let statement = statements.get_mut(&handle).ok_or_else(unknown)?;
        if !allowed(&statement.tenant) {
            return Err(unknown());
        }
        statement.used = Instant::now();
        Ok(visit(statement))
    }
}

impl FlightSql {
    /// `CreatePreparedStatement`: the shard of the statement plans it without running it.
    pub(super) async fn create_prepared(
        &self,
        metadata: &MetadataMap,
        request: ActionCreatePreparedStatementRequest,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(metadata)?;
        self.check_size(request.query.len())?;
        if request.transaction_id.is_some() {
            return Err(not_supported("transactions"));
        }
        let tenant_header = metadata
            .get(TENANT_HEADER)
            .and_then(|value| value.to_str().ok());
        let tenant = caller
            .tenant_for(tenant_header)
            .map_err(|error| client_status(&error))?;
        let query_id = QueryId::new();
        // The counted failure of the client's statement, as a query's would be.
        let refused = |error: GatewayError| {
            let code = error.code().as_str();
            self.inner
                .metrics
                .queries
                .with_label_values(&[code, Protocol::FlightSql.as_str()])
                .inc();
            tracing::info!(%query_id, code, %error, "statement refused at prepare");
            error.to_body().with_query_id(query_id).to_client_status()
        };
        // A prepare plans on a shard: it is admitted like a query (the tenant's and the
        // gateway's limits), and holds its permits while the shard describes it.
        let permit = self.inner.tenants.admit(&tenant).await.map_err(refused)?;
        let command = QueryCommand {
            query_id,
            sql: request.query.clone(),
            tenant: tenant.clone(),
            pool: permit.pool().to_string(),
            params: Vec::new(),
            avoid: Vec::new(),
            no_cache: false,
            via_handover: false,
        };
        let key = crate::query::normalized(&request.query);
        let answer = self
            .inner
            .shards
            .ask(
                &key,
                DESCRIBE_ACTION,
                command.to_bytes(),
                &super::statements::trace_of(metadata),
            )
            .await
            .map_err(refused)?;
        drop(permit);
        let mut described =
            ActionCreatePreparedStatementResult::decode(answer).map_err(|error| {
                client_status(&GatewayError::Internal(format!(
                    "shard's description: {error}"
                )))
            })?;
        let handle = self.inner.prepared.open(request.query, tenant)?;
        described.prepared_statement_handle = handle.to_vec().into();
        Ok(described)
    }

    /// `DoPut` of parameters: one row of values, kept for the following executions.
    pub(super) async fn bind_prepared(
        &self,
        metadata: &MetadataMap,
        command: CommandPreparedStatementQuery,
        values: PeekableFlightDataStream,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(metadata)?;
        let handle = command.prepared_statement_handle;
        self.inner
            .prepared
            .with(&handle, |tenant| caller.sees(tenant), |_| ())?;
        let invalid = |error: FlightError| {
            client_status(&GatewayError::BadRequest(format!(
                "parameter values: {error}"
            )))
        };
        let mut values =
            FlightRecordBatchStream::new_from_flight_data(values.map_err(FlightError::from));
        let (mut batches, mut rows) = (Vec::new(), 0);
        // More than one row is refused: no need to read further.
        while rows <= 1
            && let Some(batch) = values.try_next().await.map_err(invalid)?
        {
            rows += batch.num_rows();
            batches.push(batch);
        }
        let params = encode_values(&batches).map_err(|error| client_status(&error))?;
        self.check_size(params.len())?;
        self.inner.prepared.with(
            &handle,
            |tenant| caller.sees(tenant),
            |statement| statement.params = params,
        )?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    /// Runs a prepared statement with its bound values.
    pub(super) async fn execute_prepared(
        &self,
        metadata: &MetadataMap,
        command: CommandPreparedStatementQuery,
        descriptor: FlightDescriptor,
    ) -> Result<tonic::Response<FlightInfo>, Status> {
        let caller = self.caller(metadata)?;
        let (sql, params) = self.inner.prepared.with(
            &command.prepared_statement_handle,
            |tenant| caller.sees(tenant),
            |statement| (statement.sql.clone(), statement.params.clone()),
        )?;
        self.start(metadata, sql, params, descriptor).await
    }

    /// `ClosePreparedStatement`.
    pub(super) fn close_prepared(
        &self,
        metadata: &MetadataMap,
        request: ActionClosePreparedStatementRequest,
    ) -> Result<(), Status> {
        let caller = self.caller(metadata)?;
        let handle = request.prepared_statement_handle;
        self.inner
            .prepared
            .with(&handle, |tenant| caller.sees(tenant), |_| ())?;
        if let Ok(handle) = <[u8; 16]>::try_from(handle.as_ref()) {
            self.inner.prepared.statements().remove(&handle);
        }
        Ok(())
    }
}

/// Encodes bound values as one Arrow IPC stream; no rows means no values.
fn encode_values(batches: &[arrow_array::RecordBatch]) -> Result<Vec<u8>, GatewayError> {
    let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
    if rows == 0 {
        return Ok(Vec::new());
    }
    if rows > 1 {
        return Err(GatewayError::BadRequest(format!(
            "{rows} rows of parameter values: a query takes one row; execute it once per row"
        )));
    }
    let bad = |error: arrow_schema::ArrowError| GatewayError::BadRequest(error.to_string());
    let mut bytes = Vec::new();
    let schema = batches[0].schema();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &schema).map_err(bad)?;
    for batch in batches.iter().filter(|batch| batch.num_rows() > 0) {
        writer.write(batch).map_err(bad)?;
    }
    writer.finish().map_err(bad)?;
    drop(writer);
    Ok(bytes)
}

/// The status for a Flight SQL feature Flotilla does not offer (read-only, no transactions).
pub(super) fn not_supported(what: &str) -> Status {
    ErrorBody::new(
        ErrorCode::NotAllowed,
        format!("{what} are not supported: Flotilla runs read-only queries"),
    )
    .to_client_status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, RecordBatch};
    use std::sync::Arc;

    fn insert(prepared: &Prepared, tenant: &str) -> [u8; 16] {
        let handle = *uuid::Uuid::new_v4().as_bytes();
        prepared.statements().insert(
            handle,
            Statement {
                sql: "SELECT $1".into(),
                tenant: tenant.into(),
                params: Vec::new(),
                used: Instant::now(),
            },
        );
        handle
    }

    #[test]
    fn statements_belong_to_their_tenant_and_close_when_idle() {
        let prepared = Prepared::new(10, 10, Duration::from_millis(1));
        let handle = insert(&prepared, "alpha");
        let sql = prepared.with(
            &handle,
            |tenant| tenant == "alpha",
            |statement| statement.sql.clone(),
        );
        assert_eq!(sql.unwrap(), "SELECT $1");
        let refused = prepared.with(&handle, |tenant| tenant == "beta", |_| ());
        assert_eq!(refused.unwrap_err().code(), tonic::Code::NotFound);
        assert!(prepared.with(b"short", |_| true, |_| ()).is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(prepared.expire(), 1);
        assert!(prepared.with(&handle, |_| true, |_| ()).is_err());
    }

    #[test]
    fn one_tenant_cannot_fill_the_gateway() {
        let prepared = Prepared::new(4, 2, Duration::from_secs(60));
        let open = |tenant: &str| prepared.open("SELECT 1".into(), tenant.into());
        assert!(open("alpha").is_ok() && open("alpha").is_ok());
        let refused = open("alpha").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("tenant alpha"), "{refused}");
        assert!(
            open("beta").is_ok() && open("beta").is_ok(),
            "others still open theirs"
        );
        let full = open("gamma").unwrap_err();
        assert!(full.message().contains("this gateway has 4"), "{full}");
    }

    #[test]
    fn one_row_of_values_is_kept_and_more_are_refused() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "$1",
            arrow_schema::DataType::Int64,
            true,
        )]));
        let batch = |values: Vec<i64>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(values))],
            )
            .unwrap()
        };
        assert!(encode_values(&[]).unwrap().is_empty());
        assert!(encode_values(&[batch(vec![])]).unwrap().is_empty());
        let one = encode_values(&[batch(vec![]), batch(vec![7])]).unwrap();
        let decoded: Vec<_> = arrow_ipc::reader::StreamReader::try_new(one.as_slice(), None)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(decoded.iter().map(RecordBatch::num_rows).sum::<usize>(), 1);
        let error = encode_values(&[batch(vec![1, 2])]).unwrap_err();
        assert_eq!(error.code(), ErrorCode::BadRequest);
    }
}
