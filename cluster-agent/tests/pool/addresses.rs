//! Advertised addresses: members bound to every interface (as in a container) tell peers this
//! host's address on the route to their seed, never `0.0.0.0`; one with neither a seed nor an
//! `advertise` refuses to start, naming the setting.

use super::{ORDERS_BY_PRIORITY, assert_orders, query};
use crate::common::{self, Process};
use std::time::Duration;

/// Writes `<name>.toml` into `dir` and returns its path.
fn config_file(dir: &std::path::Path, name: &str, toml: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_bound_to_every_interface_advertise_a_reachable_address() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = common::catalog_toml(&common::tpch_dir());
    let gossip = "[gossip]\nlisten = \"0.0.0.0:0\"\ninterval_ms = 50\nload_interval_ms = 50\n";
    let cluster = "[cluster]\nsecret = \"addresses\"\n";

    // Bound to every interface with no seed and no advertise: nothing tells it its address.
    // A TaskManager with no shard to report to is refused first, naming the setting.
    for (role, toml, said) in [
        (
            "jobmanager",
            format!("{cluster}[jobmanager]\nlisten = \"0.0.0.0:0\"\n{gossip}{catalog}"),
            "set jobmanager.advertise",
        ),
        (
            "taskmanager",
            format!(
                "{cluster}[taskmanager]\nlisten = \"0.0.0.0:0\"\n{gossip}seeds = [\"127.0.0.1:1\"]\n{catalog}"
            ),
            "set reports.shards",
        ),
    ] {
        let lonely = config_file(dir.path(), "lonely", &toml);
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cluster-agent"))
            .args([role, "--config", &lonely])
            .env_clear()
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
    }

    // The seed (the shard) says where it is; everyone else finds this host's address on the
    // route to it: the gateway through gossip, the TaskManagers through their report target.
    let shard = config_file(
        dir.path(),
        "jm-0",
        &format!(
            "{cluster}[node]\nid = \"jm-0\"\n[jobmanager]\nlisten = \"0.0.0.0:0\"\nadvertise = \"127.0.0.1\"\nadmin_listen = \"0.0.0.0:0\"\nadmin_advertise = \"127.0.0.1\"\n{gossip}advertise = \"127.0.0.1\"\n{catalog}"
        ),
    );
    let shard = Process::start("jm-0", &["jobmanager", "--config", &shard], dir.path());
    let seeds = format!("seeds = [\"{}\"]\n", shard.addresses["gossip"]);
    assert!(seeds.contains("127.0.0.1:"), "{seeds}");
    let shard_port = shard.addresses["grpc"]
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let reports = format!("[reports]\nshards = [\"127.0.0.1:{shard_port}\"]\ninterval_ms = 100\n");
    let taskmanager = |name: &str| {
        config_file(
            dir.path(),
            name,
            &format!(
                "{cluster}[node]\nid = \"{name}\"\n[taskmanager]\nlisten = \"0.0.0.0:0\"\nadmin_listen = \"0.0.0.0:0\"\n{gossip}{reports}{catalog}"
            ),
        )
    };
    let gateway = config_file(
        dir.path(),
        "gateway",
        &format!("{cluster}[http]\nlisten = \"0.0.0.0:0\"\n{gossip}{seeds}"),
    );
    let _processes = [
        shard,
        Process::start(
            "tm-0",
            &["taskmanager", "--config", &taskmanager("tm-0")],
            dir.path(),
        ),
        Process::start(
            "tm-1",
            &["taskmanager", "--config", &taskmanager("tm-1")],
            dir.path(),
        ),
    ];
    let gateway = Process::start("gateway", &["gateway", "--config", &gateway], dir.path());
    let port = gateway.addresses["http"].rsplit_once(':').unwrap().1;
    let url = format!("http://127.0.0.1:{port}");

    // Every address gossip and the reports carry is this host's, and the cluster answers
    // through them.
    let cluster_url = format!("{url}/v1/cluster");
    let mut view = serde_json::Value::Null;
    let converged = common::eventually(Duration::from_secs(20), async || {
        view = common::http("GET", &cluster_url, &[], bytes::Bytes::new())
            .await
            .json();
        view["members"].as_array().is_some_and(|members| {
            members.len() == 2 && members.iter().all(|member| member["starting"] == false)
        }) && view["taskmanagers"]["counts"]["up"] == 2
    })
    .await;
    assert!(converged, "the gateway did not see all 4 members: {view}");
    let taskmanagers = view["taskmanagers"]["members"].as_array().unwrap();
    for member in view["members"]
        .as_array()
        .unwrap()
        .iter()
        .chain(taskmanagers)
    {
        for key in ["grpc_url", "http_addr", "admin_addr", "gossip_addr"] {
            if let Some(address) = member[key].as_str() {
                assert!(
                    address.contains("127.0.0.1:") && !address.contains("0.0.0.0"),
                    "{key} of {member}"
                );
            }
        }
    }
    let response = query(&url, ORDERS_BY_PRIORITY, &[]).await;
    assert_orders(&response);
}
