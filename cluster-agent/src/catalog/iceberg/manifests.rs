//! A snapshot's data files, from its Avro manifest list and manifests (read with
//! `apache-avro`): each live file (added or existing, not deleted) with its size, row count and
//! the column bounds the manifest keeps. Delete files (v2 merge-on-read) are refused by name:
//! a Parquet scan of the data files alone would count deleted rows.

use apache_avro::types::Value;
use datafusion::common::{DataFusionError, Result};
use std::collections::HashMap;

/// A manifest entry's status: deleted entries are not part of the snapshot.
const DELETED: i64 = 2;

/// A data file of a snapshot, as its manifest describes it.
#[derive(Debug, PartialEq)]
pub(super) struct DataFile {
    /// The file's URI (`file:///...`, `s3://bucket/...`) or absolute path.
    pub(super) path: String,
    pub(super) size: u64,
    pub(super) rows: u64,
    /// Per field id: null count, lower and upper bound (Iceberg's single-value encoding).
    pub(super) nulls: HashMap<i32, u64>,
    pub(super) lower: HashMap<i32, Vec<u8>>,
    pub(super) upper: HashMap<i32, Vec<u8>>,
}

/// The paths of the manifests a manifest list names; refuses delete manifests that hold files.
pub(super) fn manifests_of_list(name: &str, list: &[u8]) -> Result<Vec<String>> {
    let mut manifests = Vec::new();
    for record in records(name, list)? {
        let path = string(&record, "manifest_path")
            .ok_or_else(|| malformed(name, "a manifest without a path"))?;
        // v1 lists have no `content`: every manifest holds data files.
        if long(&record, "content").unwrap_or(0) != 0 {
            let live = ["added_files_count", "existing_files_count"]
                .iter()
                .map(|count| long(&record, count).unwrap_or(1))
                .sum::<i64>();
            if live > 0 {
                return Err(refuse_deletes(name));
            }
            continue;
        }
        manifests.push(path.to_string());
    }
    Ok(manifests)
}

/// The live data files of one manifest.
pub(super) fn data_files(name: &str, manifest: &[u8]) -> Result<Vec<DataFile>> {
    let mut files = Vec::new();
    for entry in records(name, manifest)? {
        if long(&entry, "status") == Some(DELETED) {
            continue;
        }
        let file = field(&entry, "data_file")
            .ok_or_else(|| malformed(name, "a manifest entry without data_file"))?;
        if long(file, "content").unwrap_or(0) != 0 {
            return Err(refuse_deletes(name));
        }
        let format = string(file, "file_format").unwrap_or("PARQUET");
        if !format.eq_ignore_ascii_case("parquet") {
            return Err(DataFusionError::Plan(format!(
                "Iceberg table `{name}` has {format} data files: Flotilla reads Parquet ones"
            )));
        }
        let path = string(file, "file_path")
            .ok_or_else(|| malformed(name, "a data file without a path"))?;
        let count = |key: &str| long(file, key).and_then(|value| u64::try_from(value).ok());
        files.push(DataFile {
            path: path.to_string(),
            size: count("file_size_in_bytes").unwrap_or(0),
            rows: count("record_count").unwrap_or(0),
            nulls: id_map(file, "null_value_counts", |value| match value {
                Value::Long(count) => u64::try_from(*count).ok(),
                Value::Int(count) => u64::try_from(*count).ok(),
                _ => None,
            }),
            lower: id_map(file, "lower_bounds", bytes),
            upper: id_map(file, "upper_bounds", bytes),
        });
    }
    Ok(files)
}

/// The records of an Avro object container file.
fn records(name: &str, file: &[u8]) -> Result<Vec<Value>> {
    let reader = apache_avro::Reader::new(file)
        .map_err(|error| malformed(name, &format!("an unreadable Avro file ({error})")))?;
    reader
        .map(|record| {
            record.map_err(|error| malformed(name, &format!("an unreadable Avro record ({error})")))
        })
        .collect()
}

/// A record's field, through the union an optional field is.
fn field<'a>(record: &'a Value, key: &str) -> Option<&'a Value> {
    let Value::Record(fields) = record else {
        return None;
    };
    let value = fields
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value)?;
    match value {
        Value::Union(_, inner) => Some(inner),
        value => Some(value),
    }
}

fn long(record: &Value, key: &str) -> Option<i64> {
    match field(record, key)? {
        Value::Long(value) => Some(*value),
        Value::Int(value) => Some(i64::from(*value)),
        _ => None,
    }
}

fn string<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    match field(record, key)? {
        Value::String(value) => Some(value),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Bytes(bytes) | Value::Fixed(_, bytes) => Some(bytes.clone()),
        _ => None,
    }
}

/// An Iceberg map keyed by field id, which Avro holds as an array of `{key, value}` records.
fn id_map<T>(record: &Value, key: &str, read: impl Fn(&Value) -> Option<T>) -> HashMap<i32, T> {
    let Some(Value::Array(pairs)) = field(record, key) else {
        return HashMap::new();
    };
    pairs
        .iter()
        .filter_map(|pair| {
            let id = match field(pair, "key")? {
                Value::Int(id) => *id,
                _ => return None,
            };
            Some((id, read(field(pair, "value")?)?))
        })
        .collect()
}

fn malformed(name: &str, what: &str) -> DataFusionError {
    DataFusionError::Plan(format!("Iceberg table `{name}`: {what} in its manifests"))
}

fn refuse_deletes(name: &str) -> DataFusionError {
    DataFusionError::Plan(format!(
        "Iceberg table `{name}` has delete files (merge-on-read deletes or updates), which \
         Flotilla does not read yet"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{Schema, Writer};

    const LIST: &str = r#"{"type": "record", "name": "manifest_file", "fields": [
        {"name": "manifest_path", "type": "string"},
        {"name": "content", "type": "int"},
        {"name": "added_files_count", "type": ["null", "int"]},
        {"name": "existing_files_count", "type": ["null", "int"]}]}"#;

    const MANIFEST: &str = r#"{"type": "record", "name": "manifest_entry", "fields": [
        {"name": "status", "type": "int"},
        {"name": "data_file", "type": {"type": "record", "name": "r2", "fields": [
          {"name": "content", "type": "int"},
          {"name": "file_path", "type": "string"},
          {"name": "file_format", "type": "string"},
          {"name": "record_count", "type": "long"},
          {"name": "file_size_in_bytes", "type": "long"},
          {"name": "lower_bounds", "type": ["null", {"type": "array", "items":
            {"type": "record", "name": "k126_v127", "fields": [
              {"name": "key", "type": "int"}, {"name": "value", "type": "bytes"}]}}]}]}}]}"#;

    fn avro(schema: &str, records: Vec<Value>) -> Vec<u8> {
        let schema = Schema::parse_str(schema).unwrap();
        let mut writer = Writer::new(&schema, Vec::new()).unwrap();
        for record in records {
            writer.append_value_ref(&record).unwrap();
        }
        writer.into_inner().unwrap()
    }

    fn manifest(path: &str, content: i32, added: i32) -> Value {
        Value::Record(vec![
            ("manifest_path".into(), Value::String(path.into())),
            ("content".into(), Value::Int(content)),
            (
                "added_files_count".into(),
                Value::Union(1, Box::new(Value::Int(added))),
            ),
            (
                "existing_files_count".into(),
                Value::Union(1, Box::new(Value::Int(0))),
            ),
        ])
    }

    fn entry(status: i32, content: i32, path: &str) -> Value {
        let bound = Value::Record(vec![
            ("key".into(), Value::Int(1)),
            ("value".into(), Value::Bytes(7i32.to_le_bytes().to_vec())),
        ]);
        Value::Record(vec![
            ("status".into(), Value::Int(status)),
            (
                "data_file".into(),
                Value::Record(vec![
                    ("content".into(), Value::Int(content)),
                    ("file_path".into(), Value::String(path.into())),
                    ("file_format".into(), Value::String("PARQUET".into())),
                    ("record_count".into(), Value::Long(3)),
                    ("file_size_in_bytes".into(), Value::Long(100)),
                    (
                        "lower_bounds".into(),
                        Value::Union(1, Box::new(Value::Array(vec![bound]))),
                    ),
                ]),
            ),
        ])
    }

    #[test]
    fn live_data_files_are_listed_and_deleted_entries_skipped() {
        let list = avro(
            LIST,
            vec![manifest("m0.avro", 0, 1), manifest("d0.avro", 1, 0)],
        );
        assert_eq!(manifests_of_list("t", &list).unwrap(), ["m0.avro"]);
        let files = data_files(
            "t",
            &avro(
                MANIFEST,
                vec![entry(1, 0, "a.parquet"), entry(2, 0, "gone.parquet")],
            ),
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].path.as_str(), files[0].rows, files[0].size),
            ("a.parquet", 3, 100)
        );
        assert_eq!(files[0].lower[&1], 7i32.to_le_bytes());
    }

    #[test]
    fn delete_files_are_refused_by_name() {
        let list = avro(
            LIST,
            vec![manifest("m0.avro", 0, 1), manifest("d0.avro", 1, 2)],
        );
        let error = manifests_of_list("t", &list).unwrap_err();
        assert!(error.to_string().contains("delete files"), "{error}");
        let manifest = avro(MANIFEST, vec![entry(1, 1, "deletes.parquet")]);
        let error = data_files("t", &manifest).unwrap_err();
        assert!(error.to_string().contains("delete files"), "{error}");
    }
}
