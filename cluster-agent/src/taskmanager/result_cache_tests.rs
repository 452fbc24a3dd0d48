use super::*;
use bytes::Bytes;

fn message(bytes: usize) -> FlightData {
    FlightData {
        data_body: Bytes::from(vec![7; bytes]),
        ..FlightData::default()
    }
}

fn cache(capacity: usize) -> Arc<ResultCache> {
    Arc::new(ResultCache::new(capacity, &Registry::new()).unwrap())
}

fn fill(cache: &Arc<ResultCache>, id: &str, bytes: usize) {
    let mut filler = cache.start(id).expect("a new entry");
    filler.push(&message(bytes));
    filler.finish();
}

const NOW: Duration = Duration::ZERO;

#[tokio::test]
async fn a_finished_result_is_served_from_memory_and_a_failed_one_never() {
    let cache = cache(8_000);
    fill(&cache, "a", 100);
    let (stored, waited) = cache.get("a", NOW, NOW).await.unwrap();
    assert_eq!(
        (stored.messages.len(), stored.bytes, waited),
        (1, 100, false)
    );
    assert!(cache.start("a").is_none(), "an id is filled once");

    let mut failed = cache.start("b").unwrap();
    failed.push(&message(10));
    drop(failed);
    assert!(
        cache.get("b", NOW, NOW).await.is_err(),
        "a stream that broke is not kept"
    );
    assert!(cache.get("never", NOW, NOW).await.is_err());
}

#[tokio::test]
async fn readers_that_come_while_it_runs_wait_and_get_the_same_result() {
    let cache = cache(8_000);
    let mut filler = cache.start("q").unwrap();
    let waiters: Vec<_> = (0..5)
        .map(|_| {
            let cache = Arc::clone(&cache);
            flotilla_cluster::spawn_instrumented(async move {
                cache
                    .get("q", Duration::from_secs(10), Duration::from_secs(10))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    filler.push(&message(50));
    filler.push(&message(60));
    filler.finish();
    for waiter in waiters {
        let (stored, waited) = waiter.await.unwrap().unwrap();
        assert!(waited);
        assert_eq!(stored.bytes, 110);
    }
    // Waited for: hot, so in the main region.
    assert_eq!(cache.json()["main"]["entries"], 1);

    // A first run that fails sends its waiters to run the statement themselves.
    let filler = cache.start("r").unwrap();
    let waiter = {
        let cache = Arc::clone(&cache);
        flotilla_cluster::spawn_instrumented(async move {
            cache
                .get("r", Duration::from_secs(10), Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(filler);
    assert_eq!(waiter.await.unwrap().unwrap_err(), "failed");
}

#[tokio::test]
async fn a_result_larger_than_the_window_is_not_kept_and_its_waiters_are_let_go_at_once() {
    let cache = cache(8_000); // window: 1,000 bytes
    let mut filler = cache.start("big").unwrap();
    let waiter = {
        let cache = Arc::clone(&cache);
        flotilla_cluster::spawn_instrumented(async move {
            cache
                .get("big", Duration::from_secs(10), Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    filler.push(&message(600));
    filler.push(&message(600));
    // Released before the stream ends: they need not wait for a result nobody keeps.
    assert_eq!(waiter.await.unwrap().unwrap_err(), "too_large");
    filler.push(&message(600));
    filler.finish();
    assert!(cache.get("big", NOW, NOW).await.is_err());
}

#[tokio::test]
async fn results_run_once_cannot_push_out_results_asked_for_twice() {
    let cache = cache(8_000); // window 1,000 bytes, main 7,000
    for n in 0..6 {
        fill(&cache, &format!("hot{n}"), 900);
        // Asked for again: promoted.
        cache.get(&format!("hot{n}"), NOW, NOW).await.unwrap();
    }
    // A stream of statements run once each: only the window churns.
    for n in 0..50 {
        fill(&cache, &format!("once{n}"), 900);
    }
    for n in 0..6 {
        assert!(
            cache.get(&format!("hot{n}"), NOW, NOW).await.is_ok(),
            "hot{n} kept"
        );
    }
    assert!(
        cache.get("once49", NOW, NOW).await.is_ok(),
        "the newest once-run result is in the window"
    );
    assert!(cache.get("once10", NOW, NOW).await.is_err());
    let state = cache.json();
    assert!(state["main"]["bytes"].as_u64().unwrap() <= 7_000);
    assert!(state["window"]["bytes"].as_u64().unwrap() <= 1_000);

    let off = self::cache(0);
    assert!(off.start("x").is_none(), "a cache of 0 bytes keeps nothing");
}

#[tokio::test]
async fn a_first_run_its_gateway_never_fetched_is_not_waited_for() {
    let cache = cache(8_000);
    let filler = cache.start("lost").unwrap();
    let short = Duration::from_millis(30);
    let long = Duration::from_secs(10);
    assert_eq!(
        cache.get("lost", short, long).await.unwrap_err(),
        "its first run was never fetched"
    );
    // Fetched: readers wait for the run itself, however long it takes.
    filler.running();
    let waiter = {
        let cache = Arc::clone(&cache);
        flotilla_cluster::spawn_instrumented(async move { cache.get("lost", short, long).await })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut filler = filler;
    filler.push(&message(10));
    filler.finish();
    assert!(waiter.await.unwrap().is_ok());
}
