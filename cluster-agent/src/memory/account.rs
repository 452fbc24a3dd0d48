//! Per-query allocation accounts: what a query's tasks allocate on this process, counted by the
//! allocator itself (jemalloc's per-thread counters), not by what operators choose to reserve.
//!
//! ```text
//!  poll of a query's stream ──enter(account)──▶ thread's net bytes at entry
//!        │ (DataFusion tasks spawned meanwhile inherit the account: `AccountTracer`)
//!        ▼
//!  end of the poll ──────────▶ account += net bytes now − at entry; past its limit: stopped
//! ```
//! Memory freed by another query's poll on the same thread counts for that query: accounts
//! are an attribution, exact for what a query keeps growing, which is what the guard needs.

use datafusion::common::runtime::JoinSetTracer;
use futures::future::BoxFuture;
use futures::task::AtomicWaker;
use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use tikv_jemalloc_ctl::thread::{ThreadLocal, allocatedp, deallocatedp};

/// What one query has allocated here, and whether it was stopped.
#[derive(Debug)]
pub(crate) struct QueryAccount {
    pub(crate) query_id: String,
    bytes: AtomicI64,
    /// Threads polling the query's work now: while a poll runs, what it allocates is not
    /// charged yet (charges land when the poll ends).
    active: AtomicI64,
    limit: i64,
    /// Where the limit comes from, for the stop message.
    limit_source: &'static str,
    stopped: OnceLock<String>,
    /// Counts the stop, by reason.
    metrics: Option<super::MemoryMetrics>,
    /// The streams of this query here, woken when it is stopped.
    wakers: Mutex<Vec<Weak<AtomicWaker>>>,
}

impl QueryAccount {
    pub(crate) fn new(
        query_id: &str,
        (limit, limit_source): (u64, &'static str),
        metrics: Option<super::MemoryMetrics>,
    ) -> Self {
        Self {
            limit_source,
            metrics,
            query_id: query_id.to_string(),
            bytes: AtomicI64::new(0),
            active: AtomicI64::new(0),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            stopped: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Net bytes attributed to the query now.
    pub(crate) fn bytes(&self) -> i64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Says whether one of the query's polls runs now.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Why the query was stopped, once it is.
    pub(crate) fn stopped(&self) -> Option<&str> {
        self.stopped.get().map(String::as_str)
    }

    /// Stops the query: each of its streams here ends with `resources_exhausted` and `reason`
    /// at its next poll, which comes at once. `kind` labels the metric (`query_limit`,
    /// `watermark`). Returns false when it was stopped already.
    pub(crate) fn stop(&self, kind: &str, reason: String) -> bool {
        if self.stopped.set(reason).is_err() {
            return false;
        }
        if let Some(metrics) = &self.metrics {
            metrics.stopped(kind);
        }
        let wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        for waker in wakers.iter().filter_map(Weak::upgrade) {
            waker.wake();
        }
        true
    }

    fn charge(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        let now = self.bytes.fetch_add(delta, Ordering::Relaxed) + delta;
        if now > self.limit && self.stopped.get().is_none() {
            self.stop("query_limit", format!(
                "the query allocated {} MiB on this member, more than one query may ({} MiB: {})",
                now >> 20,
                self.limit >> 20,
                self.limit_source
            ));
        }
    }

    fn watch(&self) -> Arc<AtomicWaker> {
        let waker = Arc::new(AtomicWaker::new());
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|waker| waker.strong_count() > 0);
        wakers.push(Arc::downgrade(&waker));
        waker
    }
}

// === attribution ===

thread_local! {
    /// jemalloc's counters of this thread (None where jemalloc is not the allocator).
    static COUNTERS: Option<(ThreadLocal<u64>, ThreadLocal<u64>)> =
        allocatedp::read().ok().zip(deallocatedp::read().ok());
    /// The account polls on this thread charge now, with the thread's net bytes at entry.
    static CURRENT: RefCell<Option<(Arc<QueryAccount>, u64)>> = const { RefCell::new(None) };
}

/// Bytes this thread allocated minus bytes it freed, ever (wrapping).
fn thread_net() -> u64 {
    COUNTERS.with(|counters| {
        counters.map_or(0, |(allocated, deallocated)| {
            allocated.get().wrapping_sub(deallocated.get())
        })
    })
}

/// The account polls on this thread charge now, if any.
pub(crate) fn current() -> Option<Arc<QueryAccount>> {
    CURRENT.with(|current| {
        current
            .borrow()
            .as_ref()
            .map(|(account, _)| Arc::clone(account))
    })
}

/// Runs `work` with `account` charged for what it allocates on this thread; an account already
/// current is charged up to here and resumes after.
pub(crate) fn charged<R>(account: &Arc<QueryAccount>, work: impl FnOnce() -> R) -> R {
    let same = CURRENT.with(|current| {
        current
            .borrow()
            .as_ref()
            .is_some_and(|(outer, _)| Arc::ptr_eq(outer, account))
    });
    if same {
        return work();
    }
    let _entered = Entered::enter(account);
    work()
}

/// Makes an account current on this thread until dropped (also on unwinding).
struct Entered {
    outer: Option<Arc<QueryAccount>>,
}

impl Entered {
    fn enter(account: &Arc<QueryAccount>) -> Self {
        account.active.fetch_add(1, Ordering::Relaxed);
        let now = thread_net();
        let outer = CURRENT.with(|current| current.replace(Some((Arc::clone(account), now))));
        let outer = outer.map(|(outer, since)| {
            outer.charge(now.wrapping_sub(since) as i64);
            outer
        });
        Self { outer }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let now = thread_net();
        let restored = self.outer.take().map(|outer| (outer, now));
        if let Some((account, since)) = CURRENT.with(|current| current.replace(restored)) {
            account.charge(now.wrapping_sub(since) as i64);
            account.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

// === wrappers ===

pin_project_lite::pin_project! {
    /// A query's stream: its polls are charged to the query, and once the query is stopped it
    /// ends with `stopped(reason)` instead of its next item.
    pub(crate) struct Tracked<S, F> {
        #[pin]
        inner: S,
        account: Arc<QueryAccount>,
        waker: Arc<AtomicWaker>,
        on_stop: F,
        done: bool,
    }
}

impl<S, F> Tracked<S, F> {
    pub(crate) fn new(inner: S, account: Arc<QueryAccount>, on_stop: F) -> Self {
        let waker = account.watch();
        Self {
            inner,
            account,
            waker,
            on_stop,
            done: false,
        }
    }
}

impl<S, F> futures::Stream for Tracked<S, F>
where
    S: futures::Stream,
    F: Fn(&str) -> S::Item,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        this.waker.register(cx.waker());
        if let Some(reason) = this.account.stopped() {
            *this.done = true;
            return Poll::Ready(Some((this.on_stop)(reason)));
        }
        let inner = this.inner;
        let polled = charged(this.account, || inner.poll_next(cx));
        match (polled, this.account.stopped()) {
            (Poll::Ready(None), _) => {
                *this.done = true;
                Poll::Ready(None)
            }
            // Stopped during this poll: the item it made is dropped with the query.
            (_, Some(reason)) => {
                *this.done = true;
                Poll::Ready(Some((this.on_stop)(reason)))
            }
            (polled, None) => polled,
        }
    }
}

pin_project_lite::pin_project! {
    /// A future whose polls are charged to a query (a task DataFusion spawned for it).
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        account: Arc<QueryAccount>,
    }
}

impl<F> TrackedFuture<F> {
    pub(crate) fn new(inner: F, account: Arc<QueryAccount>) -> Self {
        Self { inner, account }
    }
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        charged(this.account, || inner.poll(cx))
    }
}

/// Carries the current account into the tasks DataFusion (and datafusion-distributed) spawn,
/// so a query's partitions running in their own tasks are charged to it too.
struct AccountTracer;

impl JoinSetTracer for AccountTracer {
    fn trace_future(
        &self,
        future: BoxFuture<'static, Box<dyn Any + Send>>,
    ) -> BoxFuture<'static, Box<dyn Any + Send>> {
        match current() {
            Some(account) => Box::pin(TrackedFuture::new(future, account)),
            None => future,
        }
    }

    fn trace_block(
        &self,
        block: Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>,
    ) -> Box<dyn FnOnce() -> Box<dyn Any + Send> + Send> {
        match current() {
            Some(account) => Box::new(move || charged(&account, block)),
            None => block,
        }
    }
}

/// Installs the tracer (once per process; later calls do nothing).
pub(crate) fn install_tracer() {
    static TRACER: AccountTracer = AccountTracer;
    let _ = datafusion::common::runtime::set_join_set_tracer(&TRACER);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn allocations_are_charged_to_the_current_query_and_nested_ones_apart() {
        let outer = Arc::new(QueryAccount::new("outer", (u64::MAX, "test"), None));
        let inner = Arc::new(QueryAccount::new("inner", (u64::MAX, "test"), None));
        let kept = charged(&outer, || {
            let outer_bytes = vec![1u8; 4 << 20];
            let inner_bytes = charged(&inner, || vec![2u8; 8 << 20]);
            (outer_bytes, inner_bytes)
        });
        assert!(
            (4 << 20..5 << 20).contains(&outer.bytes()),
            "{}",
            outer.bytes()
        );
        assert!(
            (8 << 20..9 << 20).contains(&inner.bytes()),
            "{}",
            inner.bytes()
        );
        charged(&outer, || drop(kept));
        assert!(
            outer.bytes() < -(7 << 20),
            "freeing charges the account that frees"
        );
        assert!(current().is_none());
    }

    #[tokio::test]
    async fn a_stream_over_its_limit_ends_with_the_stop_error() {
        let account = Arc::new(QueryAccount::new("q", (16 << 20, "test"), None));
        let mut kept = Vec::new();
        let growing = futures::stream::iter(0..100).map(move |_| {
            kept.push(vec![0u8; 1 << 20]);
            Ok::<_, String>(kept.len())
        });
        let items: Vec<_> = Tracked::new(growing, Arc::clone(&account), |reason: &str| {
            Err(reason.to_string())
        })
        .collect()
        .await;
        let error = items.last().unwrap().as_ref().unwrap_err();
        assert!(
            error.contains("more than one query may (16 MiB: test)"),
            "{error}"
        );
        assert!(
            items.len() <= 18,
            "stopped at the limit, after {} items",
            items.len()
        );
        assert!(account.stopped().is_some());
    }

    #[tokio::test]
    async fn a_stop_from_outside_wakes_a_waiting_stream() {
        let account = Arc::new(QueryAccount::new("q", (u64::MAX, "test"), None));
        let mut stream = Tracked::new(
            futures::stream::pending::<Result<(), String>>(),
            Arc::clone(&account),
            |reason: &str| Err(reason.to_string()),
        );
        let stopper = Arc::clone(&account);
        let waiter = flotilla_cluster::spawn_instrumented(async move { stream.next().await });
        tokio::task::yield_now().await;
        assert!(stopper.stop("watermark", "watermark".into()));
        let item = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(item, Some(Err("watermark".into())));
    }
}
