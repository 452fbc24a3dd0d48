//! Flight SQL metadata: server facts (`GetSqlInfo`) and the catalog the shards serve
//! (`GetCatalogs`, `GetDbSchemas`, `GetTables`, `GetTableTypes`), filtered here with
//! arrow-flight's builders; keys are answered empty, with the spec's schemas.

use super::auth::client_status;
use super::state::FlightSql;
use crate::error::GatewayError;
use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTableTypes, CommandGetTables,
    ProstMessageExt, SqlInfo, SqlSupportedTransaction, SupportedSqlGrammar,
};
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use flotilla_protocol::{CATALOG_ACTION, TraceContext};
use futures::StreamExt;
use futures::stream::BoxStream;
use prost::Message;
use std::sync::Arc;
use tonic::Status;

/// Table types the shards' catalog can hold.
const TABLE_TYPES: [&str; 3] = ["LOCAL TEMPORARY", "TABLE", "VIEW"];

/// What `GetSqlInfo` answers: a read-only server without transactions.
pub(super) fn sql_info() -> anyhow::Result<SqlInfoData> {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "Flotilla");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow IPC format version (Schema.fbs MetadataVersion V5).
    info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(SqlInfo::FlightSqlServerCancel, true);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    Ok(info.build()?)
}

/// A `FlightInfo` whose one endpoint's ticket is the command itself: `DoGet` answers it.
pub(super) fn info_for(
    command: &impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
    FlightInfo::new()
        .try_with_schema(schema)
        .map(|info| info.with_endpoint(endpoint).with_descriptor(descriptor))
        .map_err(|error| client_status(&GatewayError::Internal(error.to_string())))
}

/// Streams one batch.
pub(super) fn batch_stream(
    schema: SchemaRef,
    batch: RecordBatch,
) -> BoxStream<'static, Result<FlightData, Status>> {
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map(|message| message.map_err(Status::from))
        .boxed()
}

/// An empty batch of `schema` (keys: Flotilla's tables declare none).
pub(super) fn empty(schema: SchemaRef) -> BoxStream<'static, Result<FlightData, Status>> {
    let batch = RecordBatch::new_empty(Arc::clone(&schema));
    batch_stream(schema, batch)
}

/// The schema of `GetPrimaryKeys`.
pub(super) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The schema of `GetExportedKeys`, `GetImportedKeys` and `GetCrossReference`.
pub(super) fn foreign_keys_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// One table the shards serve.
struct Table {
    catalog: String,
    schema_name: String,
    name: String,
    kind: String,
    schema: Schema,
}

impl FlightSql {
    /// Every table the shards serve, as one of them lists it.
    async fn tables_served(&self) -> Result<Vec<Table>, Status> {
        let answer = self
            .inner
            .shards
            .ask("", CATALOG_ACTION, Vec::new(), &TraceContext::root())
            .await
            .map_err(|error| client_status(&error))?;
        decode_tables(&answer).map_err(|error| client_status(&error))
    }

    pub(super) async fn catalogs(
        &self,
        command: CommandGetCatalogs,
    ) -> Result<RecordBatch, Status> {
        let mut builder = command.into_builder();
        let mut names: Vec<String> = self
            .tables_served()
            .await?
            .into_iter()
            .map(|table| table.catalog)
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            builder.append(name);
        }
        builder.build().map_err(arrow_status)
    }

    pub(super) async fn db_schemas(
        &self,
        command: CommandGetDbSchemas,
    ) -> Result<RecordBatch, Status> {
        let mut builder = command.into_builder();
        let mut pairs: Vec<(String, String)> = self
            .tables_served()
            .await?
            .into_iter()
            .map(|table| (table.catalog, table.schema_name))
            .collect();
        pairs.sort();
        pairs.dedup();
        for (catalog, schema) in pairs {
            builder.append(catalog, schema);
        }
        builder.build().map_err(arrow_status)
    }

    pub(super) async fn tables(&self, command: CommandGetTables) -> Result<RecordBatch, Status> {
        let mut builder = command.into_builder();
        for table in self.tables_served().await? {
            builder
                .append(
                    &table.catalog,
                    &table.schema_name,
                    &table.name,
                    &table.kind,
                    &table.schema,
                )
                .map_err(arrow_status)?;
        }
        builder.build().map_err(arrow_status)
    }

    pub(super) fn table_types(&self, command: CommandGetTableTypes) -> Result<RecordBatch, Status> {
        let mut builder = command.into_builder();
        for kind in TABLE_TYPES {
            builder.append(kind);
        }
        builder.build().map_err(arrow_status)
    }
}

/// Decodes a shard's catalog answer: an IPC stream in the shape of `GetTables` with schemas.
fn decode_tables(answer: &[u8]) -> Result<Vec<Table>, GatewayError> {
    let bad = |what: String| GatewayError::Internal(format!("the shard's catalog: {what}"));
    let reader = arrow_ipc::reader::StreamReader::try_new(answer, None)
        .map_err(|error| bad(error.to_string()))?;
    let mut tables = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| bad(error.to_string()))?;
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|column| column.as_string_opt::<i32>().cloned())
                .ok_or_else(|| bad(format!("no text column {name}")))
        };
        let (catalogs, schemas, names, kinds) = (
            text("catalog_name")?,
            text("db_schema_name")?,
            text("table_name")?,
            text("table_type")?,
        );
        let encoded = batch
            .column_by_name("table_schema")
            .and_then(|column| column.as_binary_opt::<i32>().cloned())
            .ok_or_else(|| bad("no table_schema column".into()))?;
        for row in 0..batch.num_rows() {
            let schema = arrow_ipc::convert::try_schema_from_ipc_buffer(encoded.value(row))
                .map_err(|error| bad(error.to_string()))?;
            let value = |column: &arrow_array::StringArray| {
                if column.is_null(row) {
                    String::new()
                } else {
                    column.value(row).to_string()
                }
            };
            tables.push(Table {
                catalog: value(&catalogs),
                schema_name: value(&schemas),
                name: value(&names),
                kind: value(&kinds),
                schema,
            });
        }
    }
    Ok(tables)
}

fn arrow_status(error: impl std::fmt::Display) -> Status {
    client_status(&GatewayError::Internal(error.to_string()))
}
