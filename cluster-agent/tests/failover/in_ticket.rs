//! The lease protocol with the hand-over in the ticket: nothing is held until the ticket is
//! presented, a refusal comes before the first byte and holds nothing, a ticket is taken once,
//! the slots come back when the stream ends, and a gateway whose ticket is refused gets its
//! answer through a hand-over that waits in the shard's queue.

use crate::common::internal::{plan_in_ticket, signed};
use crate::common::{self, Federation, state};
use arrow_flight::{Action, Ticket};
use cluster_agent::{LeaseIds, RELEASE_ACTION, RESERVE_ACTION, ReserveRequest};
use flotilla_protocol::{ErrorBody, ErrorCode, HANDOVER_TICKET_PREFIX};
use prost::Message;
use std::time::Duration;

/// Slots each TaskManager of the test federation offers.
const SLOTS: u64 = 4;

async fn slots_used(federation: &Federation) -> u64 {
    state(&federation.taskmanagers[0]).await["slots"]["slots_used"]
        .as_u64()
        .unwrap()
}

/// Waits (at most 5 s) until no slot is leased.
async fn all_slots_free(federation: &Federation) -> bool {
    common::eventually(Duration::from_secs(5), async || {
        slots_used(federation).await == 0
    })
    .await
}

/// Takes every slot of the TaskManager at `url` under the lease `hold`, for `ttl`.
async fn hold_all_slots(url: &str, secret: &str, hold: &str, ttl: Duration) {
    let request = ReserveRequest {
        lease_id: hold.into(),
        query_id: "test".into(),
        slots: SLOTS,
        ttl_ms: ttl.as_millis() as u64,
        holder: "test".into(),
    };
    signed(url, secret)
        .await
        .do_action(Action::new(RESERVE_ACTION, request.encode_to_vec()))
        .await
        .expect("every slot reserved");
}

async fn release(url: &str, secret: &str, hold: &str) {
    let request = LeaseIds {
        lease_ids: vec![hold.into()],
        ttl_ms: 0,
    };
    signed(url, secret)
        .await
        .do_action(Action::new(RELEASE_ACTION, request.encode_to_vec()))
        .await
        .expect("released");
}

/// Presents `ticket` and returns the error code of the refusal.
async fn refusal(head: &str, secret: &str, ticket: Ticket) -> ErrorCode {
    let status = signed(head, secret)
        .await
        .do_get(ticket)
        .await
        .expect_err("refused before the first byte");
    ErrorBody::from(&status).code
}

async fn outcomes(federation: &Federation) -> [f64; 3] {
    let url = format!("{}/metrics", federation.taskmanagers[0].admin_url());
    let mut counts = [0.0; 3];
    for (count, outcome) in counts.iter_mut().zip(["run", "busy", "refused"]) {
        let series =
            format!("flotilla_taskmanager_handovers_in_ticket_total{{outcome=\"{outcome}\"}}");
        *count = common::metric_sum(&url, &series).await;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_in_its_ticket_keeps_the_lease_guarantees() {
    let federation = Federation::start_with(1, 1);
    let shard = federation.shards[0].grpc_url();
    let secret = federation.secret.clone();
    let before = outcomes(&federation).await;

    // Issued: sealed, and nothing reserved or kept on the TaskManager for it.
    let (head, ticket) = plan_in_ticket(&shard, &secret).await;
    assert!(ticket.ticket.starts_with(HANDOVER_TICKET_PREFIX));
    let sealed = &ticket.ticket[HANDOVER_TICKET_PREFIX.len()..];
    assert!(
        !sealed.windows(6).any(|window| window == b"region"),
        "the plan inside is sealed"
    );
    let view = state(&federation.taskmanagers[0]).await;
    assert_eq!(view["slots"]["slots_used"], 0, "{view}");
    assert_eq!(view["pending_tickets"], 0, "{view}");

    // Altered: refused.
    let mut forged = ticket.ticket.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        refusal(&head, &secret, Ticket::new(forged)).await,
        ErrorCode::TicketNotFound
    );

    // No free slot when presented: `cluster_busy` before the first byte, nothing reserved for
    // it (only the test's own lease holds slots), and the ticket is spent.
    hold_all_slots(&head, &secret, "test-hold", Duration::from_secs(30)).await;
    assert_eq!(
        refusal(&head, &secret, ticket.clone()).await,
        ErrorCode::ClusterBusy
    );
    assert_eq!(slots_used(&federation).await, SLOTS);
    release(&head, &secret, "test-hold").await;
    assert_eq!(slots_used(&federation).await, 0);
    assert_eq!(
        refusal(&head, &secret, ticket).await,
        ErrorCode::TicketNotFound,
        "a ticket is taken once, even a refused one"
    );

    // Presented: reserved, streamed whole, then the slots come back.
    let (head, ticket) = plan_in_ticket(&shard, &secret).await;
    let mut stream = signed(&head, &secret)
        .await
        .do_get(ticket.clone())
        .await
        .expect("served")
        .into_inner();
    let mut messages = 0;
    while stream.message().await.unwrap().is_some() {
        messages += 1;
    }
    assert!(messages >= 2, "schema and a batch");
    assert_eq!(
        refusal(&head, &secret, ticket).await,
        ErrorCode::TicketNotFound,
        "served once"
    );
    assert!(
        all_slots_free(&federation).await,
        "the slots come back when the stream ends"
    );

    // Through the gateway while every slot is taken for a second: the answer is exact and
    // complete once they are free (a refused ticket is asked again as a hand-over, which
    // waits in the shard's queue), and nothing stays leased.
    hold_all_slots(&head, &secret, "test-hold-2", Duration::from_secs(1)).await;
    let response = common::query_json(
        &federation.url(),
        "SELECT count(*) AS n FROM region",
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(response.json()[0]["n"], 5);
    if !all_slots_free(&federation).await {
        let view = state(&federation.taskmanagers[0]).await;
        panic!("nothing stays leased: {}", view["leases"]);
    }
    let after = outcomes(&federation).await;
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    println!("hand-overs in tickets: run, busy, refused = {delta:?}");
    assert!(
        delta[0] >= 1.0 && delta[1] >= 1.0 && delta[2] >= 3.0,
        "{delta:?}"
    );
}
