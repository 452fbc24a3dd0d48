//! Flight SQL on the gateway, through clients no one here wrote: ADBC's Flight SQL driver (its
//! Python DBAPI) and `pyarrow.flight`, installed by `scripts/install-flight-clients`. The
//! clients (`client.py`) write what they saw; every answer is checked here against in-process
//! DataFusion over the same files.

#[path = "../common/mod.rs"]
mod common;
mod gateways;
mod limits;
mod python;

use common::compare::assert_same;
use common::{Federation, FederationOptions};
use common::{is_ordered, reference_batches, reference_context, samples, short_samples};
use python::{client, read_arrow};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// Seconds of CPU before its only row: lineitem joined with itself on a 7-valued key.
pub(crate) const SLOW: &str = "SELECT count(*) AS n FROM lineitem a JOIN lineitem b ON a.l_linenumber = b.l_linenumber WHERE a.l_comment < b.l_comment";

fn samples_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sql-samples")
        .display()
        .to_string()
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Asserts that a client saw the error `code` (in the message) with the driver status
/// `status`, when given.
fn assert_failed(seen: &Value, what: &str, code: &str, status: Option<&str>) {
    assert_eq!(seen["code"], code, "{what}: {seen}");
    if let Some(status) = status {
        assert_eq!(seen["status"], status, "{what}: {seen}");
    }
}

pub(crate) const FLIGHT_TOML: &str = "[flight]\nlisten = \"127.0.0.1:0\"\n";

/// Flight SQL on, with authentication: tokens `alpha-token` (tenant alpha), `busy-token`
/// (tenant busy) and `ops-token` (an admin).
pub(crate) fn tokens_toml() -> String {
    format!(
        "{FLIGHT_TOML}[auth]\nenabled = true\nopen_metrics = true\n\
         [[auth.tokens]]\nsha256 = \"{}\"\ntenant = \"alpha\"\n\
         [[auth.tokens]]\nsha256 = \"{}\"\ntenant = \"busy\"\n\
         [[auth.tokens]]\nsha256 = \"{}\"\ntenant = \"ops\"\nadmin = true\n",
        sha256_hex("alpha-token"),
        sha256_hex("busy-token"),
        sha256_hex("ops-token"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adbc_and_pyarrow_flight_get_what_http_clients_get() {
    let gateway_toml = format!(
        "{}[tenants.busy]\nmax_concurrent = 1\nqueue_length = 0\n",
        tokens_toml()
    );
    let federation = Federation::start_with_options(FederationOptions {
        gateway_toml,
        admin_token: Some("ops-token".into()),
        ..FederationOptions::default()
    });
    let out = tempfile::tempdir().unwrap();
    let slow = out.path().join("slow.sql");
    std::fs::write(&slow, SLOW).unwrap();
    let samples_dir = samples_dir();
    let report = client(
        &federation.gateway,
        "check",
        &[
            "--token",
            "alpha-token",
            "--busy-token",
            "busy-token",
            "--samples",
            &samples_dir,
            "--slow-sql",
            slow.to_str().unwrap(),
        ],
        out.path(),
        "report.json",
        Duration::from_secs(600),
    )
    .await;

    println!(
        "ADBC: {} samples, {} tables listed, errors {}",
        report["samples"].as_array().map_or(0, Vec::len),
        report["objects"].as_array().map_or(0, Vec::len),
        report["errors"]
    );
    // Authentication: refused without a token and with a wrong one, like HTTP.
    assert_failed(
        &report["no_token"],
        "no token",
        "unauthorized",
        Some("UNAUTHENTICATED"),
    );
    assert_failed(
        &report["bad_token"],
        "bad token",
        "unauthorized",
        Some("UNAUTHENTICATED"),
    );
    assert_eq!(
        report["info"]["vendor_name"], "Flotilla",
        "{}",
        report["info"]
    );

    // Metadata: every table with its columns, as DataFusion sees the same files, and Flotilla's
    // own view of them (`system.tables`).
    let reference = reference_context().await;
    let (views, objects): (Vec<&Value>, Vec<&Value>) = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|object| object["schema"] == "system");
    assert_eq!(
        objects.len(),
        cluster_agent::TPCH_TABLES.len(),
        "{objects:?}"
    );
    assert!(
        views.len() == 1 && views[0]["table"] == "tables" && views[0]["type"] == "VIEW",
        "{views:?}"
    );
    for table in cluster_agent::TPCH_TABLES {
        let listed = objects
            .iter()
            .find(|object| object["table"] == *table)
            .unwrap_or_else(|| panic!("{table} missing from adbc_get_objects: {objects:?}"));
        assert_eq!(listed["type"], "TABLE");
        let expected: Vec<String> = reference
            .table_provider(table.to_string())
            .await
            .unwrap()
            .schema()
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect();
        let columns: Vec<String> = serde_json::from_value(listed["columns"].clone()).unwrap();
        assert_eq!(columns, expected, "{table}");
    }
    assert!(
        report["table_types"]
            .as_array()
            .unwrap()
            .contains(&"TABLE".into())
    );

    // The 22 TPC-H queries and the short ones.
    let names: Vec<String> = serde_json::from_value(report["samples"].clone()).unwrap();
    let queries = samples();
    assert_eq!(names.len(), queries.len());
    for (index, (name, sql)) in queries.iter().enumerate() {
        assert_eq!(&names[index], name);
        let actual = read_arrow(&out.path().join(format!("{index:02}.arrow")));
        assert_same(
            name,
            &actual,
            &reference_batches(sql).await,
            is_ordered(sql),
        );
    }

    // One prepared statement, executed with two sets of values.
    let params = &report["params"];
    let sql = params["sql"].as_str().unwrap();
    for label in ["param_a", "param_b"] {
        let values = params[label].as_array().unwrap();
        let literal = sql
            .replace("$1", &values[0].to_string())
            .replace("$2", &format!("'{}'", values[1].as_str().unwrap()));
        let actual = read_arrow(&out.path().join(format!("{label}.arrow")));
        assert_same(label, &actual, &reference_batches(&literal).await, false);
    }

    // Errors: each class with its stable code; what the user's SQL causes is InvalidArgument.
    let errors = &report["errors"];
    assert_failed(
        &errors["syntax"],
        "syntax",
        "sql_syntax",
        Some("INVALID_ARGUMENT"),
    );
    assert_failed(
        &errors["planning"],
        "planning",
        "sql_planning",
        Some("INVALID_ARGUMENT"),
    );
    assert_failed(
        &errors["not_allowed"],
        "not allowed",
        "not_allowed",
        Some("UNAUTHORIZED"),
    );
    assert_failed(
        &errors["data"],
        "division by zero",
        "data_exception",
        Some("INVALID_ARGUMENT"),
    );
    assert_failed(
        &errors["queue_full"],
        "second query of a busy tenant",
        "tenant_queue_full",
        None,
    );
    assert_eq!(report["after_errors"], serde_json::json!([{"answer": 42}]));

    // pyarrow.flight: no location (the client comes back to the gateway), the FlightInfo's
    // schema is the stream's, a ticket is spent once, belongs to its caller, and can be
    // cancelled.
    let seen = &report["pyarrow_flight"];
    assert_eq!(seen["locations"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["schema_matches"], true, "{seen}");
    let actual = read_arrow(&out.path().join("pyarrow_flight.arrow"));
    let sql = seen["sql"].as_str().unwrap();
    assert_same(
        "pyarrow.flight",
        &actual,
        &reference_batches(sql).await,
        true,
    );
    assert_failed(&seen["refetch"], "a spent ticket", "ticket_not_found", None);
    assert_failed(
        &seen["stranger"],
        "a ticket without the token",
        "unauthorized",
        None,
    );
    // CancelFlightInfoResult { status: CANCEL_STATUS_CANCELLED (1) }.
    assert_eq!(seen["cancel_status"], serde_json::json!([8, 1]), "{seen}");
    assert_failed(
        &seen["after_cancel"],
        "a cancelled ticket",
        "ticket_not_found",
        None,
    );

    // Metrics carry the front door; nothing is left holding a slot.
    let metrics = format!("{}/metrics", federation.url());
    let ok = r#"flotilla_gateway_queries_total{code="ok",protocol="flight_sql"}"#;
    let served = common::metric_sum(&metrics, ok).await;
    assert!(served >= queries.len() as f64 + 2.0, "{ok} = {served}");
    let syntax = r#"flotilla_gateway_queries_total{code="sql_syntax",protocol="flight_sql"}"#;
    assert!(common::metric_sum(&metrics, syntax).await >= 1.0);
    assert!(
        federation
            .taskmanagers_settle_to_zero("/slots/slots_used")
            .await,
        "slots still leased after the clients ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_an_adbc_query_ends_it_everywhere_and_frees_its_slots() {
    let federation = Federation::start_with_options(FederationOptions {
        gateway_toml: FLIGHT_TOML.into(),
        ..FederationOptions::default()
    });
    let out = tempfile::tempdir().unwrap();
    let slow = out.path().join("slow.sql");
    std::fs::write(&slow, SLOW).unwrap();
    let ended = client(
        &federation.gateway,
        "cancel",
        &["--sql-file", slow.to_str().unwrap()],
        out.path(),
        "cancel.json",
        Duration::from_secs(120),
    )
    .await;
    println!("cancelled ADBC query: {ended}");
    assert_eq!(ended["joined"], true, "{ended}");
    assert_eq!(ended["error"]["status"], "CANCELLED", "{ended}");
    assert!(ended["seconds"].as_f64().unwrap() < 10.0, "{ended}");
    let idle = common::eventually(Duration::from_secs(15), async || {
        let mut busy = 0;
        for taskmanager in &federation.taskmanagers {
            let state = common::state(taskmanager).await;
            busy += state["slots"]["slots_used"].as_u64().unwrap_or(1)
                + state["tasks_running"].as_u64().unwrap_or(1)
                + state["results_streaming"].as_u64().unwrap_or(1);
        }
        busy == 0
    })
    .await;
    assert!(idle, "the cancelled query still holds slots or runs tasks");
    let cancelled = r#"flotilla_gateway_queries_total{code="cancelled",protocol="flight_sql"}"#;
    let metrics = format!("{}/metrics", federation.url());
    assert_eq!(common::metric_sum(&metrics, cancelled).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_killed_under_adbc_load_is_invisible_to_the_client() {
    let mut federation = Federation::start_with_options(FederationOptions {
        shards: 3,
        jobmanager_toml: "queue_max_wait_ms = 30000\nlease_ttl_ms = 3000\n".into(),
        gateway_toml: FLIGHT_TOML.into(),
        ..FederationOptions::default()
    });
    let out = tempfile::tempdir().unwrap();
    let samples_dir = samples_dir();
    let gateway = &federation.gateway;
    let args = [
        "--seconds",
        "12",
        "--max-queries",
        "3000",
        "--samples",
        &samples_dir,
    ];
    let load = client(
        gateway,
        "loop",
        &args,
        out.path(),
        "loop.json",
        Duration::from_secs(120),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        federation.shards[1].kill();
    };
    let (report, ()) = tokio::join!(load, kill);
    let retries = common::metric_sum(
        &format!("{}/metrics", federation.url()),
        "flotilla_gateway_retries_total",
    )
    .await;
    println!(
        "ADBC, sequential, 12 s; shard jm-1 killed -9 at 4 s: {} queries, {} failed, {retries} retried",
        report["sent"], report["failures"]
    );
    assert_eq!(report["failures"], serde_json::json!([]), "{report}");
    assert!(report["sent"].as_u64().unwrap() >= 50, "{report}");
    for (name, sql) in short_samples() {
        let file = out
            .path()
            .join(format!("loop-{}.arrow", name.replace('/', "_")));
        assert_same(
            &name,
            &read_arrow(&file),
            &reference_batches(&sql).await,
            is_ordered(&sql),
        );
    }
}
