//! Housekeeping: refreshes the queue depth gauges every few seconds and deletes events older
//! than the retention period (with their deliveries and attempts) in batches.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::clock::now_ms;
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
    metrics: Metrics,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        refresh_queue_depths(&store, &metrics).await;
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = tokio::time::Instant::now();
            prune(&store, retention).await;
        }
    }
}

async fn refresh_queue_depths(store: &SharedStore, metrics: &Metrics) {
    if let Ok(depths) = store.queue_depths().await {
        metrics.queue_depth.reset();
        for d in depths {
            metrics
                .queue_depth
                .with_label_values(&[&format!("{}/{}", d.namespace, d.destination)])
                .set(d.depth);
        }
    }
}

async fn prune(store: &SharedStore, retention: Duration) {
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
