//! Housekeeping: refreshes the queue gauges (depth and oldest age of every configured
//! destination's queue, 0 when it is empty) and the storage failure count every few
//! seconds, and deletes events older than the retention period (with their deliveries and
//! attempts) in batches.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::config::ConfigHandle;
use crate::metrics::Metrics;
use crate::store::{error_chain, SharedStore};

/// How often the gauges are refreshed.
const TICK: Duration = Duration::from_secs(5);
/// How often retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Events deleted per transaction.
const PRUNE_BATCH: u32 = 1000;

/// Runs until `shutdown` changes.
pub async fn run(
    store: SharedStore,
    config: ConfigHandle,
    metrics: Metrics,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures_seen = 0;
    let mut tick = tokio::time::interval(TICK);
    let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        refresh_queue_gauges(&store, &config, &metrics).await;
        let failures = store.health().failures();
        metrics
            .storage_write_failures
            .inc_by(failures.saturating_sub(failures_seen));
        failures_seen = failures;
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            prune(&store, retention).await;
        }
    }
}

async fn refresh_queue_gauges(store: &SharedStore, config: &ConfigHandle, metrics: &Metrics) {
    let Ok(depths) = store.queue_depths().await else {
        return;
    };
    let now = now_ms();
    let mut queues: HashMap<String, (i64, f64)> = config
        .borrow()
        .destinations
        .keys()
        .map(|k| (k.to_string(), (0, 0.0)))
        .collect();
    for d in depths {
        let age = d
            .oldest_created_at
            .map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
        queues.insert(format!("{}/{}", d.namespace, d.destination), (d.depth, age));
    }
    metrics.queue_depth.reset();
    metrics.queue_oldest_age.reset();
    for (label, (depth, age)) in queues {
        metrics.queue_depth.with_label_values(&[&label]).set(depth);
        metrics
            .queue_oldest_age
            .with_label_values(&[&label])
            .set(age);
    }
}

async fn prune(store: &SharedStore, retention: Duration) {
    // Once for the whole gateway: replicas sharing a database take turns by term.
    let term = i64::try_from(PRUNE_EVERY.as_millis() * 2).unwrap_or(i64::MAX);
    match store.lead("retention", term).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            warn!(error = %error_chain(&e), "retention: cannot take its turn");
            return;
        }
    }
    let before = now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        match store.prune(before, PRUNE_BATCH).await {
            Ok(n) => {
                deleted += n;
                if n < u64::from(PRUNE_BATCH) {
                    break;
                }
            }
            Err(e) => {
                warn!(error = %error_chain(&e), "retention: cannot delete old events");
                break;
            }
        }
    }
    if deleted > 0 {
        info!(deleted, "retention: deleted old events");
    }
}
