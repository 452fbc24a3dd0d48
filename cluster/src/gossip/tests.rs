//! Gossip with real UDP sockets on loopback: joins, load, drain and leave.

use super::*;

fn info(id: &str, role: NodeRole) -> NodeInfo {
    NodeInfo {
        id: id.to_string(),
        role,
        version: "test".to_string(),
        grpc_url: Some(format!("http://{id}")),
        http_addr: None,
        admin_addr: None,
        pool: None,
        draining: false,
        starting: false,
        previous_exit: None,
    }
}

fn fixed_load(slots_free: u64) -> LoadSource {
    Arc::new(move || NodeLoad {
        slots_free,
        ..NodeLoad::default()
    })
}

async fn wait_for(gossip: &Gossip, what: &str, check: impl Fn(&[Peer]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check(&gossip.view()) {
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn members_join_start_publish_load_drain_and_leave() {
    let config = GossipConfig {
        interval_ms: 50,
        ..GossipConfig::default()
    };
    let sealer = || Sealer::new(&"s3cret".into(), crate::keys::Traffic::Gossip);
    let first = Gossip::start(
        config.clone(),
        sealer(),
        info("tm-1", NodeRole::TaskManager),
        fixed_load(3),
    )
    .await
    .unwrap();
    let second = Gossip::start(
        GossipConfig {
            seeds: vec![first.addr().to_string()],
            ..config.clone()
        },
        sealer(),
        NodeInfo {
            starting: true,
            previous_exit: None,
            ..info("jm-1", NodeRole::JobManager)
        },
        fixed_load(0),
    )
    .await
    .unwrap();
    wait_for(&second, "the taskmanager with its load", |peers| {
        peers
            .iter()
            .any(|peer| peer.info.id == "tm-1" && peer.load.slots_free == 3)
    })
    .await;
    wait_for(&first, "the jobmanager", |peers| peers.len() == 2).await;
    assert_eq!(second.serving(NodeRole::TaskManager).len(), 1);
    // Joined while starting: seen, but given no work until it says it is ready.
    assert!(first.serving(NodeRole::JobManager).is_empty());
    second.set_ready().await;
    wait_for(&first, "the jobmanager ready", |peers| {
        peers
            .iter()
            .any(|peer| peer.info.id == "jm-1" && !peer.info.starting)
    })
    .await;
    assert_eq!(first.serving(NodeRole::JobManager).len(), 1);

    first.set_draining().await;
    wait_for(&second, "the drain flag", |peers| {
        peers
            .iter()
            .any(|peer| peer.info.id == "tm-1" && peer.info.draining)
    })
    .await;
    assert!(second.serving(NodeRole::TaskManager).is_empty());

    // A process with another secret, seeded by a member, never joins either side's view.
    let forged_before = crate::keys::refused(
        crate::keys::Traffic::Gossip,
        crate::keys::Refused::UnknownKey,
    );
    let stranger = Gossip::start(
        GossipConfig {
            seeds: vec![first.addr().to_string()],
            ..config
        },
        Sealer::new(&"other".into(), crate::keys::Traffic::Gossip),
        info("jm-2", NodeRole::JobManager),
        fixed_load(0),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(first.view().len(), 2, "the stranger stays out");
    assert_eq!(stranger.view().len(), 1, "and sees no one");
    assert!(
        crate::keys::refused(
            crate::keys::Traffic::Gossip,
            crate::keys::Refused::UnknownKey
        ) > forged_before,
        "its datagrams are counted"
    );
    stranger.shutdown().await;

    first.shutdown().await;
    wait_for(&second, "the taskmanager leave", |peers| peers.len() == 1).await;
}
