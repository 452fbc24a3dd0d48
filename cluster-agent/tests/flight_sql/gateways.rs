//! Stateless gateways for Flight SQL: a ticket issued by one gateway is served by any other of
//! the cluster (it carries its statement, sealed with the cluster's tickets key), through
//! `pyarrow.flight` and ADBC's partitioned reads; it stays bound to its tenant and unforgeable.

use crate::common::{self, Federation, FederationOptions, reference_batches, serving_members};
use crate::python::{client, read_arrow};
use crate::{assert_failed, tokens_toml};
use common::compare::assert_same;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ticket_from_one_gateway_is_served_by_another() {
    let federation = Federation::start_with_options(FederationOptions {
        gateway_toml: tokens_toml(),
        admin_token: Some("ops-token".into()),
        ..FederationOptions::default()
    });
    let other = federation.start_gateway("gateway-b", &format!("\"{}\"", federation.secret));
    let other_url = format!("http://{}", other.addresses["http"]);
    let expected = federation.taskmanagers.len() + federation.shards.len() + 2;
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving_members(&other_url, "authorization: Bearer ops-token\r\n") < expected {
        assert!(Instant::now() < deadline, "gateway-b never saw the cluster");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = tempfile::tempdir().unwrap();
    let other_uri = format!("grpc://{}", other.addresses["flight"]);
    let seen = client(
        &federation.gateway,
        "gateways",
        &[
            "--other-uri",
            &other_uri,
            "--token",
            "alpha-token",
            "--busy-token",
            "busy-token",
        ],
        out.path(),
        "gateways.json",
        Duration::from_secs(180),
    )
    .await;
    println!("two gateways: {seen}");

    // Every answer, wherever its ticket was fetched, is the statement's.
    let expected = reference_batches(seen["sql"].as_str().unwrap()).await;
    for file in [
        "other_gateway.arrow",
        "same_gateway.arrow",
        "adbc_other_gateway.arrow",
    ] {
        assert_same(file, &read_arrow(&out.path().join(file)), &expected, true);
    }
    assert_eq!(seen["schema_matches"], true, "{seen}");
    assert_eq!(seen["adbc_schema_matches"], true, "{seen}");
    assert_eq!(seen["adbc_partitions"], 1, "{seen}");
    // Spent once on the gateway that issued it; another tenant's caller and a changed bit are
    // refused on the other.
    assert_failed(&seen["refetch"], "a spent ticket", "ticket_not_found", None);
    assert_failed(
        &seen["other_tenant"],
        "another tenant's ticket",
        "ticket_not_found",
        None,
    );
    assert_failed(
        &seen["tampered"],
        "a tampered ticket",
        "ticket_not_found",
        None,
    );

    // The other gateway ran the statements it was handed; the issuer served its own.
    let served = |url: &str, how: &str| {
        let series = format!("flotilla_gateway_flight_tickets_total{{served=\"{how}\"}}");
        let metrics = format!("{url}/metrics");
        async move { common::metric_sum(&metrics, &series).await }
    };
    assert_eq!(served(&other_url, "rerun").await, 2.0);
    assert_eq!(served(&other_url, "refused").await, 2.0);
    assert_eq!(served(&federation.url(), "parked").await, 1.0);
    assert_eq!(
        served(&federation.url(), "refused").await,
        1.0,
        "the refetch"
    );
    assert!(
        federation
            .taskmanagers_settle_to_zero("/slots/slots_used")
            .await,
        "slots still leased after the clients ended"
    );
}
