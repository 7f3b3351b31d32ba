//! API keys from Secrets labelled `hookstream.io/api-key=true` in the gateway's namespace:
//! every value of such a Secret that is a well-formed key is accepted, alongside the keys of
//! `HOOKSTREAM_API_KEYS`. Deleting the Secret (or the value) revokes the key.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::Cluster;
use crate::http::auth::{self, ApiKeys};

/// The label that marks a Secret as holding API keys.
pub const LABEL: &str = "hookstream.io/api-key";

/// Keeps `keys` equal to the startup keys plus the keys in labelled Secrets.
pub async fn watch(cluster: Cluster, keys: ApiKeys) {
    let startup = keys.hashes();
    let api = Api::<Secret>::namespaced(cluster.client.clone(), &cluster.namespace);
    let config = watcher::Config::default().labels(&format!("{LABEL}=true"));
    let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
    // Hashes by Secret name; rebuilt into the accepted set after each change.
    let mut by_secret: BTreeMap<String, Vec<[u8; 32]>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Vec<[u8; 32]>>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => {
                listing = Some(BTreeMap::new());
                continue;
            }
            Ok(watcher::Event::InitApply(secret)) => {
                let name = secret.name_any();
                let hashes = hashes_of(&secret);
                listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, hashes);
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                by_secret = listing.take().unwrap_or_default();
            }
            Ok(watcher::Event::Apply(secret)) => {
                by_secret.insert(secret.name_any(), hashes_of(&secret));
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
        all.extend(by_secret.values().flatten().copied());
        info!(
            secrets = by_secret.len(),
            keys = all.len(),
            "API keys updated"
        );
        keys.replace(all);
    }
}

fn hashes_of(secret: &Secret) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    for (key, value) in secret.data.iter().flatten() {
        match std::str::from_utf8(&value.0)
            .ok()
            .and_then(|v| auth::hash_if_valid(v.trim()))
        {
            Some(hash) => out.push(hash),
            // Never the value itself: only where it is.
            None => warn!(
                secret = %secret.name_any(),
                key = %key,
                "ignoring a value that is not an API key (hs_live_ or hs_test_ and 64 hex digits)"
            ),
        }
    }
    out
}
