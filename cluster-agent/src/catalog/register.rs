//! Registering a table in a session: a listing table over its files (Parquet, CSV, NDJSON,
//! ORC), or a Delta or Iceberg table served by the lake schema.

use super::{TableConfig, TableFormat, delta, iceberg, lake, orc};
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use std::sync::Arc;

/// How a table's files are listed: where, which extension, which partition columns.
pub(super) struct Listing {
    location: String,
    extension: String,
    partitions: Vec<(String, DataType)>,
}

impl TableConfig {
    /// How its files are listed; an error is the config's.
    pub(super) fn listing(&self) -> Result<Listing, String> {
        Ok(Listing {
            location: self.listing_location()?,
            extension: self.file_extension()?,
            partitions: self.partition_columns()?,
        })
    }

    /// Registers the table in `ctx`, which reads its schema from its files: an error (one line,
    /// naming the location) is the store's or the files'.
    pub async fn register(&self, ctx: &SessionContext) -> Result<(), String> {
        let Listing {
            location,
            extension,
            partitions,
        } = self.listing()?;
        let name = &self.name;
        let registered = match self.format {
            TableFormat::Parquet => {
                let options = ParquetReadOptions::default()
                    .file_extension(&extension)
                    .table_partition_cols(partitions);
                ctx.register_parquet(name, &location, options).await
            }
            TableFormat::Csv => {
                let options = CsvReadOptions::new()
                    .has_header(self.has_header)
                    .file_extension(&extension)
                    .table_partition_cols(partitions);
                ctx.register_csv(name, &location, options).await
            }
            TableFormat::Ndjson => {
                let options = JsonReadOptions::default()
                    .file_extension(&extension)
                    .table_partition_cols(partitions);
                ctx.register_json(name, &location, options).await
            }
            TableFormat::Orc => {
                let options = ListingOptions::new(Arc::new(orc::OrcTables))
                    .with_file_extension(&extension)
                    .with_table_partition_cols(partitions);
                ctx.register_listing_table(name, &location, options, None, None)
                    .await
            }
            TableFormat::Delta => {
                match delta::DeltaLog::open(name, &location, &ctx.runtime_env()).await {
                    Ok(log) => lake::LakeSchema::of(ctx).map(|lake| lake.add(name, Arc::new(log))),
                    Err(error) => Err(error),
                }
            }
            TableFormat::Iceberg => {
                match iceberg::IcebergTable::open(name, &location, &ctx.runtime_env()).await {
                    Ok(table) => {
                        lake::LakeSchema::of(ctx).map(|lake| lake.add(name, Arc::new(table)))
                    }
                    Err(error) => Err(error),
                }
            }
        };
        // One line: object store errors repeat their sources in their own text.
        registered.map_err(|error| {
            let reason = crate::error::root_message(&error);
            format!("table `{name}` at {location}: {reason}")
        })
    }
}
