//! Hostile input: a table of malformed, oversized, forbidden and resource-hungry requests, each
//! answered with its status and stable code; afterwards the federation still serves and no slot
//! is leaked.

mod common;

use bytes::Bytes;
use common::{Federation, FederationOptions, http};

/// One hostile request and the answer it must get.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    status: u16,
    code: &'static str,
}

fn sql(name: &'static str, text: impl Into<String>, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: "/v1/query".into(),
        headers: vec![("content-type", "text/plain".into())],
        body: Bytes::from(text.into()),
        status,
        code,
    }
}

fn raw(
    name: &'static str,
    method: &'static str,
    path: &str,
    headers: &[(&'static str, &str)],
    body: impl Into<Bytes>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(name, value)| (*name, value.to_string()))
            .collect(),
        body: body.into(),
        status,
        code,
    }
}

fn cases() -> Vec<Case> {
    let text = [("content-type", "text/plain")];
    let json = [("content-type", "application/json")];
    let nested = format!("SELECT {}1{}", "(".repeat(3000), ")".repeat(3000));
    let long_sum = format!("SELECT 1{}", "+1".repeat(5000));
    let legal_sum = format!("SELECT 1{}", "+1".repeat(900));
    let long_identifier = format!("SELECT {} FROM nation", "x".repeat(60_000));
    vec![
        // The request itself.
        raw(
            "empty body",
            "POST",
            "/v1/query",
            &text,
            "",
            400,
            "bad_request",
        ),
        raw(
            "blank body",
            "POST",
            "/v1/query",
            &text,
            " \n\t ",
            400,
            "bad_request",
        ),
        raw(
            "non-UTF-8 body",
            "POST",
            "/v1/query",
            &text,
            vec![0xc3, 0x28, 0xff],
            400,
            "bad_request",
        ),
        raw(
            "JSON without sql",
            "POST",
            "/v1/query",
            &json,
            "{\"query\": \"SELECT 1\"}",
            400,
            "bad_request",
        ),
        raw(
            "JSON sql not a string",
            "POST",
            "/v1/query",
            &json,
            "{\"sql\": 5}",
            400,
            "bad_request",
        ),
        raw(
            "JSON array",
            "POST",
            "/v1/query",
            &json,
            "[\"SELECT 1\"]",
            400,
            "bad_request",
        ),
        raw(
            "truncated JSON",
            "POST",
            "/v1/query",
            &json,
            "{\"sql\": \"SELECT",
            400,
            "bad_request",
        ),
        raw(
            "body over the limit",
            "POST",
            "/v1/query",
            &text,
            vec![b' '; 2 * 1024 * 1024],
            413,
            "payload_too_large",
        ),
        raw(
            "unsupported media type",
            "POST",
            "/v1/query",
            &[("content-type", "image/png")],
            "SELECT 1",
            415,
            "unsupported_media_type",
        ),
        raw(
            "no acceptable format",
            "POST",
            "/v1/query",
            &[("content-type", "text/plain"), ("accept", "image/png")],
            "SELECT 1",
            406,
            "not_acceptable",
        ),
        raw(
            "query id not a UUID",
            "POST",
            "/v1/query",
            &[
                ("content-type", "text/plain"),
                ("x-flotilla-query-id", "../../etc"),
            ],
            "SELECT 1",
            400,
            "bad_request",
        ),
        raw(
            "tenant with bad characters",
            "POST",
            "/v1/query",
            &[
                ("content-type", "text/plain"),
                ("x-flotilla-tenant", "a b/../c"),
            ],
            "SELECT 1",
            400,
            "bad_request",
        ),
        raw(
            "tenant too long",
            "POST",
            "/v1/query",
            &[
                ("content-type", "text/plain"),
                ("x-flotilla-tenant", &"t".repeat(65)),
            ],
            "SELECT 1",
            400,
            "bad_request",
        ),
        raw(
            "timeout not a number",
            "POST",
            "/v1/query",
            &[
                ("content-type", "text/plain"),
                ("x-flotilla-timeout-ms", "soon"),
            ],
            "SELECT 1",
            400,
            "bad_request",
        ),
        raw(
            "timeout zero",
            "POST",
            "/v1/query",
            &[
                ("content-type", "text/plain"),
                ("x-flotilla-timeout-ms", "0"),
            ],
            "SELECT 1",
            400,
            "bad_request",
        ),
        raw(
            "unknown path",
            "GET",
            "/v1/../../etc/passwd",
            &[],
            "",
            404,
            "not_found",
        ),
        raw(
            "wrong method",
            "PUT",
            "/v1/query",
            &text,
            "SELECT 1",
            405,
            "bad_request",
        ),
        raw(
            "query record of a non-id",
            "GET",
            "/v1/query/%00",
            &[],
            "",
            400,
            "bad_request",
        ),
        raw(
            "cancel of a non-id",
            "DELETE",
            "/v1/query/1;DROP",
            &[],
            "",
            400,
            "bad_request",
        ),
        // Malformed SQL.
        sql("syntax error", "SELEC 1 FROM", 400, "sql_syntax"),
        sql("unterminated string", "SELECT 'abc", 400, "sql_syntax"),
        sql("null byte", "SELECT 1\0", 400, "sql_syntax"),
        sql("deeply nested parentheses", nested, 400, "sql_syntax"),
        sql("two statements", "SELECT 1; SELECT 2", 400, "sql_syntax"),
        sql(
            "unknown table",
            "SELECT * FROM no_such_table",
            400,
            "sql_planning",
        ),
        sql("very long identifier", long_identifier, 400, "sql_planning"),
        sql(
            "type error",
            "SELECT n_name * 2 FROM nation",
            400,
            "sql_planning",
        ),
        // Anything but a read-only query.
        sql("CREATE TABLE", "CREATE TABLE t (a INT)", 403, "not_allowed"),
        sql("DROP TABLE", "DROP TABLE nation", 403, "not_allowed"),
        sql(
            "INSERT",
            "INSERT INTO nation VALUES (99, 'X', 0, 'x')",
            403,
            "not_allowed",
        ),
        sql("DELETE", "DELETE FROM nation", 403, "not_allowed"),
        sql(
            "COPY to a file",
            "COPY nation TO '/tmp/flotilla-stolen.csv'",
            403,
            "not_allowed",
        ),
        sql(
            "SET",
            "SET datafusion.execution.batch_size = 1",
            403,
            "not_allowed",
        ),
        sql(
            "external table on /etc/passwd",
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
            403,
            "not_allowed",
        ),
        // Reading files by path.
        sql(
            "table function on a path",
            "SELECT * FROM read_csv('../../../../etc/passwd')",
            403,
            "not_allowed",
        ),
        sql(
            "file path as a table",
            "SELECT * FROM '/etc/passwd'",
            400,
            "sql_planning",
        ),
        // Execution: the query's own data (SQLSTATE class 22), the client's error.
        sql(
            "division by zero",
            "SELECT n_nationkey / (n_regionkey - n_regionkey) FROM nation",
            422,
            "data_exception",
        ),
        sql(
            "invalid cast",
            "SELECT CAST(n_name AS INT) FROM nation",
            422,
            "data_exception",
        ),
        sql(
            "cartesian join over the memory pool",
            "SELECT array_agg(a.l_comment) FROM lineitem a, lineitem b",
            507,
            "resources_exhausted",
        ),
        // Chains of operators: past jobmanager.max_operators (1,000), refused before any
        // planner recursion (this one used to overflow both shards' stacks); below, planned.
        sql("a 5,000-term sum", long_sum, 400, "sql_planning"),
        sql("a 900-term sum", legal_sum, 200, ""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_their_codes_and_leave_the_federation_serving() {
    let federation = Federation::start_with_options(FederationOptions {
        taskmanager_toml: "memory_limit_mb = 64\n".into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let response = http(
            case.method,
            &format!("{url}{}", case.path),
            &headers,
            case.body.clone(),
        )
        .await;
        let code = if response.status == 200 {
            String::new()
        } else {
            response.error_code()
        };
        if (response.status, code.as_str()) != (case.status, case.code) {
            failures.push(format!(
                "{}: got {} {code:?}, want {} {:?}: {}",
                case.name,
                response.status,
                case.status,
                case.code,
                String::from_utf8_lossy(&response.body[..response.body.len().min(300)])
            ));
        }
    }
    if !failures.is_empty() {
        federation.dump_logs();
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing was disturbed: a normal query works, every process still runs, no slot is held.
    let response = common::query_json(&url, "SELECT count(*) AS n FROM region", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()[0]["n"], 5);
    let released = federation
        .taskmanagers_settle_to_zero("/slots/slots_used")
        .await;
    assert!(released, "every slot was released");
    for process in federation.processes() {
        let mut probe = std::process::Command::new("kill");
        let alive = probe
            .args(["-0", &process.pid().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        assert!(alive, "{} still runs", process.name);
    }
    assert!(
        !std::path::Path::new("/tmp/flotilla-stolen.csv").exists(),
        "COPY wrote nothing"
    );
}
