//! Flight SQL keeps the limits HTTP keeps: the client's timeout header, admission for a
//! prepare (it plans on a shard), and a cap of prepared statements per tenant.

use super::{FLIGHT_TOML, SLOW};
use crate::common::{self, Federation, FederationOptions};
use arrow_flight::sql::client::FlightSqlServiceClient;
use std::time::{Duration, Instant};

/// A Flight SQL client of the gateway, sending `x-flotilla-tenant: tenant`.
async fn flight_sql(
    federation: &Federation,
    tenant: &str,
) -> FlightSqlServiceClient<tonic::transport::Channel> {
    let url = format!("http://{}", federation.gateway.addresses["flight"]);
    let channel = common::internal::channel(&url).await;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_header("x-flotilla-tenant", tenant);
    client
}

/// The stable code a Flight SQL error message leads with.
fn code_of(error: &arrow_flight::error::FlightError) -> String {
    let message = error.to_string();
    ["query_timeout", "tenant_queue_full", "resources_exhausted"]
        .into_iter()
        .find(|code| message.contains(&format!("{code}: ")))
        .unwrap_or_else(|| panic!("no expected code in `{message}`"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flight_sql_honours_the_timeout_header_admits_prepares_and_caps_them_per_tenant() {
    let federation = Federation::start_with_options(FederationOptions {
        gateway_toml: format!(
            "{FLIGHT_TOML}tenant_max_prepared_statements = 2\n\
             [tenants.tiny]\nmax_concurrent = 1\nqueue_length = 0\n"
        ),
        ..FederationOptions::default()
    });

    // 1. x-flotilla-timeout-ms bounds a statement as it does over HTTP.
    let mut client = flight_sql(&federation, "default").await;
    client.set_header("x-flotilla-timeout-ms", "300");
    let started = Instant::now();
    let error = client.execute(SLOW.to_string(), None).await.unwrap_err();
    println!(
        "Flight SQL with a 300 ms timeout: {error} after {:?}",
        started.elapsed()
    );
    assert_eq!(code_of(&error), "query_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    client.set_header("x-flotilla-timeout-ms", "soon");
    let error = client
        .execute("SELECT 1".to_string(), None)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("bad_request: "), "{error}");

    // 2. A prepare is admitted like a query: with the tenant's one slot taken, it is refused.
    let url = federation.url();
    let busy = flotilla_cluster::spawn_instrumented(async move {
        common::try_http(
            "POST",
            &format!("{url}/v1/query"),
            &[("x-flotilla-tenant", "tiny")],
            SLOW,
        )
        .await
    });
    let queries = format!("{}/v1/queries", federation.url());
    let running = common::eventually(Duration::from_secs(30), async || {
        let list = common::http("GET", &queries, &[], "").await.json();
        list["queries"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|query| query["tenant"] == "tiny" && query["status"] == "running")
    })
    .await;
    assert!(running, "the slow query of tenant tiny never ran");
    let mut tiny = flight_sql(&federation, "tiny").await;
    let error = tiny
        .prepare("SELECT count(*) FROM nation".to_string(), None)
        .await
        .unwrap_err();
    println!("a prepare past the tenant's limit: {error}");
    assert_eq!(code_of(&error), "tenant_queue_full");
    busy.abort();

    // 3. One tenant cannot fill the gateway's prepared statements.
    let mut alpha = flight_sql(&federation, "alpha").await;
    for _ in 0..2 {
        alpha
            .prepare("SELECT count(*) FROM region".to_string(), None)
            .await
            .unwrap();
    }
    let error = alpha
        .prepare("SELECT count(*) FROM region".to_string(), None)
        .await
        .unwrap_err();
    println!("a third prepared statement of one tenant: {error}");
    assert_eq!(code_of(&error), "resources_exhausted");
    let mut beta = flight_sql(&federation, "beta").await;
    let statement = beta
        .prepare("SELECT count(*) AS n FROM region".to_string(), None)
        .await
        .expect("another tenant still prepares");
    statement.close().await.unwrap();
}
