//! `system.tables`: every table of the catalog with its format, location and current version
//! (a Delta table's commit, an Iceberg table's snapshot id; a file table's listing hash), as the shard sees them now. A shard
//! answers it from its catalog like `information_schema` (`jobmanager/introspection.rs`): no
//! TaskManager runs it.

use super::versions::CatalogVersions;
use super::{CatalogConfig, TableFormat};
use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::memory::{MemorySchemaProvider, MemorySourceConfig};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::fmt;
use std::sync::Arc;

/// The schema holding Flotilla's own views of the catalog.
pub(crate) const SCHEMA: &str = "system";

/// Registers `system.tables` in `state`'s default catalog.
pub(crate) fn register(
    state: &SessionState,
    catalog: &CatalogConfig,
    versions: Arc<CatalogVersions>,
) -> Result<()> {
    let default = &state.config().options().catalog.default_catalog;
    let target = state
        .catalog_list()
        .catalog(default)
        .ok_or_else(|| DataFusionError::Internal(format!("no catalog `{default}`")))?;
    let schema = MemorySchemaProvider::new();
    let tables = catalog
        .tables
        .iter()
        .map(|table| Listed {
            name: table.name.clone(),
            format: format_name(table.format),
            location: table.location.clone(),
        })
        .collect();
    datafusion::catalog::SchemaProvider::register_table(
        &schema,
        "tables".into(),
        Arc::new(SystemTables { tables, versions }),
    )?;
    target.register_schema(SCHEMA, Arc::new(schema))?;
    Ok(())
}

/// The name `format = "..."` takes.
fn format_name(format: TableFormat) -> &'static str {
    match format {
        TableFormat::Parquet => "parquet",
        TableFormat::Csv => "csv",
        TableFormat::Ndjson => "ndjson",
        TableFormat::Orc => "orc",
        TableFormat::Delta => "delta",
        TableFormat::Iceberg => "iceberg",
    }
}

/// One table as configured.
#[derive(Debug)]
struct Listed {
    name: String,
    format: &'static str,
    location: String,
}

/// The rows of `system.tables`, made when a query scans it.
struct SystemTables {
    tables: Vec<Listed>,
    versions: Arc<CatalogVersions>,
}

impl fmt::Debug for SystemTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemTables")
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table_name", DataType::Utf8, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        // A Delta table's latest commit, an Iceberg table's current snapshot; for files, a hash of their listing (it changes when a
        // file is added, removed or rewritten); null until the table was first read.
        Field::new("version", DataType::UInt64, true),
        Field::new("version_of", DataType::Utf8, false),
    ]))
}

#[async_trait]
impl TableProvider for SystemTables {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let column = |value: fn(&Listed) -> &str| {
            Arc::new(StringArray::from_iter_values(self.tables.iter().map(value)))
        };
        let versions: UInt64Array = self
            .tables
            .iter()
            .map(|table| self.versions.version(&table.name))
            .collect();
        let version_of = |table: &Listed| match table.format {
            "delta" => "commit",
            "iceberg" => "snapshot",
            _ => "file listing",
        };
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                column(|table| &table.name),
                column(|table| table.format),
                column(|table| &table.location),
                Arc::new(versions),
                column(version_of),
            ],
        )?;
        let source = MemorySourceConfig::try_new(&[vec![batch]], schema(), projection.cloned())?;
        Ok(datafusion::datasource::source::DataSourceExec::from_data_source(source))
    }
}
