//! Security end to end: internal calls need the cluster's signature, result tickets are
//! single-use and expire.

mod common;

use arrow_flight::{Action, Ticket};
use common::internal::{command, flight, plan, signed};
use common::{Federation, FederationOptions};
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_need_the_cluster_secret_and_tickets_are_single_use_and_expire() {
    let federation = Federation::start_with_options(FederationOptions {
        pools: vec!["default".into()],
        shards: 1,
        taskmanager_toml: "ticket_ttl_secs = 1\n".into(),
        ..FederationOptions::default()
    });
    let shard = federation.shards[0].grpc_url();
    let taskmanager = federation.taskmanagers[0].grpc_url();
    let secret = federation.secret.clone();

    // The admin port's drain needs the secret too: without it (or with a wrong one), 401 and
    // the node keeps serving.
    for process in [&federation.shards[0], &federation.taskmanagers[0]] {
        let drain = format!("{}/admin/drain", process.admin_url());
        for headers in [vec![], vec![("x-flotilla-cluster-secret", "wrong")]] {
            let answer = common::http("POST", &drain, &headers, bytes::Bytes::new()).await;
            assert_eq!(
                (answer.status, answer.error_code().as_str()),
                (401, "unauthorized"),
                "{}",
                process.name
            );
        }
        assert_eq!(
            common::state(process).await["draining"],
            false,
            "{}",
            process.name
        );
    }

    // Unsigned, signed with another secret, or carrying the secret itself: nothing internal
    // answers.
    let refusals = [
        flight(&shard)
            .await
            .get_flight_info(command("SELECT 1"))
            .await
            .map(|_| ()),
        signed(&shard, "wrong")
            .await
            .get_flight_info(command("SELECT 1"))
            .await
            .map(|_| ()),
        // The secret itself, as calls carried it before they were signed, is no signature.
        flight(&shard)
            .await
            .get_flight_info({
                let mut request = tonic::Request::new(command("SELECT 1"));
                request
                    .metadata_mut()
                    .insert("x-flotilla-cluster-secret", secret.parse().unwrap());
                request
            })
            .await
            .map(|_| ()),
        flight(&taskmanager)
            .await
            .do_get(Ticket::new("any"))
            .await
            .map(|_| ()),
        flight(&taskmanager)
            .await
            .do_action(Action::new("flotilla.handover", Vec::new()))
            .await
            .map(|_| ()),
        flight(&taskmanager)
            .await
            .do_action(Action::new("flotilla.lease.reserve", Vec::new()))
            .await
            .map(|_| ()),
    ];
    for (index, refusal) in refusals.into_iter().enumerate() {
        let status = refusal.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "call {index}: {status}"
        );
    }

    // With it, a ticket is served once.
    let (head, ticket) = plan(&shard, &secret).await;
    let mut stream = signed(&head, &secret)
        .await
        .do_get(ticket.clone())
        .await
        .unwrap()
        .into_inner();
    let mut messages = 0;
    while stream.message().await.unwrap().is_some() {
        messages += 1;
    }
    assert!(messages >= 2, "schema and a batch");
    let reused = signed(&head, &secret)
        .await
        .do_get(ticket)
        .await
        .expect_err("a ticket is single-use");
    assert_eq!(reused.code(), Code::NotFound, "{reused}");

    // A ticket nobody fetched within its TTL (1 s here) is gone.
    let (head, ticket) = plan(&shard, &secret).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = signed(&head, &secret)
        .await
        .do_get(ticket)
        .await
        .expect_err("an expired ticket is refused");
    assert_eq!(expired.code(), Code::NotFound, "{expired}");

    // The gateway signs its calls: queries work end to end.
    let response =
        common::query_json(&federation.url(), "SELECT count(*) AS n FROM region", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()[0]["n"], 5);
}

/// `method url` with `Authorization: Bearer <token>`.
async fn as_token(method: &str, url: &str, token: &str) -> common::HttpResponse {
    let authorization = format!("Bearer {token}");
    common::http(method, url, &[("authorization", &authorization)], "").await
}

fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_name_tenants_and_a_tenant_sees_only_its_own_queries() {
    let gateway_toml = format!(
        "[auth]\nenabled = true\n\
         [[auth.tokens]]\nsha256 = \"{}\"\ntenant = \"alpha\"\n\
         [[auth.tokens]]\nsha256 = \"{}\"\ntenant = \"beta\"\n\
         [[auth.tokens]]\nsha256 = \"{}\"\ntenant = \"ops\"\nadmin = true\n",
        sha256_hex("alpha-token"),
        sha256_hex("beta-token"),
        sha256_hex("ops-token"),
    );
    let federation = Federation::start_with_options(FederationOptions {
        pools: vec!["default".into()],
        shards: 1,
        gateway_toml,
        admin_token: Some("ops-token".into()),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let sql = "SELECT count(*) AS n FROM region";
    let bearer = |token: &str| format!("Bearer {token}");

    // No token, a wrong one, another scheme: 401 with a challenge.
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope".to_string())],
        vec![("authorization", "Basic YWxwaGE6eA==".to_string())],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = common::query_json(&url, sql, &headers).await;
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (401, "unauthorized"),
            "{headers:?}"
        );
        assert!(response.header("www-authenticate").is_some());
    }
    // Health stays open; metrics are open by default; the cluster view needs an admin.
    for (path, token, status) in [
        ("/healthz", None, 200),
        ("/readyz", None, 200),
        ("/metrics", None, 200),
        ("/v1/cluster", None, 401),
        ("/v1/cluster", Some("alpha-token"), 403),
        ("/v1/cluster", Some("ops-token"), 200),
    ] {
        let authorization = token.map(bearer);
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        let response = common::http("GET", &format!("{url}{path}"), &headers, "").await;
        assert_eq!(response.status, status, "{path} with {token:?}");
    }

    // The right token runs the query as its tenant; a header naming another tenant is refused.
    let alpha = bearer("alpha-token");
    let response = common::query_json(&url, sql, &[("authorization", &alpha)]).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()[0]["n"], 5);
    let query_id = response.header("x-flotilla-query-id").unwrap();
    let spoofed = common::query_json(
        &url,
        sql,
        &[("authorization", &alpha), ("x-flotilla-tenant", "beta")],
    )
    .await;
    assert_eq!(
        (spoofed.status, spoofed.error_code().as_str()),
        (403, "not_allowed")
    );

    // Its record: visible to alpha and to the admin, unknown to beta.
    let record_url = format!("{url}/v1/query/{query_id}");
    let own = as_token("GET", &record_url, "alpha-token").await;
    assert_eq!(own.status, 200);
    assert_eq!(own.json()["tenant"], "alpha");
    assert_eq!(as_token("GET", &record_url, "ops-token").await.status, 200);
    let other = as_token("GET", &record_url, "beta-token").await;
    assert_eq!(
        (other.status, other.error_code().as_str()),
        (404, "not_found")
    );
    let cancel = as_token("DELETE", &record_url, "beta-token").await;
    assert_eq!(cancel.status, 404);

    // The list the web UI shows: the same rule.
    for (token, sees) in [
        ("alpha-token", true),
        ("beta-token", false),
        ("ops-token", true),
    ] {
        let listed = as_token("GET", &format!("{url}/v1/queries"), token)
            .await
            .json();
        let ids: Vec<&str> = listed["queries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| record["query_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.contains(&query_id.as_str()), sees, "{token}: {ids:?}");
    }
    // The UI's files need no token (they hold no data); the UI learns that auth is on.
    let page = common::http("GET", &format!("{url}/ui/"), &[], "").await;
    assert_eq!(page.status, 200);
    let settings = common::http("GET", &format!("{url}/ui/config.json"), &[], "").await;
    assert_eq!(settings.json()["auth"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_grpc_runs_over_tls_and_refuses_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let tls = flotilla_cluster::self_signed(dir.path()).unwrap();
    // Small scan partitions spread over both TaskManagers: stage calls go head → worker too.
    let federation = Federation::start_with_options(FederationOptions {
        jobmanager_toml:
            "queue_max_wait_ms = 30000\nscan_bytes_per_partition = 65536\nspread_within_host = true\n"
                .into(),
        cluster_toml: format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            tls.cert_file.display(),
            tls.key_file.display()
        ),
        ..FederationOptions::default()
    });
    let url = federation.url();

    // Every shard and TaskManager advertises an https:// URL.
    let view = common::http(
        "GET",
        &format!("{url}/v1/cluster"),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .json();
    let urls: Vec<String> = common::all_members(&view)
        .iter()
        .filter_map(|member| member["grpc_url"].as_str().map(str::to_string))
        .collect();
    assert_eq!(urls.len(), 4, "{view}");
    assert!(
        urls.iter().all(|url| url.starts_with("https://")),
        "{urls:?}"
    );

    // A distributed query runs over TLS on every hop, with DataFusion's answer.
    let mut tasks_before = Vec::new();
    for taskmanager in &federation.taskmanagers {
        tasks_before.push(
            common::state(taskmanager).await["tasks_total"]
                .as_u64()
                .unwrap(),
        );
    }
    let sql = "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag";
    let response = common::query_json(&url, sql, &[]).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let expected = common::reference_batches(sql).await;
    let counts = datafusion::arrow::array::cast::as_primitive_array::<
        datafusion::arrow::datatypes::Int64Type,
    >(expected[0].column(1));
    let rows = response.json();
    assert_eq!(rows.as_array().unwrap().len(), counts.len());
    for (index, row) in rows.as_array().unwrap().iter().enumerate() {
        assert_eq!(row["n"].as_i64(), Some(counts.value(index)), "{rows}");
    }
    for (taskmanager, before) in federation.taskmanagers.iter().zip(tasks_before) {
        let after = common::state(taskmanager).await["tasks_total"]
            .as_u64()
            .unwrap();
        assert!(after > before, "{} ran stage tasks", taskmanager.name);
    }

    // Clear text gets no gRPC answer from a TaskManager or a shard, even signed.
    for process in [&federation.taskmanagers[0], &federation.shards[0]] {
        let answer = async {
            let channel = tonic::transport::Channel::from_shared(process.grpc_url())
                .unwrap()
                .connect()
                .await
                .map_err(|error| error.to_string())?;
            let keys = flotilla_cluster::ClusterSecret::new(&federation.secret.as_str().into());
            let mut client =
                arrow_flight::flight_service_client::FlightServiceClient::new(keys.signed(channel));
            client
                .do_get(Ticket {
                    ticket: b"x.y".to_vec().into(),
                })
                .await
                .map(|_| ())
                .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
        };
        let answer = tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .expect("no hang");
        let error = answer.expect_err("clear text is refused");
        assert!(
            !error.starts_with("NotFound"),
            "{}: an application answer in clear text: {error}",
            process.name
        );
    }
}
