//! Many TaskManagers across hosts: 40 TaskManagers (10 on each of four hosts) report to two
//! shards on hosts of their own, MTU 1500. Every shard can choose all 40, the short mix answers
//! what in-process DataFusion answers, and no host fragmented a datagram (the kernel's
//! `Ip: FragCreates`, counted on every host).

use super::net::World;
use crate::common::{self, Process};
use std::time::{Duration, Instant};

const TASKMANAGER_HOSTS: [&str; 4] = ["tm-a", "tm-b", "tm-c", "tm-d"];
const PER_HOST: u16 = 10;
const GRPC_PORT: u16 = 50051;
const GOSSIP_PORT: u16 = 7946;

/// `Ip: FragCreates` of the host `name`: datagrams its kernel split into fragments.
fn fragments_created(world: &World, name: &str) -> u64 {
    let output = world
        .host(name)
        .command("cat")
        .arg("/proc/net/snmp")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    lines
        .windows(2)
        .find(|pair| pair[0].first() == Some(&"Ip:") && pair[1].first() == Some(&"Ip:"))
        .and_then(|pair| {
            let column = pair[0].iter().position(|field| *field == "FragCreates")?;
            pair[1].get(column)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no Ip: FragCreates on {name}: {text}"))
}

#[test]
fn forty_taskmanagers_across_hosts_send_no_fragmented_datagram() {
    let mut names = vec!["client", "gateway", "jm-0", "jm-1"];
    names.extend(TASKMANAGER_HOSTS);
    let Some(world) = World::for_test(&names) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let catalog = common::catalog_toml(&common::tpch_dir());
    let cluster = format!(
        "[cluster]\nsecret = \"{}\"\n",
        uuid::Uuid::new_v4().simple()
    );
    let shard_ips = [world.host("jm-0").ip, world.host("jm-1").ip];
    let seeds = format!("seeds = [\"{}:{GOSSIP_PORT}\"]\n", shard_ips[0]);
    let reports = format!(
        "[reports]\nshards = [\"{}:{GRPC_PORT}\", \"{}:{GRPC_PORT}\"]\n",
        shard_ips[0], shard_ips[1]
    );
    let start = |host: &str, name: &str, role: &str, toml: String| -> Process {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let mut command = world
            .host(host)
            .command(env!("CARGO_BIN_EXE_cluster-agent"));
        command.args([role, "--config", path.to_str().unwrap()]);
        Process::start_command(name, command, dir.path())
    };
    let mut processes = Vec::new();
    for (index, host) in ["jm-0", "jm-1"].into_iter().enumerate() {
        let advertise = if index == 0 {
            format!("advertise = \"{}\"\n", shard_ips[0])
        } else {
            String::new()
        };
        processes.push(start(host, host, "jobmanager", format!(
            "{cluster}[node]\nid = \"{host}\"\n[jobmanager]\nlisten = \"0.0.0.0:{GRPC_PORT}\"\nadmin_listen = \"0.0.0.0:9090\"\n{advertise}\
             [gossip]\nlisten = \"0.0.0.0:{GOSSIP_PORT}\"\n{seeds}{advertise}{reports}{catalog}"
        )));
    }
    for host in TASKMANAGER_HOSTS {
        for slot in 0..PER_HOST {
            let name = format!("{host}-{slot}");
            processes.push(start(host, &name, "taskmanager", format!(
                "{cluster}[node]\nid = \"{name}\"\n[taskmanager]\nlisten = \"0.0.0.0:{}\"\nadmin_listen = \"0.0.0.0:{}\"\nslots = 1\n\
                 [gossip]\nlisten = \"0.0.0.0:{}\"\n{reports}{catalog}",
                GRPC_PORT + slot, 9090 + slot, GOSSIP_PORT + slot
            )));
        }
    }
    processes.push(start("gateway", "gateway", "gateway", format!(
        "{cluster}[http]\nlisten = \"0.0.0.0:8080\"\n[gossip]\nlisten = \"0.0.0.0:{GOSSIP_PORT}\"\n{seeds}"
    )));
    let before: Vec<u64> = names
        .iter()
        .map(|name| fragments_created(&world, name))
        .collect();

    let client = world.host("client");
    client.enter();
    let url = format!("http://{}:8080", world.host("gateway").ip);
    let wanted = 40 + 2 + 1;
    let started = Instant::now();
    let mut seen = 0;
    while seen != wanted && started.elapsed() < Duration::from_secs(60) {
        seen = common::serving_members(&url, "");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(seen, wanted, "the gateway sees {seen} of {wanted} members");
    for ip in shard_ips {
        let state = common::blocking_get_json(&format!("http://{ip}:9090/v1/state"), "").unwrap();
        assert_eq!(
            state["taskmanagers"]["counts"]["up"], 40,
            "{ip} sees all 40"
        );
    }
    eprintln!(
        "40 TaskManagers on 4 hosts seen by both shards after {:?}",
        started.elapsed()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (name, sql) in common::short_samples() {
            let response =
                common::post_sql(&url, &sql, "application/vnd.apache.arrow.stream").await;
            assert_eq!(
                response.status,
                200,
                "{name}: {}",
                String::from_utf8_lossy(&response.body)
            );
            let expected = common::reference_batches(&sql).await;
            common::compare::assert_same(
                &name,
                &response.arrow(),
                &expected,
                common::is_ordered(&sql),
            );
        }
    });
    // A few more report rounds, then count.
    std::thread::sleep(Duration::from_secs(3));
    for (name, before) in names.iter().zip(before) {
        let created = fragments_created(&world, name) - before;
        assert_eq!(created, 0, "{name} fragmented {created} datagrams");
    }
    eprintln!("no host fragmented a datagram");
    drop(processes);
}
