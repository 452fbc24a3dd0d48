//! Metric families made and registered in one step: a component's metrics module names each
//! family once (its full name, so that dashboards and code grep alike) and never keeps a second
//! list of what to register.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Makes metric families and registers each in the process registry as it is made.
pub struct Families<'a> {
    registry: &'a Registry,
}

impl<'a> Families<'a> {
    /// Families registered in `registry`.
    pub fn new(registry: &'a Registry) -> Self {
        Self { registry }
    }

    fn register<C: Collector + Clone + 'static>(&self, collector: C) -> prometheus::Result<C> {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }

    /// A counter.
    pub fn counter(&self, name: &str, help: &str) -> prometheus::Result<IntCounter> {
        self.register(IntCounter::new(name, help)?)
    }

    /// A counter per value of `labels`.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.register(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    /// A gauge.
    pub fn gauge(&self, name: &str, help: &str) -> prometheus::Result<IntGauge> {
        self.register(IntGauge::new(name, help)?)
    }

    /// A gauge per value of `labels`.
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    /// A histogram with `buckets` (upper bounds, ascending).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> prometheus::Result<Histogram> {
        self.register(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets),
        )?)
    }

    /// A histogram per value of `labels`.
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> prometheus::Result<HistogramVec> {
        self.register(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
        )?)
    }
}

/// Checks what every component's families must be: named `<prefix>_…` and documented, at least
/// `at_least` of them. For the components' unit tests.
pub fn check_families(registry: &Registry, prefix: &str, at_least: usize) -> Result<(), String> {
    let families = registry.gather();
    if families.len() < at_least {
        return Err(format!(
            "{} families, expected at least {at_least}",
            families.len()
        ));
    }
    for family in &families {
        if !family.name().starts_with(prefix) {
            return Err(format!("{} is not named {prefix}_…", family.name()));
        }
        if family.help().is_empty() {
            return Err(format!("{} has no HELP", family.name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_registered_as_they_are_made_and_checked() {
        let registry = Registry::new();
        let families = Families::new(&registry);
        let counter = families.counter("flotilla_x_total", "Xs").unwrap();
        counter.inc();
        families
            .gauge_vec("flotilla_x_now", "Xs now", &["kind"])
            .unwrap();
        assert!(
            families.counter("flotilla_x_total", "again").is_err(),
            "a name is registered once"
        );
        assert_eq!(
            registry.gather()[0].get_metric()[0]
                .get_counter()
                .get_value(),
            1.0
        );
        assert_eq!(check_families(&registry, "flotilla_x", 1), Ok(()));
        assert!(check_families(&registry, "flotilla_y", 1).is_err());
        assert!(check_families(&registry, "flotilla_x", 3).is_err());
    }
}
