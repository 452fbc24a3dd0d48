//! The TPC-H tables in another format: written once per test run by `write.py`, and every
//! sample query on them checked against in-process DataFusion on the Parquet files.

use crate::common::compare::assert_same;
use crate::common::query_json;
use crate::common::{Federation, is_ordered, post_sql, reference_context, samples, tpch_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The Python of the project's tool venv (pyarrow and deltalake are installed there by
/// `scripts/install-lake-writers`).
pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/venv/bin/python")
}

/// The writer, `write.py`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lake/write.py")
}

/// Returns the directory holding the shared TPC-H tables written as `format` (one
/// subdirectory per table), writing them on first use.
pub fn tpch_as(format: &str) -> PathBuf {
    static WRITING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = WRITING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let parquet = tpch_dir();
    let dir = parquet.with_file_name(format!(
        "{}-{format}",
        parquet.file_name().unwrap().to_string_lossy()
    ));
    if dir.join("_DONE").exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let output = std::process::Command::new(python())
        .arg(script())
        .arg(format)
        .arg("--parquet")
        .arg(&parquet)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "{}: {error}; run scripts/install-lake-writers",
                python().display()
            )
        });
    assert!(
        output.status.success(),
        "write.py {format} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

/// The `[catalog]` TOML naming each TPC-H table under `dir` as `format`.
pub fn catalog(dir: &Path, format: &str) -> String {
    cluster_agent::TPCH_TABLES
        .iter()
        .map(|table| {
            format!(
                "[[catalog.tables]]\nname = \"{table}\"\nformat = \"{format}\"\nlocation = \"{}\"\n",
                dir.join(table).display()
            )
        })
        .collect()
}

/// Every sample query (the 22 TPC-H queries and the short ones) through `federation`, over HTTP
/// as Arrow, equals in-process DataFusion on the Parquet files of the same rows.
pub async fn assert_samples_match(federation: &Federation, format: &str) {
    let url = federation.url();
    let reference = reference_context().await;
    let mut checked = 0;
    for (name, sql) in samples() {
        let expected = reference.sql(&sql).await.unwrap().collect().await.unwrap();
        let response = post_sql(&url, &sql, "application/vnd.apache.arrow.stream").await;
        if response.status != 200 {
            federation.dump_logs();
            panic!(
                "{name} on {format}: HTTP {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        let label = format!("{name} on {format}");
        assert_same(&label, &response.arrow(), &expected, is_ordered(&sql));
        checked += 1;
    }
    assert_eq!(checked, 22 + 7);
}

/// One committed version of a changing table, as its format's own Python package read it.
pub struct Committed {
    pub version: u64,
    pub answer: (i64, i64),
    pub timestamp_ms: i64,
}

/// `count(*)` and `sum(x)` of `events` as the gateway answers `sql`.
pub async fn count_and_sum(url: &str, sql: &str) -> Result<(i64, i64), String> {
    let response = query_json(url, sql, &[]).await;
    if response.status != 200 {
        return Err(format!(
            "HTTP {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ));
    }
    let row = &response.json()[0];
    Ok((
        row["n"].as_i64().unwrap_or(-1),
        row["s"].as_i64().unwrap_or(-1),
    ))
}

/// The versions `write.py changes` (or `iceberg-changes`) committed, with their answers.
pub fn read_answers(path: &Path) -> Vec<Committed> {
    let answers: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    answers
        .as_array()
        .unwrap()
        .iter()
        .map(|version| Committed {
            version: version["version"].as_u64().unwrap(),
            answer: (
                version["answer"][0].as_i64().unwrap(),
                version["answer"][1].as_i64().unwrap(),
            ),
            timestamp_ms: version["timestamp_ms"].as_i64().unwrap(),
        })
        .collect()
}
