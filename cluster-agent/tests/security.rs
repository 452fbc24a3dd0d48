//! Security end to end: internal calls need the cluster secret, result tickets are single-use
//! and expire.

mod common;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, FlightDescriptor, Ticket};
use common::{Federation, FederationOptions};
use flotilla_protocol::{CLUSTER_SECRET_HEADER, QueryCommand, QueryId};
use std::time::Duration;
use tonic::Code;

async fn flight(url: &str) -> FlightServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightServiceClient::new(channel)
}

fn with_secret<T>(message: T, secret: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(CLUSTER_SECRET_HEADER, secret.parse().unwrap());
    request
}

fn command(sql: &str) -> FlightDescriptor {
    let command = QueryCommand {
        query_id: QueryId::new(),
        sql: sql.to_string(),
        tenant: flotilla_protocol::DEFAULT_TENANT.to_string(),
        pool: flotilla_protocol::DEFAULT_POOL.to_string(),
    };
    FlightDescriptor::new_cmd(command.to_bytes())
}

/// Asks the shard for a query's ticket, as the gateway does; returns the head and the ticket.
async fn plan(shard_url: &str, secret: &str) -> (String, Ticket) {
    let info = flight(shard_url)
        .await
        .get_flight_info(with_secret(command("SELECT * FROM region"), secret))
        .await
        .unwrap()
        .into_inner();
    let endpoint = info.endpoint.into_iter().next().unwrap();
    let head = endpoint.location[0].uri.clone();
    (head, endpoint.ticket.unwrap())
}

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

    // Without the secret, or with a wrong one, nothing internal answers.
    let refusals = [
        flight(&shard)
            .await
            .get_flight_info(command("SELECT 1"))
            .await
            .map(|_| ()),
        flight(&shard)
            .await
            .get_flight_info(with_secret(command("SELECT 1"), "wrong"))
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
    let mut stream = flight(&head)
        .await
        .do_get(with_secret(ticket.clone(), &secret))
        .await
        .unwrap()
        .into_inner();
    let mut messages = 0;
    while stream.message().await.unwrap().is_some() {
        messages += 1;
    }
    assert!(messages >= 2, "schema and a batch");
    let reused = flight(&head)
        .await
        .do_get(with_secret(ticket, &secret))
        .await
        .expect_err("a ticket is single-use");
    assert_eq!(reused.code(), Code::NotFound, "{reused}");

    // A ticket nobody fetched within its TTL (1 s here) is gone.
    let (head, ticket) = plan(&shard, &secret).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = flight(&head)
        .await
        .do_get(with_secret(ticket, &secret))
        .await
        .expect_err("an expired ticket is refused");
    assert_eq!(expired.code(), Code::NotFound, "{expired}");

    // The gateway carries the secret: queries work end to end.
    let response =
        common::query_json(&federation.url(), "SELECT count(*) AS n FROM region", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()[0]["n"], 5);
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
    let record = |token: &str| {
        let (url, query_id, authorization) = (url.clone(), query_id.clone(), bearer(token));
        async move {
            common::http(
                "GET",
                &format!("{url}/v1/query/{query_id}"),
                &[("authorization", &authorization)],
                "",
            )
            .await
        }
    };
    let own = record("alpha-token").await;
    assert_eq!(own.status, 200);
    assert_eq!(own.json()["tenant"], "alpha");
    assert_eq!(record("ops-token").await.status, 200);
    let other = record("beta-token").await;
    assert_eq!(
        (other.status, other.error_code().as_str()),
        (404, "not_found")
    );
    let cancel = common::http(
        "DELETE",
        &format!("{url}/v1/query/{query_id}"),
        &[("authorization", &bearer("beta-token"))],
        "",
    )
    .await;
    assert_eq!(cancel.status, 404);
}
