//! Prometheus metrics of the gateway, on a registry of its own.

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Every metric the gateway exports. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Ingest requests by source and outcome (accepted, duplicate, unauthorized, forbidden,
    /// not_found, too_large, invalid, unavailable, rate_limited, throttled, body_timeout).
    pub ingest_requests: IntCounterVec,
    /// Delivery attempts by destination and result (success, failure).
    pub delivery_attempts: IntCounterVec,
    /// Attempt latency by destination.
    pub delivery_duration: HistogramVec,
    /// Deliveries dead-lettered, by destination.
    pub dead_lettered: IntCounterVec,
    /// Circuit state by destination: 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// Deliveries waiting or in flight, by destination (0 for a destination with none).
    pub queue_depth: IntGaugeVec,
    /// Age of the oldest delivery waiting or in flight, by destination (0 when none).
    pub queue_oldest_age: GaugeVec,
    /// Commits to the database that failed (a full disk, the database down).
    pub storage_write_failures: IntCounter,
    /// Config reloads by result.
    pub config_reloads: IntCounterVec,
    /// Transform evaluations that failed, by destination and category.
    pub transform_failures: IntCounterVec,
    /// Management API requests refused for a missing or wrong API key.
    pub api_auth_failures: IntCounter,
    /// Management API requests refused (429) because their client failed too often.
    pub api_auth_throttled: IntCounter,
    /// HTTP connections open now.
    pub open_connections: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric =
        IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn plain_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

fn plain_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("static metric definition is valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// Upper bounds of the delivery latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let delivery_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookstream_gateway_delivery_duration_seconds",
                "Delivery attempt latency.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["destination"],
        )
        .expect("static metric definition is valid");
        r.register(Box::new(delivery_duration.clone()))
            .expect("each metric is registered once");
        let queue_oldest_age = GaugeVec::new(
            Opts::new(
                "hookstream_gateway_queue_oldest_age_seconds",
                "Age of the oldest delivery waiting or in flight (0 when none).",
            ),
            &["destination"],
        )
        .expect("static metric definition is valid");
        r.register(Box::new(queue_oldest_age.clone()))
            .expect("each metric is registered once");
        let storage_write_failures = plain_counter(
            &r,
            "hookstream_gateway_storage_write_failures_total",
            "Commits to the database that failed.",
        );
        Metrics {
            ingest_requests: counter(
                &r,
                "hookstream_gateway_ingest_requests_total",
                "Ingest requests by source and outcome.",
                &["source", "outcome"],
            ),
            delivery_attempts: counter(
                &r,
                "hookstream_gateway_delivery_attempts_total",
                "Delivery attempts by destination and result.",
                &["destination", "result"],
            ),
            delivery_duration,
            dead_lettered: counter(
                &r,
                "hookstream_gateway_dead_lettered_total",
                "Deliveries dead-lettered after their last retry.",
                &["destination"],
            ),
            circuit_state: gauge(
                &r,
                "hookstream_gateway_circuit_state",
                "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
                &["destination"],
            ),
            queue_depth: gauge(
                &r,
                "hookstream_gateway_queue_depth",
                "Deliveries waiting or in flight.",
                &["destination"],
            ),
            queue_oldest_age,
            storage_write_failures,
            config_reloads: counter(
                &r,
                "hookstream_gateway_config_reloads_total",
                "Config reloads by result.",
                &["result"],
            ),
            transform_failures: counter(
                &r,
                "hookstream_gateway_transform_failures_total",
                "Transforms that failed, by destination and category.",
                &["destination", "category"],
            ),
            api_auth_failures: plain_counter(
                &r,
                "hookstream_gateway_api_auth_failures_total",
                "Management API requests refused for a missing or wrong API key.",
            ),
            api_auth_throttled: plain_counter(
                &r,
                "hookstream_gateway_api_auth_throttled_total",
                "Management API requests refused because their client failed authentication too often.",
            ),
            open_connections: plain_gauge(
                &r,
                "hookstream_gateway_open_connections",
                "HTTP connections open now.",
            ),
            registry: r,
        }
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
