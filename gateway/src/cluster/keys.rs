//! API keys from Secrets labelled `hookstream.io/api-key=true` in the gateway's namespace:
//! every value of such a Secret that is a well-formed key is accepted, alongside the keys of
//! `HOOKSTREAM_API_KEYS`, with the namespaces its `hookstream.io/namespaces` annotation
//! lists (all without it; see [`crate::access`]). Deleting the Secret (or the value) revokes
//! the key.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::Cluster;
use crate::access::{keys_of_secret, ApiKeys, ScopedKey};

pub use crate::access::LABEL;

/// Keeps `keys` equal to the startup keys plus the keys in labelled Secrets.
pub async fn watch(cluster: Cluster, keys: ApiKeys) {
    let startup = keys.keys();
    let api = Api::<Secret>::namespaced(cluster.client.clone(), &cluster.namespace);
    let config = watcher::Config::default().labels(&format!("{LABEL}=true"));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    // Keys by Secret name; rebuilt into the accepted set after each change.
    let mut by_secret: BTreeMap<String, Vec<ScopedKey>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Vec<ScopedKey>>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listing = Some(BTreeMap::new());
                continue;
            }
            Ok(watcher::Event::InitApply(secret)) => {
                let name = secret.name_any();
                let found = keys_of_secret(&secret);
                listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, found);
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                by_secret = listing.take().unwrap_or_default();
            }
            Ok(watcher::Event::Apply(secret)) => {
                by_secret.insert(secret.name_any(), keys_of_secret(&secret));
            }
            Ok(watcher::Event::Delete(secret)) => {
                by_secret.remove(&secret.name_any());
            }
            Err(e) => {
                warn!(namespace = %cluster.namespace, error = %e, "watching API key Secrets failed; retrying");
                continue;
            }
        }
        let mut all = startup.clone();
        all.extend(by_secret.values().flatten().cloned());
        info!(
            secrets = by_secret.len(),
            keys = all.len(),
            "API keys updated"
        );
        keys.replace(all);
    }
}
