//! Tests of slot leasing: sizing, power of two choices, unanswered calls.

use super::*;
use crate::jobmanager::candidates::power_of_two_order;
use flotilla_cluster::StaticMembership;
use flotilla_cluster::reports::Choice;
use flotilla_protocol::DEFAULT_POOL;

/// A shard's leaser over a fixed list of TaskManagers.
fn leaser(urls: &[String]) -> SlotLeaser {
    SlotLeaser::new(
        "jm-0".into(),
        TaskManagers::Static(StaticMembership::new(urls.to_vec())),
        JobManagerConfig::default(),
        JobManagerMetrics::new(&prometheus::Registry::new()).unwrap(),
        flotilla_cluster::ClusterSecret::default(),
    )
}

#[test]
fn a_query_is_sized_for_one_taskmanager_per_host_unless_spreading() {
    let urls = || {
        [
            "http://10.0.0.1:1",
            "http://10.0.0.1:2",
            "http://10.0.0.2:1",
        ]
        .map(String::from)
        .into_iter()
    };
    let one: Vec<String> = one_per_host(urls(), true).collect();
    assert_eq!(one, ["http://10.0.0.1:1", "http://10.0.0.2:1"]);
    assert_eq!(one_per_host(urls(), false).count(), 3);
}

#[test]
fn a_taskmanager_with_unanswered_calls_looks_that_much_fuller() {
    let urls = ["http://tm-0:1", "http://tm-1:1"].map(String::from);
    let leaser = leaser(&urls);
    let first = |leaser: &SlotLeaser| -> Vec<String> {
        (0..20)
            .map(|_| leaser.choose(DEFAULT_POOL, 2, &[])[0].clone())
            .collect()
    };
    assert!(first(&leaser).contains(&urls[1]), "either may come first");
    let stuck = [
        leaser.unanswered.open(&urls[1]),
        leaser.unanswered.open(&urls[1]),
    ];
    // Power of two choices now always prefers the TaskManager that answers.
    assert!(first(&leaser).iter().all(|url| *url == urls[0]));
    drop(stuck);
    assert!(leaser.unanswered.is_empty());
}

#[test]
fn a_hedge_avoids_the_taskmanagers_its_first_attempt_waits_on() {
    let urls = ["http://tm-0:1", "http://tm-1:1", "http://tm-2:1"].map(String::from);
    let leaser = leaser(&urls);
    for _ in 0..20 {
        let chosen = leaser.choose(DEFAULT_POOL, 3, &urls[..2]);
        assert_eq!(chosen, [urls[2].clone()]);
    }
    // Every one avoided: only the one the shard has the fewest unanswered calls to.
    let stuck = leaser.unanswered.open(&urls[0]);
    let others = [
        leaser.unanswered.open(&urls[2]),
        leaser.unanswered.open(&urls[2]),
    ];
    for _ in 0..20 {
        assert_eq!(leaser.choose(DEFAULT_POOL, 3, &urls), [urls[1].clone()]);
    }
    // Silent for 100 ms: skipped while another is left, even unavoided.
    std::thread::sleep(super::super::unanswered::SILENT_AFTER);
    for _ in 0..20 {
        let chosen = leaser.choose(DEFAULT_POOL, 3, &[]);
        assert_eq!(chosen, [urls[1].clone()], "tm-0 and tm-2 left calls open");
    }
    drop((stuck, others));
}

#[test]
fn power_of_two_prefers_free_slots_and_keeps_everyone() {
    let candidates = |free: &[u64]| {
        free.iter()
            .enumerate()
            .map(|(index, free)| Choice {
                url: format!("tm{index}"),
                slots_free: *free,
            })
            .collect::<Vec<_>>()
    };
    // Samples 0 and 1 first: the freer wins.
    let mut picks = [0usize, 1, 0, 0].into_iter();
    let order = power_of_two_order(candidates(&[0, 3]), move || picks.next().unwrap());
    assert_eq!(order, vec!["tm1", "tm0"]);
    let mut counter = 0usize;
    let order = power_of_two_order(candidates(&[1, 2, 3, 4, 5]), move || {
        counter += 7;
        counter
    });
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["tm0", "tm1", "tm2", "tm3", "tm4"]);
}
