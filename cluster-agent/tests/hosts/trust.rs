//! Only members speak for the cluster. The switch between the test hosts is recorded while
//! queries run: neither the cluster secret nor a key derived from it crosses it. Then an
//! impostor on the client host, which knows the cluster id and the wire formats, sends well-
//! formed datagrams: a TaskManager with free slots, a real TaskManager's report at a new
//! address, a gossip member claiming a real shard's id at its own address (each unsealed and
//! sealed with another secret), and genuine datagrams of the recording played again. Nothing
//! changes: no shard lists the impostor or the new address, the gateway's view keeps every
//! member where it was, answers stay exact, and every refusal is counted.

use crate::cluster::{HostCluster, on_hosts};
use crate::common::{self, compare::assert_same};
use flotilla_cluster::keys::{Sealer, Traffic, derive_key};
use flotilla_cluster::reports::{Datagram, Report, cluster_tag};
use flotilla_protocol::{NodeInfo, NodeRole};
use futures::TryStreamExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const GOSSIP_PORT: u16 = 7946;
const GRPC_PORT: u16 = 50051;
const ADMIN_PORT: u16 = 9090;
const SQL: &str = "SELECT l_returnflag, count(*) AS n, sum(l_quantity) AS q FROM lineitem \
                   GROUP BY l_returnflag ORDER BY l_returnflag";

/// `flotilla_cluster_refused_total{traffic, reason}` of one member.
async fn refused(cluster: &HostCluster, name: &str, traffic: &str, reason: &str) -> u64 {
    let url = format!(
        "http://{}:{ADMIN_PORT}/metrics",
        cluster.world.host(name).ip
    );
    let text = common::http("GET", &url, &[], bytes::Bytes::new())
        .await
        .body;
    String::from_utf8_lossy(&text)
        .lines()
        .find(|line| {
            line.starts_with("flotilla_cluster_refused_total{")
                && line.contains(&format!("traffic=\"{traffic}\""))
                && line.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Every TaskManager a shard lists: id → (gRPC URL, generation).
async fn table(cluster: &HostCluster, shard: &str) -> BTreeMap<String, (String, u64)> {
    let state = cluster.state(shard).await.expect("a shard's state");
    state["taskmanagers"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            (
                member["id"].as_str().unwrap().to_string(),
                (
                    member["grpc_url"].as_str().unwrap().to_string(),
                    member["generation"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// The gateway's gossip view: id → gRPC URL (gateways and shards).
async fn gossip_view(cluster: &HostCluster) -> BTreeMap<String, String> {
    let view = common::http(
        "GET",
        &format!("{}/v1/cluster", cluster.url),
        &[],
        bytes::Bytes::new(),
    )
    .await
    .json();
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| {
            (
                member["id"].as_str().unwrap().to_string(),
                member["grpc_url"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn exact_answers(cluster: &HostCluster, times: usize) {
    let expected = common::reference_batches(SQL).await;
    let client = flotilla_client::Client::new(&cluster.url).unwrap();
    for _ in 0..times {
        let batches: Vec<_> = client
            .query(SQL)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_same("returnflags", &batches, &expected, true);
    }
}

fn report(id: &str, grpc_url: &str, generation: u64) -> Vec<u8> {
    Datagram::Report(Report {
        cluster: cluster_tag("flotilla"),
        id: id.into(),
        generation,
        seq: 1,
        grpc_url: grpc_url.into(),
        admin_addr: String::new(),
        pool: "default".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        previous_exit: String::new(),
        slots_total: 64,
        slots_free: 64,
        in_flight: 0,
        draining: false,
        starting: false,
        shards_hash: 0,
    })
    .encode()
    .unwrap()
}

#[test]
fn impostors_change_nothing_and_no_secret_crosses_the_switch() {
    on_hosts(async |cluster| {
        let dir = tempfile::tempdir().unwrap();
        let capture = cluster.world.capture(dir.path());
        exact_answers(&cluster, 5).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let frames = capture.stop();

        // What the recording holds: gossip, reports and internal calls.
        let udp_to = |port: u16| -> Vec<(SocketAddr, Vec<u8>)> {
            frames
                .iter()
                .filter_map(|frame| frame.udp.as_ref())
                .filter(|(_, to, _)| to.port() == port)
                .map(|(_, to, payload)| (SocketAddr::V4(*to), payload.clone()))
                .collect()
        };
        let (gossip, reports) = (udp_to(GOSSIP_PORT), udp_to(GRPC_PORT));
        let calls = frames
            .iter()
            .filter(|frame| frame.tcp_to == Some(GRPC_PORT))
            .count();
        println!(
            "recorded {} frames: {} gossip datagrams, {} reports, {} segments of internal calls",
            frames.len(),
            gossip.len(),
            reports.len(),
            calls
        );
        assert!(gossip.len() > 20 && reports.len() > 10 && calls > 20);

        // Neither the secret nor a key derived from it, raw or in hex.
        let mut needles = vec![cluster.secret.as_bytes().to_vec()];
        for traffic in [Traffic::Gossip, Traffic::Reports, Traffic::Calls] {
            let key = derive_key(&cluster.secret, traffic);
            let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
            needles.push(key.to_vec());
            needles.push(hex.into_bytes());
        }
        for frame in &frames {
            for needle in &needles {
                assert!(
                    !frame
                        .bytes
                        .windows(needle.len())
                        .any(|window| window == needle.as_slice()),
                    "a secret crossed the switch"
                );
            }
        }

        // The impostor, on the client host.
        let shards = ["jm-0", "jm-1"];
        let tables_before = [table(&cluster, "jm-0").await, table(&cluster, "jm-1").await];
        let view_before = gossip_view(&cluster).await;
        let mut before = BTreeMap::new();
        for shard in shards {
            for (traffic, reason) in [
                ("reports", "unsealed"),
                ("reports", "unknown_key"),
                ("reports", "replayed"),
                ("gossip", "unsealed"),
                ("gossip", "unknown_key"),
                ("gossip", "replayed"),
            ] {
                let count = refused(&cluster, shard, traffic, reason).await;
                before.insert((shard, traffic, reason), count);
            }
        }
        let client_ip = cluster.world.host("client").ip;
        let socket = tokio::net::UdpSocket::bind((client_ip, 0)).await.unwrap();
        let stranger = Sealer::new(&"not the secret".into(), Traffic::Reports);
        let tm0_generation = tables_before[0]["tm-0"].1;
        let forged = [
            report("impostor", &format!("http://{client_ip}:{GRPC_PORT}"), 1),
            report(
                "tm-0",
                &format!("http://{client_ip}:{GRPC_PORT}"),
                tm0_generation + 1,
            ),
        ];
        for shard in shards {
            let to = SocketAddr::from((cluster.world.host(shard).ip, GRPC_PORT));
            for datagram in &forged {
                socket.send_to(datagram, to).await.unwrap();
                let sealed = stranger.seal(datagram, flotilla_cluster::keys::unix_ms());
                socket.send_to(&sealed, to).await.unwrap();
            }
        }
        // The last genuine reports and gossip datagrams to each member, played again.
        let mut replayed = BTreeMap::new();
        for (to, payload) in reports.iter().chain(&gossip).rev() {
            replayed.entry(*to).or_insert_with(|| payload.clone());
        }
        for (to, payload) in &replayed {
            socket.send_to(payload, to).await.unwrap();
        }
        // Gossip members claiming jm-1's id at the client's address: one unsealed, one sealed
        // with another secret.
        let seed = format!("{}:{GOSSIP_PORT}", cluster.world.host("jm-0").ip);
        let mut impostors = Vec::new();
        for (port, sealer) in [
            (GOSSIP_PORT, Sealer::open_cluster()),
            (
                GOSSIP_PORT + 1,
                Sealer::new(&"not the secret".into(), Traffic::Gossip),
            ),
        ] {
            let info = NodeInfo {
                id: "jm-1".into(),
                role: NodeRole::JobManager,
                version: env!("CARGO_PKG_VERSION").into(),
                grpc_url: Some(format!("http://{client_ip}:{GRPC_PORT}")),
                http_addr: None,
                admin_addr: None,
                pool: None,
                draining: false,
                starting: false,
                previous_exit: None,
            };
            let config = flotilla_cluster::GossipConfig {
                listen: SocketAddr::from((client_ip, port)),
                seeds: vec![seed.clone()],
                ..flotilla_cluster::GossipConfig::default()
            };
            let load = std::sync::Arc::new(flotilla_protocol::NodeLoad::default);
            impostors.push(
                flotilla_cluster::Gossip::start(config, sealer, info, load)
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Nothing changed.
        for impostor in &impostors {
            assert_eq!(impostor.view().len(), 1, "the impostor learnt no member");
        }
        for impostor in impostors {
            impostor.shutdown().await;
        }
        for (index, shard) in shards.iter().enumerate() {
            let after = table(&cluster, shard).await;
            assert_eq!(after, tables_before[index], "{shard}'s TaskManagers");
        }
        assert_eq!(
            gossip_view(&cluster).await,
            view_before,
            "the gateway's view"
        );
        exact_answers(&cluster, 3).await;
        for shard in shards {
            for (traffic, reason) in [
                ("reports", "unsealed"),
                ("reports", "unknown_key"),
                ("reports", "replayed"),
            ] {
                let after = refused(&cluster, shard, traffic, reason).await;
                let was = before[&(shard, traffic, reason)];
                println!("{shard}: {traffic} refused as {reason}: {was} -> {after}");
                assert!(
                    after > was,
                    "{shard} counted no {traffic} refused as {reason}"
                );
            }
        }
        for (traffic, reason) in [
            ("gossip", "unsealed"),
            ("gossip", "unknown_key"),
            ("gossip", "replayed"),
        ] {
            let after = refused(&cluster, "jm-0", traffic, reason).await;
            let was = before[&("jm-0", traffic, reason)];
            println!("jm-0: {traffic} refused as {reason}: {was} -> {after}");
            assert!(after > was, "jm-0 counted no {traffic} refused as {reason}");
        }
    });
}
