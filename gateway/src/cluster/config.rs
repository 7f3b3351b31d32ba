//! Routing config from the operator's Secret, watched through the API. A new version is
//! built into a whole new snapshot before it replaces the old one, so requests and
//! deliveries in flight keep the snapshot they started with.

use std::sync::Arc;

use futures::StreamExt;
use hookstream_crds::config::{GatewayConfig, ObjectKey, CONFIG_KEY};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::Cluster;
use crate::config::RuntimeConfig;
use crate::metrics::Metrics;

/// Watches the config Secret and publishes each version that builds. `synced` fires once the
/// first listing is handled (with or without a config), so startup can wait for it.
pub async fn watch(
    cluster: Cluster,
    publish: watch::Sender<Arc<RuntimeConfig>>,
    metrics: Metrics,
    synced: oneshot::Sender<()>,
) {
    let target = cluster.config_secret.clone();
    let api = Api::<Secret>::namespaced(cluster.client.clone(), &target.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    let mut synced = Some(synced);
    let mut seen_any = false;
    let mut last: Option<Vec<u8>> = None;
    while let Some(event) = stream.next().await {
        let secret = match event {
            Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
            Ok(watcher::Event::Delete(_)) => {
                warn!(secret = %target, "the config Secret was deleted; keeping the last config");
                continue;
            }
            Ok(watcher::Event::Init) => continue,
            Ok(watcher::Event::InitDone) => {
                if !seen_any {
                    warn!(secret = %target, "the config Secret does not exist yet; routing nothing until the operator writes it");
                }
                if let Some(tx) = synced.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            Err(e) => {
                warn!(secret = %target, error = %e, "watching the config Secret failed; retrying");
                continue;
            }
        };
        seen_any = true;
        let Some(data) = secret
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_KEY))
            .map(|v| v.0.clone())
        else {
            warn!(secret = %target, key = CONFIG_KEY, "the config Secret has no config key; keeping the last config");
            continue;
        };
        if last.as_deref() == Some(data.as_slice()) {
            continue;
        }
        let version = secret.resource_version().unwrap_or_default();
        if apply(&data, &version, &target, &publish, &metrics).await {
            last = Some(data);
        }
    }
}

/// Builds the config in `data` and publishes it. Returns whether it was published; an
/// invalid config is counted and logged, and the last one stays.
async fn apply(
    data: &[u8],
    version: &str,
    target: &ObjectKey,
    publish: &watch::Sender<Arc<RuntimeConfig>>,
    metrics: &Metrics,
) -> bool {
    let built = tokio::task::spawn_blocking({
        let data = data.to_vec();
        move || -> Result<RuntimeConfig, String> {
            let compiled: GatewayConfig =
                serde_json::from_slice(&data).map_err(|e| format!("not a gateway config: {e}"))?;
            RuntimeConfig::build(compiled).map_err(|e| e.to_string())
        }
    })
    .await;
    match built {
        Ok(Ok(config)) => {
            info!(
                sources = config.sources.len(),
                destinations = config.destinations.len(),
                routes = config.routes.len(),
                resource_version = %version,
                "config loaded from Secret"
            );
            metrics.config_reloads.with_label_values(&["success"]).inc();
            publish.send_replace(Arc::new(config));
            true
        }
        Ok(Err(e)) => {
            metrics.config_reloads.with_label_values(&["failure"]).inc();
            warn!(secret = %target, resource_version = %version, error = %e, "the config in the Secret is invalid; keeping the last config");
            false
        }
        Err(e) => {
            warn!(error = %e, "config build task failed");
            false
        }
    }
}
