//! Per-tenant state: a semaphore of the tenant's concurrency limit and a count of waiters.

use crate::config::{AdmissionConfig, TenantConfig};
use crate::error::GatewayError;
use crate::metrics::GatewayMetrics;
use flotilla_protocol::DEFAULT_POOL;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every tenant's admission state, plus the global bound.
pub(crate) struct Tenants {
    defaults: AdmissionConfig,
    configured: BTreeMap<String, TenantConfig>,
    global: Arc<Semaphore>,
    states: Mutex<HashMap<String, Arc<TenantState>>>,
    metrics: GatewayMetrics,
}

struct TenantState {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    waiting: AtomicUsize,
    queue_length: usize,
    max_wait: Duration,
    pool: String,
}

/// What an admitted query holds until its result stream ends.
pub(crate) struct AdmissionPermit {
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
    pool: String,
    waited: Duration,
}

impl AdmissionPermit {
    /// Returns the TaskManager pool the tenant's queries run on.
    pub(crate) fn pool(&self) -> &str {
        &self.pool
    }

    /// Returns how long the query waited for its permits.
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }
}

/// Decrements a tenant's waiter count and queue gauge however the wait ends.
struct Waiting<'a>(&'a AtomicUsize, prometheus::IntGauge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.dec();
    }
}

impl Tenants {
    pub(crate) fn new(
        defaults: AdmissionConfig,
        configured: BTreeMap<String, TenantConfig>,
        metrics: GatewayMetrics,
    ) -> Self {
        // Every tenant label exists from the start: the default tenant, the configured ones,
        // and `other` for every unconfigured tenant together.
        let mut labels = vec![
            (
                flotilla_protocol::DEFAULT_TENANT,
                defaults.tenant_queue_length,
            ),
            ("other", defaults.tenant_queue_length),
        ];
        for (name, tenant) in &configured {
            labels.push((
                name.as_str(),
                tenant.queue_length.unwrap_or(defaults.tenant_queue_length),
            ));
        }
        for (label, queue_length) in labels {
            metrics.tenant_queued.with_label_values(&[label]);
            metrics.admission_rejected.with_label_values(&[label]);
            metrics
                .tenant_queue_limit
                .with_label_values(&[label])
                .set(i64::try_from(queue_length).unwrap_or(i64::MAX));
        }
        Self {
            global: Arc::new(Semaphore::new(defaults.max_in_flight.max(1))),
            defaults,
            configured,
            states: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Waits for a permit of `tenant` and a global one, within the tenant's queue limits.
    pub(crate) async fn admit(&self, tenant: &str) -> Result<AdmissionPermit, GatewayError> {
        let started = Instant::now();
        let state = self.state(tenant)?;
        let label = tenant_label(tenant, &self.configured);
        let queued = self.metrics.tenant_queued.with_label_values(&[label]);
        queued.inc();
        let waiting = state.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&state.waiting, queued);
        let reject = |reason: String| {
            self.metrics
                .admission_rejected
                .with_label_values(&[label])
                .inc();
            GatewayError::TenantQueueFull {
                tenant: tenant.to_string(),
                reason,
            }
        };
        if state.permits.available_permits() == 0 && waiting >= state.queue_length {
            return Err(reject(format!(
                "{} queries running and {} waiting, the limits",
                state.max_concurrent, state.queue_length
            )));
        }
        let tenant_permit =
            tokio::time::timeout(state.max_wait, Arc::clone(&state.permits).acquire_owned())
                .await
                .map_err(|_| {
                    reject(format!(
                        "no slot among its {} concurrent queries within {} ms",
                        state.max_concurrent,
                        state.max_wait.as_millis()
                    ))
                })?
                .map_err(|_| GatewayError::Internal("tenant semaphore closed".into()))?;
        let remaining = state.max_wait.saturating_sub(started.elapsed());
        let global_permit =
            tokio::time::timeout(remaining, Arc::clone(&self.global).acquire_owned())
                .await
                .map_err(|_| {
                    reject(format!(
                        "the gateway runs its maximum of {} queries",
                        self.defaults.max_in_flight
                    ))
                })?
                .map_err(|_| GatewayError::Internal("global semaphore closed".into()))?;
        let waited = started.elapsed();
        Ok(AdmissionPermit {
            _tenant: tenant_permit,
            _global: global_permit,
            pool: state.pool.clone(),
            waited,
        })
    }

    /// Returns the number of queries of `tenant` waiting now.
    #[cfg(test)]
    fn waiting(&self, tenant: &str) -> usize {
        self.states
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(tenant)
            .map_or(0, |state| state.waiting.load(Ordering::Acquire))
    }

    fn state(&self, tenant: &str) -> Result<Arc<TenantState>, GatewayError> {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(state) = states.get(tenant) {
            return Ok(Arc::clone(state));
        }
        if states.len() >= self.defaults.max_tenants {
            // Forget idle tenants: nothing running, nothing waiting.
            states.retain(|_, state| {
                state.waiting.load(Ordering::Acquire) > 0
                    || state.permits.available_permits() < state.max_concurrent
            });
            if states.len() >= self.defaults.max_tenants {
                return Err(GatewayError::TenantQueueFull {
                    tenant: tenant.to_string(),
                    reason: format!(
                        "the gateway tracks its maximum of {} active tenants",
                        self.defaults.max_tenants
                    ),
                });
            }
        }
        let own = self.configured.get(tenant).cloned().unwrap_or_default();
        let max_concurrent = own
            .max_concurrent
            .unwrap_or(self.defaults.tenant_max_concurrent)
            .max(1);
        let state = Arc::new(TenantState {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            waiting: AtomicUsize::new(0),
            queue_length: own
                .queue_length
                .unwrap_or(self.defaults.tenant_queue_length),
            max_wait: Duration::from_millis(
                own.max_wait_ms.unwrap_or(self.defaults.tenant_max_wait_ms),
            ),
            pool: own.pool.unwrap_or_else(|| DEFAULT_POOL.to_string()),
        });
        states.insert(tenant.to_string(), Arc::clone(&state));
        Ok(state)
    }
}

/// Metric label for a tenant: configured tenants by name, every other one as `other`, so that
/// hostile header values cannot grow the label set.
fn tenant_label<'a>(tenant: &'a str, configured: &BTreeMap<String, TenantConfig>) -> &'a str {
    if configured.contains_key(tenant) || tenant == flotilla_protocol::DEFAULT_TENANT {
        tenant
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(max_concurrent: usize, queue_length: usize, max_wait_ms: u64) -> Tenants {
        let defaults = AdmissionConfig {
            max_in_flight: 100,
            tenant_max_concurrent: max_concurrent,
            tenant_queue_length: queue_length,
            tenant_max_wait_ms: max_wait_ms,
            max_tenants: 3,
        };
        let mut configured = BTreeMap::new();
        configured.insert(
            "iso".to_string(),
            TenantConfig {
                pool: Some("iso".into()),
                ..TenantConfig::default()
            },
        );
        let metrics = GatewayMetrics::new(&prometheus::Registry::new()).unwrap();
        Tenants::new(defaults, configured, metrics)
    }

    #[tokio::test]
    async fn a_full_tenant_queues_then_refuses_while_others_pass() {
        let tenants = Arc::new(tenants(1, 1, 5_000));
        let running = tenants.admit("a").await.unwrap();
        // The second query of `a` waits in its queue...
        let queued = {
            let tenants = Arc::clone(&tenants);
            flotilla_cluster::spawn_instrumented(
                async move { tenants.admit("a").await.map(|_| ()) },
            )
        };
        while tenants.waiting("a") == 0 {
            tokio::task::yield_now().await;
        }
        let queue_gauge = tenants.metrics.tenant_queued.with_label_values(&["other"]);
        assert_eq!(
            queue_gauge.get(),
            1,
            "unconfigured tenants count as `other`"
        );
        // ...the third finds the queue full...
        let refused = tenants.admit("a").await.err().unwrap();
        assert_eq!(
            refused.code(),
            flotilla_protocol::ErrorCode::TenantQueueFull
        );
        // ...and tenant `b` is not delayed at all.
        let other = tokio::time::timeout(Duration::from_millis(500), tenants.admit("b")).await;
        assert!(other.unwrap().is_ok());
        drop(running);
        queued.await.unwrap().unwrap();
        assert_eq!(queue_gauge.get(), 0);
    }

    #[tokio::test]
    async fn waiting_is_bounded_in_time_and_pools_follow_the_tenant() {
        let tenants = tenants(1, 10, 50);
        let _running = tenants.admit("a").await.unwrap();
        let started = Instant::now();
        let refused = tenants.admit("a").await.err().unwrap();
        assert_eq!(
            refused.code(),
            flotilla_protocol::ErrorCode::TenantQueueFull
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(tenants.admit("iso").await.unwrap().pool(), "iso");
        assert_eq!(tenants.admit("b").await.unwrap().pool(), DEFAULT_POOL);
    }

    #[tokio::test]
    async fn idle_tenants_are_forgotten_busy_ones_bound_the_count() {
        let tenants = tenants(1, 0, 10);
        let _a = tenants.admit("a").await.unwrap();
        let _b = tenants.admit("b").await.unwrap();
        drop(tenants.admit("c").await.unwrap());
        // `c` is idle: `d` replaces it. With a, b and d busy, `e` is refused.
        let _d = tenants.admit("d").await.unwrap();
        let refused = tenants.admit("e").await.err().unwrap();
        assert_eq!(
            refused.code(),
            flotilla_protocol::ErrorCode::TenantQueueFull
        );
    }
}
