//! Circuit reset through the `hookstream.io/reset-circuit` annotation on a Destination: the
//! gateway closes the circuit (waiting deliveries go out in order) and removes the
//! annotation, so `kubectl annotate destination NAME hookstream.io/reset-circuit=now` works
//! like `POST /v1/destinations/{namespace}/{name}/circuit/reset`.

use futures::StreamExt;
use hookstream_crds::config::ObjectKey;
use hookstream_crds::v1alpha1::Destination;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use std::sync::Arc;

use super::{Cluster, FIELD_MANAGER};
use crate::config::ConfigHandle;
use crate::delivery::circuit::Circuits;

/// The annotation that asks for a reset.
pub const ANNOTATION: &str = "hookstream.io/reset-circuit";

/// Resets circuits whose Destination carries the annotation, then removes it.
pub async fn watch(cluster: Cluster, config: ConfigHandle, circuits: Arc<Circuits>) {
    let api = Api::<Destination>::all(cluster.client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        let destination = match item {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "watching Destinations failed; retrying");
                continue;
            }
        };
        if !destination.annotations().contains_key(ANNOTATION) {
            continue;
        }
        let key = ObjectKey::new(
            destination.namespace().unwrap_or_default(),
            destination.name_any(),
        );
        // Only this gateway's destinations: another installation's annotation is not ours
        // to act on or remove.
        if !config.borrow().destinations.contains_key(&key) {
            continue;
        }
        match circuits.reset(&key).await {
            Ok(view) => {
                info!(destination = %key, state = %view.state, "circuit reset by annotation")
            }
            Err(e) => {
                // The annotation stays, so the next change of the object tries again.
                warn!(destination = %key, error = %crate::store::error_chain(&e), "cannot reset the circuit");
                continue;
            }
        }
        let remove = serde_json::json!({"metadata": {"annotations": {ANNOTATION: null}}});
        let namespaced = Api::<Destination>::namespaced(cluster.client.clone(), &key.namespace);
        if let Err(e) = namespaced
            .patch(
                &key.name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&remove),
            )
            .await
        {
            warn!(destination = %key, error = %e, "cannot remove the reset-circuit annotation");
        }
    }
}
