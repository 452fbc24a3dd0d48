//! TPC-H across hosts: every member on its own host and address, answers equal to in-process
//! DataFusion, and gossip carrying only the hosts' own addresses.

use crate::cluster::{HOSTS, TASKMANAGERS, on_hosts};
use crate::common::{self, compare::assert_same};
use futures::TryStreamExt;

#[test]
fn tpch_across_six_hosts_equals_in_process_datafusion() {
    on_hosts(async |cluster| {
        let view = common::http(
            "GET",
            &format!("{}/v1/cluster", cluster.url),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .json();
        let hosts: Vec<String> = HOSTS
            .iter()
            .map(|name| format!("{}:", cluster.world.host(name).ip))
            .collect();
        for member in &common::all_members(&view) {
            for key in ["grpc_url", "http_addr", "admin_addr", "gossip_addr"] {
                if let Some(address) = member[key].as_str() {
                    assert!(
                        hosts.iter().any(|host| address.contains(host.as_str())),
                        "{key} of {member} is no test host's address"
                    );
                }
            }
        }

        let reference = common::reference_context().await;
        let client = flotilla_client::Client::new(&cluster.url).unwrap();
        for (name, sql) in common::samples() {
            let expected = reference.sql(&sql).await.unwrap().collect().await.unwrap();
            let batches: Vec<_> = match client.query(&sql).await {
                Ok(stream) => stream.try_collect().await,
                Err(error) => Err(error),
            }
            .unwrap_or_else(|error| {
                cluster.dump_logs();
                panic!("{name}: {error}")
            });
            assert_same(&name, &batches, &expected, common::is_ordered(&sql));
        }
        // The big tables' scans span both TaskManagers: each ran stage tasks for the other.
        for name in TASKMANAGERS {
            let state = cluster.state(name).await.expect("a TaskManager's state");
            assert!(
                state["tasks_total"].as_u64().unwrap_or(0) > 0,
                "{name} ran no stage task: {state}"
            );
        }
    });
}
