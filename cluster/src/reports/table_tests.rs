use super::*;
use crate::reports::wire::{Report, cluster_tag};

fn times() -> TableTimes {
    TableTimes {
        suspect_after: Duration::from_millis(2500),
        forget_after: Duration::from_secs(30),
        down_for: Duration::from_secs(2),
    }
}

fn report(index: usize, generation: u64, seq: u64, free: u32) -> Report {
    Report {
        cluster: cluster_tag("flotilla"),
        id: format!("tm-{index}"),
        generation,
        seq,
        grpc_url: format!("http://127.0.0.1:{}", 20000 + index),
        admin_addr: String::new(),
        pool: "default".to_string(),
        version: "0".to_string(),
        previous_exit: String::new(),
        slots_total: 4,
        slots_free: free,
        in_flight: 0,
        draining: false,
        starting: false,
        shards_hash: 0,
    }
}

fn rng(seed: u64) -> impl FnMut() -> usize {
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as usize
    }
}

fn urls(table: &TaskManagerTable, limit: usize) -> Vec<String> {
    let mut random = rng(7);
    table
        .choose("default", limit, &|_| 0, &mut random)
        .into_iter()
        .map(|choice| choice.url)
        .collect()
}

#[test]
fn silence_passes_over_then_forgets_and_a_report_brings_back() {
    let start = Instant::now();
    let mut table = TaskManagerTable::new(times());
    assert_eq!(table.apply(report(1, 1, 1, 4), start), Applied::Joined);
    assert_eq!(table.apply(report(2, 1, 1, 4), start), Applied::Joined);
    let later = start + Duration::from_millis(1000);
    assert_eq!(table.apply(report(1, 1, 2, 4), later), Applied::Updated);
    let (suspected, forgotten) = table.sweep(start + Duration::from_millis(2600));
    assert_eq!(suspected, vec![Arc::from("tm-2")]);
    assert!(forgotten.is_empty());
    assert_eq!(urls(&table, 8), vec!["http://127.0.0.1:20001"]);
    let back = start + Duration::from_millis(2700);
    assert_eq!(table.apply(report(2, 1, 2, 4), back), Applied::Recovered);
    assert_eq!(urls(&table, 8).len(), 2);
    let (_, forgotten) = table.sweep(back + Duration::from_secs(31));
    assert_eq!(forgotten.len(), 2);
    assert!(table.is_empty());
    assert!(urls(&table, 8).is_empty());
}

#[test]
fn old_generations_and_late_reports_never_win() {
    let now = Instant::now();
    let mut table = TaskManagerTable::new(times());
    table.apply(report(1, 5, 10, 4), now);
    assert_eq!(table.apply(report(1, 5, 9, 0), now), Applied::Stale);
    assert_eq!(table.apply(report(1, 4, 99, 0), now), Applied::Stale);
    assert!(table.mark_down("http://127.0.0.1:20001", "reset", now));
    assert!(urls(&table, 1).is_empty(), "a failed call keeps it out");
    assert_eq!(table.apply(report(1, 5, 11, 4), now), Applied::Updated);
    assert!(
        urls(&table, 1).is_empty(),
        "a report of the same process does not lift it"
    );
    assert_eq!(table.apply(report(1, 6, 1, 4), now), Applied::Restarted);
    assert_eq!(urls(&table, 1).len(), 1, "a restart does");
    table.mark_down("http://127.0.0.1:20001", "reset", now);
    table.sweep(now + Duration::from_millis(2100));
    assert_eq!(urls(&table, 1).len(), 1, "the mark expires");
}

#[test]
fn draining_and_starting_members_are_not_chosen() {
    let now = Instant::now();
    let mut table = TaskManagerTable::new(times());
    let mut draining = report(1, 1, 1, 4);
    draining.draining = true;
    let mut starting = report(2, 1, 1, 4);
    starting.starting = true;
    table.apply(draining, now);
    table.apply(starting, now);
    table.apply(report(3, 1, 1, 4), now);
    assert_eq!(urls(&table, 8), vec!["http://127.0.0.1:20003"]);
    let (all, pools) = table.counts();
    assert_eq!((all.known, all.up, all.not_serving), (3, 1, 2));
    assert_eq!(pools["default"].slots_free, 4);
}

#[test]
fn large_pools_are_sampled_without_repeats_and_prefer_free_slots() {
    let now = Instant::now();
    let mut table = TaskManagerTable::new(times());
    for index in 0..5000 {
        table.apply(report(index, 1, 1, (index % 2) as u32 * 4), now);
    }
    let mut random = rng(11);
    let mut free = 0;
    for _ in 0..100 {
        let chosen = table.choose("default", 8, &|_| 0, &mut random);
        assert_eq!(chosen.len(), 8);
        let distinct: HashSet<&str> = chosen.iter().map(|choice| choice.url.as_str()).collect();
        assert_eq!(distinct.len(), 8);
        free += chosen.iter().filter(|choice| choice.slots_free > 0).count();
    }
    // Better of two: a member with free slots wins unless both sampled are full (1 in 4),
    // where one random member would have free slots half the time.
    assert!(free > 540, "{free} of 800 choices had free slots");
    // Calls in flight count against a member.
    let chosen = table.choose("default", 5000, &|_| 100, &mut random);
    assert!(chosen.iter().all(|choice| choice.slots_free == 0));
    let (total, page) = table.page(Some("up"), 0, 10, now);
    assert_eq!((total, page.len()), (5000, 10));
    assert!(
        page.iter().all(|row| row.report.slots_free == 0),
        "busiest first"
    );
    assert!(table.approx_bytes() < 5000 * 400);
}

#[test]
fn pool_members_follow_removals() {
    let now = Instant::now();
    let mut table = TaskManagerTable::new(times());
    for index in 0..200 {
        table.apply(report(index, 1, 1, 4), now);
    }
    for index in (0..200).step_by(3) {
        table.mark_down(&format!("http://127.0.0.1:{}", 20000 + index), "gone", now);
    }
    let chosen: HashSet<String> = table
        .choose("default", 200, &|_| 0, &mut rng(3))
        .into_iter()
        .map(|choice| choice.url)
        .collect();
    assert!(chosen.len() > 100, "{}", chosen.len());
    for index in (0..200).step_by(3) {
        assert!(!chosen.contains(&format!("http://127.0.0.1:{}", 20000 + index)));
    }
}
