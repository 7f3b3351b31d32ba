//! Prometheus metrics of the gateway, on a registry of its own.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every metric the gateway exports. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Ingest requests by source and outcome (accepted, duplicate, unauthorized, forbidden,
    /// not_found, too_large, invalid, unavailable).
    pub ingest_requests: IntCounterVec,
    /// Delivery attempts by destination and result (success, failure).
    pub delivery_attempts: IntCounterVec,
    /// Attempt latency by destination.
    pub delivery_duration: HistogramVec,
    /// Deliveries dead-lettered, by destination.
    pub dead_lettered: IntCounterVec,
    /// Circuit state by destination: 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// Deliveries waiting or in flight, by destination.
    pub queue_depth: IntGaugeVec,
    /// Config reloads by result.
    pub config_reloads: IntCounterVec,
    /// Transform evaluations that failed, by destination and category.
    pub transform_failures: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            ingest_requests: IntCounterVec::new(
                Opts::new(
                    "hookstream_gateway_ingest_requests_total",
                    "Ingest requests by source and outcome.",
                ),
                &["source", "outcome"],
            )
            .expect("static metric definition is valid"),
            delivery_attempts: IntCounterVec::new(
                Opts::new(
                    "hookstream_gateway_delivery_attempts_total",
                    "Delivery attempts by destination and result.",
                ),
                &["destination", "result"],
            )
            .expect("static metric definition is valid"),
            delivery_duration: HistogramVec::new(
                HistogramOpts::new(
                    "hookstream_gateway_delivery_duration_seconds",
                    "Delivery attempt latency.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ]),
                &["destination"],
            )
            .expect("static metric definition is valid"),
            dead_lettered: IntCounterVec::new(
                Opts::new(
                    "hookstream_gateway_dead_lettered_total",
                    "Deliveries dead-lettered after their last retry.",
                ),
                &["destination"],
            )
            .expect("static metric definition is valid"),
            circuit_state: IntGaugeVec::new(
                Opts::new(
                    "hookstream_gateway_circuit_state",
                    "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
                ),
                &["destination"],
            )
            .expect("static metric definition is valid"),
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "hookstream_gateway_queue_depth",
                    "Deliveries waiting or in flight.",
                ),
                &["destination"],
            )
            .expect("static metric definition is valid"),
            config_reloads: IntCounterVec::new(
                Opts::new(
                    "hookstream_gateway_config_reloads_total",
                    "Config reloads by result.",
                ),
                &["result"],
            )
            .expect("static metric definition is valid"),
            transform_failures: IntCounterVec::new(
                Opts::new(
                    "hookstream_gateway_transform_failures_total",
                    "Transforms that failed, by destination and category.",
                ),
                &["destination", "category"],
            )
            .expect("static metric definition is valid"),
            registry,
        };
        for c in [
            Box::new(m.ingest_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.delivery_attempts.clone()),
            Box::new(m.delivery_duration.clone()),
            Box::new(m.dead_lettered.clone()),
            Box::new(m.circuit_state.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.transform_failures.clone()),
        ] {
            m.registry
                .register(c)
                .expect("each metric is registered once");
        }
        m
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        hookstream_common::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
