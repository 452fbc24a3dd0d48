//! Tables on an S3-compatible object store: s3s-fs (installed by `scripts/install-s3-server`)
//! on loopback, keeping its objects as files and checking every request's signature, with
//! the TPC-H files uploaded to it.
//!
//! The 22 TPC-H queries through the gateway equal in-process DataFusion reading the same
//! objects; a wrong secret gives an error naming the store on a TaskManager per query, and
//! leaks no slot; a store that is down (or refuses the shard) when a shard starts costs only its
//! own tables, answered `unavailable` naming it until it answers; a plan naming a bucket the
//! catalog does not list is refused by the TaskManager it is handed to.

mod common;

use arrow_flight::{Action, Ticket};
use cluster_agent::{HANDOVER_ACTION, HandoverRequest, HandoverResponse};
use common::compare::assert_same;
use common::internal::signed;
use common::s3::{ACCESS_KEY, PREFIX, S3Server, SECRET_KEY};
use common::{Federation, FederationOptions, is_ordered, post_sql, query_json, samples, tpch_dir};
use datafusion::prelude::SessionContext;
use flotilla_protocol::{ErrorBody, ErrorCode};
use prost::Message;
use std::time::{Duration, Instant};

/// In-process DataFusion reading the TPC-H objects of `bucket`.
async fn reference(s3: &S3Server, bucket: &str) -> SessionContext {
    let ctx = SessionContext::new();
    let url = url::Url::parse(&format!("s3://{bucket}")).unwrap();
    ctx.register_object_store(&url, s3.client(bucket, SECRET_KEY));
    for table in cluster_agent::TPCH_TABLES {
        let location = format!("s3://{bucket}/{PREFIX}/{table}/");
        ctx.register_parquet(table, &location, Default::default())
            .await
            .unwrap();
    }
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_on_s3_matches_datafusion_and_refused_credentials_name_the_store() {
    let s3 = S3Server::start(&["lake"]);
    s3.upload("lake", &cluster_agent::TPCH_TABLES).await;
    let mut federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(s3.catalog_toml("lake", SECRET_KEY)),
        gateway_toml: "[tenants.badkeys]\npool = \"badkeys\"\n".into(),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let reference = reference(&s3, "lake").await;
    for (name, sql) in samples()
        .into_iter()
        .filter(|(name, _)| name.starts_with("tpch/"))
    {
        let expected = reference.sql(&sql).await.unwrap().collect().await.unwrap();
        let response = post_sql(&url, &sql, "application/vnd.apache.arrow.stream").await;
        if response.status != 200 {
            federation.dump_logs();
            panic!(
                "{name}: HTTP {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            );
        }
        assert_same(&name, &response.arrow(), &expected, is_ordered(&sql));
    }

    // A TaskManager whose store signs with a wrong secret: its queries fail with an error
    // naming the store, promptly, and its slot comes back.
    federation.catalog = s3.catalog_toml("lake", "not-the-secret");
    federation.add_taskmanager("badkeys");
    federation.wait_converged();
    let started = Instant::now();
    let sql = "SELECT n_name FROM nation ORDER BY n_name";
    let refused = query_json(&url, sql, &[("x-flotilla-tenant", "badkeys")]).await;
    let body = String::from_utf8_lossy(&refused.body).to_string();
    eprintln!("a wrong secret on a TaskManager: {body}");
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (500, "execution_error"),
        "{body}"
    );
    assert!(
        body.contains("s3://lake") && body.contains(s3.endpoint()),
        "names the store: {body}"
    );
    assert!(
        body.contains("403") || body.contains("SignatureDoesNotMatch"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no hang: {:?}",
        started.elapsed()
    );
    assert!(
        federation
            .taskmanagers_settle_to_zero("/slots/slots_used")
            .await,
        "every slot came back"
    );
    let fine = query_json(&url, sql, &[]).await;
    assert_eq!(fine.status, 200, "the other pool still answers");
    let members = federation
        .taskmanagers
        .iter_mut()
        .chain(&mut federation.shards);
    for process in members.chain([&mut federation.gateway]) {
        assert!(
            process.child.try_wait().unwrap().is_none(),
            "{} is running",
            process.name
        );
    }

    // A plan handed straight to a TaskManager that names a bucket the catalog does not list
    // is refused there.
    let refused = run_on_taskmanager(&federation, &s3).await;
    eprintln!("another bucket: {}", refused.message);
    assert_eq!(refused.code, ErrorCode::NotAllowed, "{}", refused.message);
    assert!(
        refused.message.contains("s3://elsewhere"),
        "{}",
        refused.message
    );
}

/// Plans a scan of `s3://elsewhere/...` in-process, hands it to the first TaskManager with the
/// cluster secret (as a shard would), and returns the error the hand-over or the result fetch
/// gives.
async fn run_on_taskmanager(federation: &Federation, s3: &S3Server) -> ErrorBody {
    let ctx = SessionContext::new();
    let url = url::Url::parse("s3://elsewhere").unwrap();
    ctx.register_object_store(&url, s3.client("lake", SECRET_KEY));
    let location = format!("s3://elsewhere/{PREFIX}/nation/");
    ctx.register_parquet("nation", &location, Default::default())
        .await
        .unwrap();
    let frame = ctx.sql("SELECT * FROM nation").await.unwrap();
    let physical = frame.create_physical_plan().await.unwrap();
    let plan = cluster_agent::encode_plan(physical, ctx.state().config()).unwrap();
    let head = federation.taskmanagers[0].grpc_url();
    let request = HandoverRequest {
        query_id: flotilla_protocol::QueryId::new().to_string(),
        plan,
        worker_urls: vec![head.clone()],
        head_url: head.clone(),
        lease_id: uuid::Uuid::new_v4().to_string(),
        lease_ttl_ms: 10_000,
        reserve_slots: 1,
        holder: "object-store test".into(),
        ..HandoverRequest::default()
    };
    let mut client = signed(&head, &federation.secret).await;
    let action = Action::new(HANDOVER_ACTION, request.encode_to_vec());
    let status = match client.do_action(action).await {
        Err(status) => status,
        Ok(response) => {
            let result = response.into_inner().message().await.unwrap().unwrap();
            let ticket = HandoverResponse::decode(result.body).unwrap().ticket;
            let fetched = client.do_get(Ticket::new(ticket)).await;
            let mut stream = fetched
                .map_err(|status| ErrorBody::from(&status))
                .unwrap()
                .into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("the TaskManager read another bucket"),
                    Err(status) => break status,
                }
            }
        }
    };
    ErrorBody::from(&status)
}

/// The catalog of the shared TPC-H tables plus `lake_nation`, TPC-H's nation in `s3://lake`
/// served at `endpoint`, signed with `secret`.
fn catalog_with_lake(endpoint: &str, secret: &str) -> String {
    format!(
        "{}[[catalog.tables]]\nname = \"lake_nation\"\nformat = \"parquet\"\n\
         location = \"s3://lake/{PREFIX}/nation/\"\n\
         [catalog.object_stores.lake]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{secret}\"\nallow_http = true\n",
        common::catalog_toml(&tpch_dir())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_start_costs_only_its_tables_until_it_answers() {
    // A port nothing listens on yet: the store comes up there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let federation = Federation::start_with_options(FederationOptions {
        catalog_toml: Some(catalog_with_lake(&endpoint, SECRET_KEY)),
        ..FederationOptions::default()
    });
    let url = federation.url();
    let local = query_json(&url, "SELECT count(*) AS n FROM nation", &[]).await;
    assert_eq!(local.status, 200, "the other tables are served");
    assert_eq!(local.json()[0]["n"], 25);
    let down = query_json(&url, "SELECT count(*) AS n FROM lake_nation", &[]).await;
    let body = String::from_utf8_lossy(&down.body).to_string();
    eprintln!("a table whose store is down: {body}");
    assert_eq!(
        (down.status, down.error_code().as_str()),
        (503, "unavailable"),
        "{body}"
    );
    assert!(
        body.contains("s3://lake") && body.contains("lake_nation"),
        "{body}"
    );
    assert!(
        !body.contains(SECRET_KEY),
        "the secret is never shown: {body}"
    );

    // The store comes up: the shard registers the table again by itself.
    let s3 = S3Server::start_on(&["lake"], port);
    s3.upload("lake", &["nation"]).await;
    let back = common::eventually(Duration::from_secs(60), async || {
        query_json(&url, "SELECT count(*) AS n FROM lake_nation", &[])
            .await
            .status
            == 200
    })
    .await;
    assert!(back, "the table is served once its store answers");
    let answer = query_json(&url, "SELECT count(*) AS n FROM lake_nation", &[]).await;
    assert_eq!(answer.json()[0]["n"], 25);
}

#[test]
fn a_shard_whose_credentials_are_refused_starts_and_names_the_store() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let s3 = S3Server::start(&["lake"]);
    runtime.block_on(s3.upload("lake", &["nation"]));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jm.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nsecret = \"s\"\n[jobmanager]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{}",
            catalog_with_lake(s3.endpoint(), "wrong-secret-value")
        ),
    )
    .unwrap();
    let shard = common::Process::start(
        "jm",
        &["jobmanager", "--config", config.to_str().unwrap()],
        dir.path(),
    );
    let log = std::fs::read_to_string(&shard.log).unwrap();
    eprintln!("a wrong secret on a shard: {log}");
    assert!(
        log.contains("s3://lake") && log.contains("lake_nation") && log.contains("not readable"),
        "{log}"
    );
    assert!(
        !log.contains("wrong-secret-value"),
        "the secret is never printed: {log}"
    );
}
