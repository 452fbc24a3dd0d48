//! An Iceberg table's metadata file (format v1 and v2), as much of it as reading a snapshot
//! needs: the schemas, the snapshots with their manifest lists, and the snapshot log. The
//! table's schema becomes an Arrow schema; what a Parquet scan by column name would read
//! wrongly (a column renamed, or a name reused for a new column, since older files hold the
//! old name) is refused by name.

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::common::{DataFusionError, Result};
use serde::Deserialize;
use std::collections::HashMap;

/// The fields of a metadata file Flotilla reads (the others are ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct TableMetadata {
    pub(super) format_version: u8,
    /// v2, and v1 writers that keep several schemas.
    #[serde(default)]
    pub(super) schemas: Vec<IcebergSchema>,
    /// v1's single schema.
    #[serde(default)]
    pub(super) schema: Option<IcebergSchema>,
    #[serde(default)]
    pub(super) current_schema_id: Option<i32>,
    /// None or -1 (v1): the table has no snapshot yet.
    #[serde(default)]
    pub(super) current_snapshot_id: Option<i64>,
    #[serde(default)]
    pub(super) snapshots: Vec<Snapshot>,
    /// When each snapshot became the current one, oldest first.
    #[serde(default)]
    pub(super) snapshot_log: Vec<LogEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct IcebergSchema {
    #[serde(default)]
    pub(super) schema_id: i32,
    pub(super) fields: Vec<IcebergField>,
}

#[derive(Debug, Deserialize)]
pub(super) struct IcebergField {
    pub(super) id: i32,
    pub(super) name: String,
    pub(super) required: bool,
    #[serde(rename = "type")]
    pub(super) kind: serde_json::Value,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Snapshot {
    pub(super) snapshot_id: i64,
    #[serde(default)]
    pub(super) parent_snapshot_id: Option<i64>,
    pub(super) timestamp_ms: i64,
    /// The Avro manifest list (v2 always; v1 may list `manifests` instead).
    #[serde(default)]
    pub(super) manifest_list: Option<String>,
    #[serde(default)]
    pub(super) manifests: Vec<String>,
    #[serde(default)]
    pub(super) summary: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct LogEntry {
    pub(super) timestamp_ms: i64,
    pub(super) snapshot_id: i64,
}

impl TableMetadata {
    /// Parses a metadata file's text; `name` is the table's, for messages.
    pub(super) fn parse(name: &str, text: &[u8]) -> Result<Self> {
        let metadata: Self = serde_json::from_slice(text).map_err(|error| {
            DataFusionError::Plan(format!(
                "Iceberg table `{name}`: its metadata file cannot be read: {error}"
            ))
        })?;
        if !matches!(metadata.format_version, 1 | 2) {
            return Err(DataFusionError::Plan(format!(
                "Iceberg table `{name}` is format v{}: Flotilla reads v1 and v2",
                metadata.format_version
            )));
        }
        Ok(metadata)
    }

    /// The current snapshot, if the table has one.
    pub(super) fn current(&self) -> Option<&Snapshot> {
        let id = self.current_snapshot_id.filter(|id| *id >= 0)?;
        self.snapshot(id)
    }

    pub(super) fn snapshot(&self, id: i64) -> Option<&Snapshot> {
        self.snapshots
            .iter()
            .find(|snapshot| snapshot.snapshot_id == id)
    }

    /// The snapshot that was current at `time_ms` (the last made current at or before it).
    pub(super) fn current_at(&self, time_ms: i64) -> Option<&Snapshot> {
        let id = self
            .snapshot_log
            .iter()
            .filter(|entry| entry.timestamp_ms <= time_ms)
            .max_by_key(|entry| entry.timestamp_ms)
            .map(|entry| entry.snapshot_id)?;
        self.snapshot(id)
    }

    /// The table's current schema as Arrow's, with each column's field id; refuses column
    /// renames and reused names.
    pub(super) fn arrow_schema(&self, name: &str) -> Result<(Schema, Vec<i32>)> {
        let schemas: Vec<&IcebergSchema> = self.schemas.iter().chain(&self.schema).collect();
        let current = match self.current_schema_id {
            Some(id) => schemas.iter().find(|schema| schema.schema_id == id),
            None => schemas.last(),
        }
        .ok_or_else(|| {
            DataFusionError::Plan(format!("Iceberg table `{name}`: no current schema"))
        })?;
        // Data files are read by column name: every schema must give each id one name and
        // each name one id, or older files would be read under the wrong column.
        let mut names: HashMap<i32, &str> = HashMap::new();
        let mut ids: HashMap<&str, i32> = HashMap::new();
        for field in schemas.iter().flat_map(|schema| &schema.fields) {
            let renamed = names
                .insert(field.id, &field.name)
                .is_some_and(|old| old != field.name);
            let reused = ids
                .insert(&field.name, field.id)
                .is_some_and(|old| old != field.id);
            if renamed || reused {
                return Err(DataFusionError::Plan(format!(
                    "Iceberg table `{name}` renamed or replaced its column `{}`, which \
                     Flotilla does not read yet (it reads files by column name)",
                    field.name
                )));
            }
        }
        let fields = current
            .fields
            .iter()
            .map(|field| {
                let data_type = arrow_type(&field.kind).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "Iceberg table `{name}`: column `{}` is of type {}, which Flotilla \
                         does not read yet",
                        field.name, field.kind
                    ))
                })?;
                Ok(Field::new(&field.name, data_type, !field.required))
            })
            .collect::<Result<Vec<_>>>()?;
        let ids = current.fields.iter().map(|field| field.id).collect();
        Ok((Schema::new(fields), ids))
    }
}

/// The Arrow type of an Iceberg primitive type; None for nested and unknown types.
fn arrow_type(kind: &serde_json::Value) -> Option<DataType> {
    let name = kind.as_str()?;
    let utc = || Some("+00:00".into());
    Some(match name {
        "boolean" => DataType::Boolean,
        "int" => DataType::Int32,
        "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Microsecond),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, utc()),
        "timestamp_ns" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        "timestamptz_ns" => DataType::Timestamp(TimeUnit::Nanosecond, utc()),
        "string" => DataType::Utf8,
        "uuid" => DataType::FixedSizeBinary(16),
        "binary" => DataType::Binary,
        _ => {
            if let Some(length) = name
                .strip_prefix("fixed[")
                .and_then(|rest| rest.strip_suffix(']'))
            {
                return Some(DataType::FixedSizeBinary(length.trim().parse().ok()?));
            }
            let (precision, scale) = name
                .strip_prefix("decimal(")?
                .strip_suffix(')')?
                .split_once(',')?;
            DataType::Decimal128(precision.trim().parse().ok()?, scale.trim().parse().ok()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"{
      "format-version": 2, "table-uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1",
      "location": "file:///warehouse/t", "last-sequence-number": 2,
      "last-updated-ms": 1700000002000, "last-column-id": 3, "current-schema-id": 1,
      "schemas": [
        {"type": "struct", "schema-id": 0, "fields": [
          {"id": 1, "name": "id", "required": true, "type": "long"},
          {"id": 2, "name": "price", "required": false, "type": "decimal(15, 2)"}]},
        {"type": "struct", "schema-id": 1, "fields": [
          {"id": 1, "name": "id", "required": true, "type": "long"},
          {"id": 2, "name": "price", "required": false, "type": "decimal(15, 2)"},
          {"id": 3, "name": "day", "required": false, "type": "date"}]}],
      "default-spec-id": 0, "partition-specs": [{"spec-id": 0, "fields": []}],
      "current-snapshot-id": 22,
      "snapshots": [
        {"snapshot-id": 11, "timestamp-ms": 1700000001000, "manifest-list": "m1.avro",
         "summary": {"operation": "append"}},
        {"snapshot-id": 22, "parent-snapshot-id": 11, "timestamp-ms": 1700000002000,
         "manifest-list": "m2.avro", "summary": {"operation": "overwrite"}}],
      "snapshot-log": [
        {"timestamp-ms": 1700000001000, "snapshot-id": 11},
        {"timestamp-ms": 1700000002000, "snapshot-id": 22}]
    }"#;

    #[test]
    fn the_current_schema_and_snapshots_are_read() {
        let metadata = TableMetadata::parse("t", V2.as_bytes()).unwrap();
        let (schema, ids) = metadata.arrow_schema("t").unwrap();
        assert_eq!(ids, [1, 2, 3]);
        let columns: Vec<(&str, &DataType, bool)> = schema
            .fields()
            .iter()
            .map(|field| {
                (
                    field.name().as_str(),
                    field.data_type(),
                    field.is_nullable(),
                )
            })
            .collect();
        assert_eq!(
            columns,
            [
                ("id", &DataType::Int64, false),
                ("price", &DataType::Decimal128(15, 2), true),
                ("day", &DataType::Date32, true),
            ]
        );
        assert_eq!(metadata.current().unwrap().snapshot_id, 22);
        assert_eq!(
            metadata.current_at(1_700_000_001_500).unwrap().snapshot_id,
            11
        );
        assert!(metadata.current_at(1_699_999_999_999).is_none());
    }

    #[test]
    fn renamed_columns_nested_types_and_unknown_versions_are_refused_by_name() {
        let renamed = V2.replacen(r#""id": 3, "name": "day""#, r#""id": 2, "name": "cost""#, 1);
        let error = TableMetadata::parse("t", renamed.as_bytes())
            .unwrap()
            .arrow_schema("t")
            .unwrap_err();
        assert!(
            error.to_string().contains("renamed or replaced its column"),
            "{error}"
        );

        let nested = V2.replace(
            r#""type": "date""#,
            r#""type": {"type": "list", "element-id": 4, "element": "int", "element-required": false}"#,
        );
        let error = TableMetadata::parse("t", nested.as_bytes())
            .unwrap()
            .arrow_schema("t")
            .unwrap_err();
        assert!(
            error.to_string().contains("column `day` is of type"),
            "{error}"
        );

        let v3 = V2.replace(r#""format-version": 2"#, r#""format-version": 3"#);
        let error = TableMetadata::parse("t", v3.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("format v3"), "{error}");
    }
}
