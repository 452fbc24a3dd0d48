//! Bounded fuzzing of the SQL entry path: SQL-shaped, arbitrary and byte-garbage text through
//! [`Planner::prepare`] and [`Planner::plan`], as a shard runs them. No input may panic; every
//! refusal carries a message.
//!
//! The budget is `FLOTILLA_FUZZ_SECONDS` (default 3 s, and 45 s when `CI` is set).

use super::planner::Planner;
use crate::catalog::{CatalogConfig, TableConfig, TableFormat};
use crate::config::JobManagerConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a fuzz target runs.
pub(crate) fn fuzz_budget() -> Duration {
    let seconds = std::env::var("FLOTILLA_FUZZ_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(if std::env::var_os("CI").is_some() {
            60
        } else {
            3
        });
    Duration::from_secs(seconds)
}

/// Pieces SQL is made of, with the hostile ones among them.
const PIECES: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "JOIN",
    "LEFT JOIN",
    "ON",
    "UNION ALL",
    "WITH",
    "AS",
    "LIMIT",
    "OFFSET",
    "DISTINCT",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "IN",
    "BETWEEN",
    "LIKE",
    "IS NULL",
    "EXPLAIN",
    "VALUES",
    "t",
    "t.a",
    "t.b",
    "a",
    "b",
    "x",
    "(",
    ")",
    ",",
    "*",
    "+",
    "-",
    "/",
    "%",
    "=",
    "<",
    ">",
    "<>",
    "||",
    "AND",
    "OR",
    "NOT",
    "1",
    "0",
    "-1",
    "1.5",
    "1e309",
    "9223372036854775808",
    "'x'",
    "''",
    "NULL",
    "TRUE",
    "count(*)",
    "sum(a)",
    "avg(a)",
    "min(b)",
    "array_agg(b)",
    "CAST(a AS INT)",
    "CAST(b AS DATE)",
    "row_number() OVER (ORDER BY a)",
    "a / 0",
    "CREATE TABLE",
    "DROP",
    "INSERT INTO",
    "DELETE",
    "UPDATE",
    "COPY",
    "TO",
    "SET",
    "CREATE EXTERNAL TABLE",
    "read_csv('/etc/passwd')",
    "'/etc/passwd'",
    "generate_series(1, 1000000000)",
    ";",
    "\0",
    "é",
    "--",
    "/*",
    "*/",
    "\"",
    "`",
    "[",
    "]",
    "::",
    "$1",
    "?",
    ".",
];

/// Expressions over `t(a, b)`, nested: most are valid SQL, so the planner gets past parsing.
fn expression() -> impl Strategy<Value = String> {
    let leaf = proptest::sample::select(
        &[
            "a",
            "b",
            "1",
            "0",
            "-7",
            "2.5",
            "'x'",
            "NULL",
            "TRUE",
            "a / 0",
            "b || 'y'",
            "CAST(a AS VARCHAR)",
            "CAST(b AS INT)",
            "1e308 * 10",
        ][..],
    )
    .prop_map(str::to_string);
    leaf.prop_recursive(6, 48, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                proptest::sample::select(
                    &["+", "-", "*", "/", "%", "=", "<", "AND", "OR", "||"][..]
                ),
                inner.clone()
            )
                .prop_map(|(left, op, right)| format!("({left} {op} {right})")),
            (
                proptest::sample::select(
                    &[
                        "abs", "upper", "length", "coalesce", "sum", "count", "max", "sqrt", "ln"
                    ][..]
                ),
                inner.clone()
            )
                .prop_map(|(function, argument)| format!("{function}({argument})")),
            (inner.clone(), inner.clone(), inner).prop_map(|(when, then, other)| format!(
                "CASE WHEN {when} THEN {then} ELSE {other} END"
            )),
        ]
    })
}

/// Queries over `t`: projections, filters, grouping, ordering, limits, self-joins.
fn query() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(expression(), 1..4),
        proptest::option::of(expression()),
        proptest::option::of(expression()),
        any::<bool>(),
        proptest::option::of(0u64..5),
    )
        .prop_map(|(select, filter, group, join, limit)| {
            let mut sql = format!("SELECT {} FROM t", select.join(", "));
            if join {
                sql.push_str(" JOIN t AS u ON t.a = u.a");
            }
            if let Some(filter) = filter {
                sql.push_str(&format!(" WHERE {filter}"));
            }
            if let Some(group) = group {
                sql.push_str(&format!(" GROUP BY {group}"));
            }
            if let Some(limit) = limit {
                sql.push_str(&format!(" ORDER BY 1 LIMIT {limit}"));
            }
            sql
        })
}

fn sql_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => query(),
        2 => proptest::collection::vec(proptest::sample::select(PIECES), 0..48)
            .prop_map(|pieces| pieces.join(" ")),
        1 => any::<String>(),
        1 => proptest::collection::vec(any::<u8>(), 0..256)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ]
}

#[test]
fn the_sql_entry_path_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.csv");
    std::fs::write(&file, "a,b\n1,x\n2,y\n3,z\n").unwrap();
    let catalog = CatalogConfig {
        tables: vec![TableConfig::new(
            "t",
            TableFormat::Csv,
            file.display().to_string(),
        )],
        ..CatalogConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let planner = runtime
        .block_on(Planner::new(
            &catalog,
            &JobManagerConfig::default(),
            64 << 20,
        ))
        .unwrap();
    let workers = vec!["http://127.0.0.1:1".to_string()];
    let deadline = Instant::now() + fuzz_budget();
    let outcomes: Mutex<BTreeMap<&'static str, u64>> = Mutex::default();
    // One example of each refusal, for the log.
    let examples: Mutex<BTreeMap<&'static str, String>> = Mutex::default();
    let mut result = Ok(());
    // Rounds of fresh random cases until the budget is spent.
    while result.is_ok() && Instant::now() < deadline {
        let mut runner = TestRunner::new(Config {
            cases: 2_000,
            failure_persistence: None,
            ..Config::default()
        });
        result = runner.run(&sql_like(), |sql| {
            if Instant::now() > deadline {
                return Ok(());
            }
            let answer = runtime.block_on(async {
                let logical = planner.prepare(&sql).await?;
                planner.plan(&logical, &workers).await
            });
            let outcome = match answer {
                Ok(planned) => {
                    prop_assert!(!planned.plan.is_empty());
                    "planned"
                }
                Err(error) => {
                    prop_assert!(!error.to_string().is_empty(), "an error without a message");
                    prop_assert!(
                        error.code() != flotilla_protocol::ErrorCode::Internal,
                        "{sql:?} → internal: {error}"
                    );
                    let code = error.code().as_str();
                    examples
                        .lock()
                        .unwrap()
                        .entry(code)
                        .or_insert_with(|| format!("{sql:?} → {error}"));
                    code
                }
            };
            *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
            Ok(())
        });
    }
    let outcomes = outcomes.into_inner().unwrap();
    println!("SQL fuzz outcomes: {outcomes:?}");
    for (code, example) in examples.into_inner().unwrap() {
        println!(
            "  {code}: {}",
            example.chars().take(300).collect::<String>()
        );
    }
    if let Err(failure) = result {
        panic!("the SQL entry path failed on an input: {failure}");
    }
    let total: u64 = outcomes.values().sum();
    assert!(total > 0, "no input was tried");
    assert!(
        outcomes.contains_key("planned"),
        "some inputs plan: {outcomes:?}"
    );
}
