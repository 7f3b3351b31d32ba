//! Prometheus metrics of the operator, on a registry of its own.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Every metric the operator exports. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations by kind and result (`unchanged`, `updated`, `stale`, `error`).
    pub reconciliations: IntCounterVec,
    /// Reconciliation latency by kind.
    pub reconcile_duration: HistogramVec,
    /// Compilations of the whole object set, by result (`written`, `unchanged`, `error`).
    pub compilations: IntCounterVec,
    /// How long one compilation (snapshot, compile, config write) takes.
    pub compile_duration: Histogram,
    /// Objects by kind and readiness (`true`, `false`).
    pub objects: IntGaugeVec,
    /// Writes of the gateway config Secret.
    pub config_writes: IntCounter,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::new(),
            reconciliations: IntCounterVec::new(
                Opts::new(
                    "hookstream_operator_reconciliations_total",
                    "Reconciliations by kind and result.",
                ),
                &["kind", "result"],
            )
            .expect("static metric definition is valid"),
            reconcile_duration: HistogramVec::new(
                HistogramOpts::new(
                    "hookstream_operator_reconcile_duration_seconds",
                    "Reconciliation latency by kind.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                &["kind"],
            )
            .expect("static metric definition is valid"),
            compilations: IntCounterVec::new(
                Opts::new(
                    "hookstream_operator_compilations_total",
                    "Compilations of all objects into the gateway config, by result.",
                ),
                &["result"],
            )
            .expect("static metric definition is valid"),
            compile_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "hookstream_operator_compile_duration_seconds",
                    "Time to compile all objects and write the gateway config.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            )
            .expect("static metric definition is valid"),
            objects: IntGaugeVec::new(
                Opts::new(
                    "hookstream_operator_objects",
                    "Objects by kind and Ready condition.",
                ),
                &["kind", "ready"],
            )
            .expect("static metric definition is valid"),
            config_writes: IntCounter::new(
                "hookstream_operator_config_writes_total",
                "Writes of the gateway config Secret.",
            )
            .expect("static metric definition is valid"),
            leader: IntGauge::new(
                "hookstream_operator_leader",
                "1 while this replica holds the leader Lease.",
            )
            .expect("static metric definition is valid"),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 7] = [
            Box::new(m.reconciliations.clone()),
            Box::new(m.reconcile_duration.clone()),
            Box::new(m.compilations.clone()),
            Box::new(m.compile_duration.clone()),
            Box::new(m.objects.clone()),
            Box::new(m.config_writes.clone()),
            Box::new(m.leader.clone()),
        ];
        for c in collectors {
            m.registry
                .register(c)
                .expect("metric names are registered once");
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        hookstream_common::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
