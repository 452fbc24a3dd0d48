//! Iceberg v2 tables written by pyiceberg (its SQL catalog on SQLite): TPC-H (orders with a
//! hidden identity partition) equals in-process DataFusion on the same rows as Parquet; a
//! table appended to, deleted from (copy-on-write) and overwritten reads each snapshot as
//! pyiceberg reads it, by snapshot id and by time, lists its snapshots, and follows its newest
//! metadata file.

use crate::common::{Federation, FederationOptions, query_json};
use crate::tables::{
    assert_samples_match, catalog, count_and_sum, python, read_answers, script, tpch_as,
};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_as_iceberg_tables_matches_in_process_datafusion_on_parquet() {
    let iceberg = tpch_as("iceberg");
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(catalog(&iceberg, "iceberg")),
        ..FederationOptions::default()
    });
    assert_samples_match(&federation, "Iceberg").await;
    // The manifests' column bounds prune files: orders' `F` partition file is the only one
    // whose o_orderstatus range holds 'F'.
    let explained = query_json(
        &federation.url(),
        "EXPLAIN SELECT count(*) FROM orders WHERE o_orderstatus = 'F'",
        &[],
    )
    .await;
    let plan = String::from_utf8_lossy(&explained.body).to_string();
    assert!(plan.contains("o_orderstatus=F/"), "{plan}");
    assert!(
        !plan.contains("o_orderstatus=O/") && !plan.contains("o_orderstatus=P/"),
        "{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iceberg_table_reads_each_snapshot_as_pyiceberg_does() {
    let dir = tempfile::tempdir().unwrap();
    let answers = dir.path().join("answers.json");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(script())
            .args(["iceberg-changes", "--out"])
            .arg(dir.path())
            .arg("--answers")
            .arg(&answers)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("write.py iceberg-changes ran over 120 s")
    .unwrap();
    assert!(
        output.status.success(),
        "write.py iceberg-changes failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let snapshots = read_answers(&answers);
    assert!(snapshots.len() >= 6, "{} snapshots", snapshots.len());
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(format!(
            "[[catalog.tables]]\nname = \"events\"\nformat = \"iceberg\"\nlocation = \"{}\"\n",
            dir.path().join("events").display()
        )),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let sql = "SELECT count(*) AS n, coalesce(sum(x), 0) AS s FROM events";
    let last = snapshots.last().unwrap();
    assert_eq!(count_and_sum(&url, sql).await, Ok(last.answer));

    // Every snapshot by its id, and by the time it was made current.
    for snapshot in &snapshots {
        let by_id = format!("{sql}@v{}", snapshot.version);
        assert_eq!(
            count_and_sum(&url, &by_id).await,
            Ok(snapshot.answer),
            "{by_id}"
        );
        let time = chrono::DateTime::from_timestamp_millis(snapshot.timestamp_ms).unwrap();
        let by_time = format!(
            "SELECT count(*) AS n, coalesce(sum(x), 0) AS s FROM \"events@{}\"",
            time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        // One commit may make several snapshots at once (an overwrite deletes, then appends):
        // the time reads the last of them.
        let current_then = snapshots
            .iter()
            .rfind(|other| other.timestamp_ms == snapshot.timestamp_ms)
            .unwrap();
        assert_eq!(
            count_and_sum(&url, &by_time).await,
            Ok(current_then.answer),
            "{by_time}"
        );
    }
    let missing = query_json(&url, "SELECT count(*) FROM events@v1", &[]).await;
    let body = String::from_utf8_lossy(&missing.body).to_string();
    assert_eq!(missing.status, 400, "{body}");
    assert!(body.contains("has no version 1"), "{body}");

    // The history lists every snapshot, newest first; system.tables names the current one.
    let history = query_json(
        &url,
        "SELECT version, operation FROM \"events$history\"",
        &[],
    )
    .await
    .json();
    let listed: Vec<u64> = history
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
        .iter()
        .map(|row| row["version"].as_u64().unwrap())
        .collect();
    let mut expected: Vec<u64> = snapshots.iter().map(|snapshot| snapshot.version).collect();
    expected.reverse();
    assert_eq!(listed, expected);
    let table = query_json(
        &url,
        "SELECT format, version, version_of FROM system.tables",
        &[],
    )
    .await
    .json();
    assert_eq!(table[0]["format"], "iceberg", "{table}");
    assert_eq!(table[0]["version"], last.version, "{table}");
    assert_eq!(table[0]["version_of"], "snapshot", "{table}");
}
