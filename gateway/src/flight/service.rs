//! arrow-flight's `FlightSqlService` for [`FlightSql`]: each call checks its caller, then
//! hands over to the room that does the work: statements, prepared statements, metadata.

use super::auth::client_status;
use super::metadata::{self, batch_stream, empty};
use super::prepared::not_supported;
use super::state::FlightSql;
use super::statements::{CloseSessionResult, SESSION_CLOSED, cancel_status, ticket_of};
use crate::error::GatewayError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, Ticket,
};
use futures::stream::BoxStream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

type Stream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream<HandshakeResponse>>, Status> {
        self.handshake(request.metadata())
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        if query.transaction_id.is_some() {
            return Err(not_supported("transactions"));
        }
        let (metadata, _, descriptor) = request.into_parts();
        self.start(&metadata, query.query, Vec::new(), descriptor)
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.fetch(request.metadata(), &ticket.statement_handle)
            .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (metadata, _, descriptor) = request.into_parts();
        self.execute_prepared(&metadata, command, descriptor).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.create_prepared(request.metadata(), query).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (metadata, _, values) = request.into_parts();
        self.bind_prepared(&metadata, query, values).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.close_prepared(request.metadata(), query)
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info).map_err(|error| {
            client_status(&GatewayError::BadRequest(format!("FlightInfo: {error}")))
        })?;
        let cancelled = self.cancel(request.metadata(), &ticket_of(&info)?)?;
        Ok(ActionCancelQueryResult {
            result: cancel_status(cancelled) as i32,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let body = match request.get_ref().r#type.as_str() {
            "CancelFlightInfo" => {
                let cancel = CancelFlightInfoRequest::decode(request.get_ref().body.clone())
                    .map_err(|error| {
                        client_status(&GatewayError::BadRequest(format!(
                            "CancelFlightInfoRequest: {error}"
                        )))
                    })?;
                let info = cancel.info.unwrap_or_default();
                let cancelled = self.cancel(request.metadata(), &ticket_of(&info)?)?;
                CancelFlightInfoResult {
                    status: cancel_status(cancelled) as i32,
                }
                .encode_to_vec()
            }
            // Flotilla keeps no session state besides statements, which close on their own.
            "CloseSession" => {
                self.caller(request.metadata())?;
                CloseSessionResult {
                    status: SESSION_CLOSED,
                }
                .encode_to_vec()
            }
            other => {
                return Err(client_status(&GatewayError::BadRequest(format!(
                    "unknown action `{other}`"
                ))));
            }
        };
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.inner.sql_info).schema();
        self.metadata_info(request, &query, &schema)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let builder = query.into_builder(&self.inner.sql_info);
        let schema = builder.schema();
        let batch = builder
            .build()
            .map_err(|error| client_status(&GatewayError::Internal(error.to_string())))?;
        Ok(Response::new(batch_stream(schema, batch)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &query, &schema)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let batch = self.catalogs(query).await?;
        Ok(Response::new(batch_stream(batch.schema(), batch)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &query, &schema)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let batch = self.db_schemas(query).await?;
        Ok(Response::new(batch_stream(batch.schema(), batch)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(request, &query, &schema)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let batch = self.tables(query).await?;
        Ok(Response::new(batch_stream(batch.schema(), batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(request, &query, &schema)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let batch = self.table_types(query)?;
        Ok(Response::new(batch_stream(batch.schema(), batch)))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &query, &metadata::primary_keys_schema())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        Ok(Response::new(empty(metadata::primary_keys_schema())))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &query, &metadata::foreign_keys_schema())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        Ok(Response::new(empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &query, &metadata::foreign_keys_schema())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        Ok(Response::new(empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.metadata_info(request, &query, &metadata::foreign_keys_schema())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        Ok(Response::new(empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.inner.xdbc_types).schema();
        self.metadata_info(request, &query, &schema)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let builder = query.into_builder(&self.inner.xdbc_types);
        let schema = builder.schema();
        let batch = builder
            .build()
            .map_err(|error| client_status(&GatewayError::Internal(error.to_string())))?;
        Ok(Response::new(batch_stream(schema, batch)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
