//! Every error case of the HTTP API answers with its stable code and status, and leaves the
//! federation serving.

mod common;

use bytes::Bytes;
use common::{Federation, http, post_sql};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_stable_codes_and_disturbs_nothing() {
    let federation = Federation::start();
    let url = federation.url();
    let query_url = format!("{url}/v1/query");
    let text = [("content-type", "text/plain")];

    let cases: Vec<(&str, common::HttpResponse, u16, &str)> = vec![
        (
            "empty body",
            http("POST", &query_url, &text, Bytes::new()).await,
            400,
            "bad_request",
        ),
        (
            "blank body",
            http("POST", &query_url, &text, "  \n ").await,
            400,
            "bad_request",
        ),
        (
            "non-UTF-8 body",
            http("POST", &query_url, &text, vec![0xff, 0xfe, 0x00]).await,
            400,
            "bad_request",
        ),
        (
            "bad JSON",
            http(
                "POST",
                &query_url,
                &[("content-type", "application/json")],
                "{\"sq\": 1}",
            )
            .await,
            400,
            "bad_request",
        ),
        (
            "syntax error",
            post_sql(&url, "SELEC 1 FROM", "*/*").await,
            400,
            "sql_syntax",
        ),
        (
            "unknown table",
            post_sql(&url, "SELECT * FROM no_such_table", "*/*").await,
            400,
            "sql_planning",
        ),
        (
            "unknown column",
            post_sql(&url, "SELECT no_such_column FROM nation", "*/*").await,
            400,
            "sql_planning",
        ),
        (
            "DDL",
            post_sql(&url, "CREATE TABLE t AS SELECT 1", "*/*").await,
            403,
            "not_allowed",
        ),
        (
            "DML",
            post_sql(&url, "INSERT INTO nation VALUES (1, 'x', 1, 'y')", "*/*").await,
            403,
            "not_allowed",
        ),
        (
            "external table",
            post_sql(
                &url,
                "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
                "*/*",
            )
            .await,
            403,
            "not_allowed",
        ),
        (
            "unsupported media type",
            http(
                "POST",
                &query_url,
                &[("content-type", "application/xml")],
                "<sql/>",
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (
            "not acceptable",
            http(
                "POST",
                &query_url,
                &[("content-type", "text/plain"), ("accept", "image/png")],
                "SELECT 1",
            )
            .await,
            406,
            "not_acceptable",
        ),
        (
            "body over the limit",
            http(
                "POST",
                &query_url,
                &text,
                format!("SELECT '{}'", "x".repeat(70_000)),
            )
            .await,
            413,
            "payload_too_large",
        ),
        (
            "unknown path",
            http("GET", &format!("{url}/v2/nothing"), &[], Bytes::new()).await,
            404,
            "not_found",
        ),
    ];
    for (name, response, status, code) in &cases {
        assert_eq!(
            response.status,
            *status,
            "{name}: {}",
            String::from_utf8_lossy(&response.body)
        );
        assert_eq!(response.error_code(), *code, "{name}");
        let error = &response.json()["error"];
        assert!(
            !error["message"].as_str().unwrap_or_default().is_empty(),
            "{name}: a message"
        );
        if *status != 404 {
            assert_eq!(
                error["query_id"].as_str(),
                response.header("x-flotilla-query-id").as_deref(),
                "{name}: query id in body and header"
            );
        }
    }

    // A body over the limit without Content-Length (chunked) is refused too.
    let chunks =
        futures::stream::iter((0..20).map(|_| {
            Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(vec![b' '; 8192])))
        }));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let request = http::Request::post(&query_url)
        .header("content-type", "text/plain")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 413, "chunked body over the limit");

    // A query whose expressions fail on its data (division by zero at execution) is the
    // client's error: 422 data_exception, not a server error.
    let failing = post_sql(
        &url,
        "SELECT 1 / (n_nationkey - n_nationkey) FROM nation",
        "application/json",
    )
    .await;
    assert_eq!(
        failing.status,
        422,
        "{}",
        String::from_utf8_lossy(&failing.body)
    );
    assert_eq!(failing.error_code(), "data_exception");
    assert!(
        failing.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("divide by zero")
    );

    // Nothing crashed, and a valid query still succeeds everywhere.
    for process in federation.taskmanagers.iter().chain(&federation.shards) {
        let expected_role = if process.name.starts_with("tm") {
            "taskmanager"
        } else {
            "jobmanager"
        };
        assert_eq!(
            common::state(process).await["role"],
            expected_role,
            "{} still serves",
            process.name
        );
    }
    for _ in 0..4 {
        let ok = post_sql(&url, "SELECT count(*) AS n FROM nation", "application/json").await;
        assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
        assert_eq!(ok.json()[0]["n"], 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reachable_shard_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!("[http]\nlisten = \"127.0.0.1:0\"\n[shards]\nprobe_interval_ms = 100\naddresses = [\"http://{closed}\"]\n"),
    )
    .unwrap();
    let gateway = common::Process::start(
        "gateway",
        &["gateway", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    let url = format!("http://{}", gateway.addresses["http"]);
    let response = post_sql(&url, "SELECT 1", "*/*").await;
    assert_eq!(
        response.status,
        503,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.error_code(), "unavailable");
    let ready = http("GET", &format!("{url}/readyz"), &[], Bytes::new()).await;
    assert_eq!(ready.status, 503);
    let health = http("GET", &format!("{url}/healthz"), &[], Bytes::new()).await;
    assert_eq!(health.status, 200);
}
