//! What a shard answers besides running queries: the values of a statement's placeholders
//! bound into its plan, a statement described without running it (Flight SQL prepared
//! statements), and the tables it serves (Flight SQL metadata).

use super::planner::Planner;
use crate::error::AgentError;
use arrow_flight::sql::ActionCreatePreparedStatementResult;
use arrow_flight::sql::metadata::GetTablesBuilder;
use arrow_flight::{IpcMessage, SchemaAsIpc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::logical_expr::LogicalPlan;

impl Planner {
    /// Binds the placeholder values in `params` (an Arrow IPC stream of one row) into
    /// `logical`. A statement with placeholders and no values is the client's error.
    pub(crate) fn bind(
        &self,
        logical: LogicalPlan,
        params: &[u8],
    ) -> Result<LogicalPlan, AgentError> {
        if params.is_empty() {
            let names = parameter_names(&logical)?;
            if !names.is_empty() {
                return Err(AgentError::SqlPlanning(format!(
                    "the statement has parameters ({}) but no values were bound",
                    names.join(", ")
                )));
            }
            return Ok(logical);
        }
        let values = decode_row(params)?;
        logical
            .with_param_values(values)
            .map_err(AgentError::from_planning)
    }

    /// Plans `sql` logically and returns, as a Flight SQL prepared-statement answer (without a
    /// handle), the schema of its result and the schema of its parameters (`$1`, `$2`, ...; a
    /// parameter whose type the statement does not fix is `Null`).
    pub(crate) async fn describe(
        &self,
        sql: &str,
    ) -> Result<ActionCreatePreparedStatementResult, AgentError> {
        let logical = self.prepare(sql).await?;
        let dataset = logical.schema().as_arrow().clone();
        let fields = logical
            .get_parameter_fields()
            .map_err(AgentError::from_planning)?;
        let parameters = Schema::new(
            parameter_names(&logical)?
                .into_iter()
                .map(|name| match fields.get(&name).cloned().flatten() {
                    Some(field) => field.as_ref().clone().with_name(name).with_nullable(true),
                    None => Field::new(name, DataType::Null, true),
                })
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Default::default(),
            dataset_schema: ipc_schema(&dataset)?.into(),
            parameter_schema: ipc_schema(&parameters)?.into(),
        })
    }

    /// Lists every table this shard serves, with its schema, as an Arrow IPC stream in the
    /// shape of a Flight SQL `GetTables` answer (`include_schema`).
    pub(crate) async fn catalog(&self) -> Result<Vec<u8>, AgentError> {
        let mut tables = GetTablesBuilder::new(
            None::<String>,
            None::<String>,
            None::<String>,
            Vec::<String>::new(),
            true,
        );
        let catalogs = self.state.catalog_list();
        for catalog_name in catalogs.catalog_names() {
            let Some(catalog) = catalogs.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table_name in schema.table_names() {
                    let Some(table) = schema.table(&table_name).await? else {
                        continue;
                    };
                    let kind = match table.table_type() {
                        TableType::View => "VIEW",
                        TableType::Temporary => "LOCAL TEMPORARY",
                        TableType::Base => "TABLE",
                    };
                    tables
                        .append(
                            &catalog_name,
                            &schema_name,
                            &table_name,
                            kind,
                            &table.schema(),
                        )
                        .map_err(internal)?;
                }
            }
        }
        let batch = tables.build().map_err(internal)?;
        encode_stream(&batch)
    }
}

/// The statement's placeholders, `$1` before `$2` before `$10`.
fn parameter_names(logical: &LogicalPlan) -> Result<Vec<String>, AgentError> {
    let mut names: Vec<String> = logical
        .get_parameter_fields()
        .map_err(AgentError::from_planning)?
        .into_keys()
        .collect();
    names.sort_by_key(|name| {
        let number = name
            .trim_start_matches('$')
            .parse::<u64>()
            .unwrap_or(u64::MAX);
        (number, name.clone())
    });
    Ok(names)
}

/// Decodes one row of parameter values.
fn decode_row(params: &[u8]) -> Result<Vec<ScalarValue>, AgentError> {
    let bad = |message: String| AgentError::BadRequest(format!("parameters: {message}"));
    let reader = StreamReader::try_new(params, None).map_err(|error| bad(error.to_string()))?;
    let mut row = None;
    for batch in reader {
        let batch = batch.map_err(|error| bad(error.to_string()))?;
        if batch.num_rows() == 0 {
            continue;
        }
        if batch.num_rows() > 1 || row.is_some() {
            return Err(bad(
                "a query takes one row of parameter values; run it once per row".into(),
            ));
        }
        row = Some(
            batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| bad(error.to_string()))?,
        );
    }
    row.ok_or_else(|| bad("no row of values".into()))
}

/// Encodes a schema as an IPC-encapsulated `Schema` message, as Flight SQL sends schemas.
fn ipc_schema(schema: &Schema) -> Result<Vec<u8>, AgentError> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(internal)?;
    Ok(bytes.to_vec())
}

fn encode_stream(batch: &RecordBatch) -> Result<Vec<u8>, AgentError> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).map_err(internal)?;
    writer.write(batch).map_err(internal)?;
    writer.finish().map_err(internal)?;
    drop(writer);
    Ok(bytes)
}

fn internal(error: impl std::fmt::Display) -> AgentError {
    AgentError::Internal(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn row(batch: &RecordBatch) -> Vec<u8> {
        encode_stream(batch).unwrap()
    }

    #[test]
    fn one_row_of_values_decodes_and_more_rows_are_refused() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Int64, true),
            Field::new("$2", DataType::Utf8, true),
        ]));
        let one = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["BUILDING"])),
            ],
        )
        .unwrap();
        assert_eq!(
            decode_row(&row(&one)).unwrap(),
            vec![ScalarValue::Int64(Some(7)), ScalarValue::from("BUILDING")]
        );
        let two = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let error = decode_row(&row(&two)).unwrap_err();
        assert_eq!(error.code(), flotilla_protocol::ErrorCode::BadRequest);
        assert!(decode_row(b"not arrow").is_err());
    }
}
