//! The Secrets the operator reads: only those that objects reference, and its own config
//! Secret, each fetched by name.
//!
//! The operator never lists or watches Secrets, so its RBAC grants `get` on Secrets and no
//! `list` or `watch`: it cannot enumerate a namespace's Secrets, and it holds in memory only
//! the Secrets that a Source, Destination or AlertRule of a watched namespace names (plus the
//! config Secret it writes). A label selector cannot do this, since users' Secrets carry no
//! hookstream label.
//!
//! A Secret is fetched as soon as an object names it, before the next compilation, so a new
//! reference never compiles as "not found" for lack of a fetch. Afterwards each one is
//! fetched again at most every [`REFRESH`], at most [`BUDGET`] of them per pass (oldest
//! first), which is how a rotation or a deletion is noticed: within a few seconds for a few
//! dozen Secrets, and with a bounded load on the API server for many. A Secret that no object
//! names any more is dropped at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hookstream_crds::config::ObjectKey;
use hookstream_crds::v1alpha1::{AlertRule, Destination, SecretKeyRef, Source};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

/// How often a cached Secret is fetched again, at most.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Most Secrets fetched again in one pass (a pass runs about four times a second).
pub const BUDGET: usize = 8;
/// Most requests in flight at once.
const CONCURRENCY: usize = 16;

/// A fetched Secret: `None` when it does not exist (or may not be read).
struct Entry {
    secret: Option<Arc<Secret>>,
    fetched: Instant,
}

/// The referenced Secrets, fetched by name.
pub struct SecretCache {
    client: Client,
    entries: Mutex<HashMap<ObjectKey, Entry>>,
}

impl SecretCache {
    /// An empty cache that fetches with `client`.
    pub fn new(client: Client) -> SecretCache {
        SecretCache {
            client,
            entries: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the cache in line with `wanted`: drops the Secrets no longer wanted, fetches
    /// the wanted ones never fetched, and fetches again up to [`BUDGET`] of those older than
    /// [`REFRESH`]. Fails only when a Secret never fetched could not be read for a reason
    /// other than its absence or a refusal (then compiling would wrongly call it missing).
    pub async fn refresh(&self, wanted: &BTreeSet<ObjectKey>) -> Result<(), kube::Error> {
        let (new, stale) = self.due(wanted);
        let first = new.into_iter().map(|key| (key, true));
        let again = stale.into_iter().map(|key| (key, false));
        let mut fetches = futures::stream::iter(first.chain(again))
            .map(|(key, first)| async move {
                let result = self.fetch(&key, first).await;
                (key, first, result)
            })
            .buffer_unordered(CONCURRENCY);
        let mut failed = None;
        while let Some((key, first, result)) = fetches.next().await {
            match result {
                Ok(secret) => self.store(key, secret),
                Err(e) if first => failed = Some(e),
                // Keep what was read last; the next pass tries again.
                Err(e) => debug!(secret = %key, error = %e, "cannot fetch a Secret again"),
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Which wanted Secrets were never fetched, and which are due again (oldest first, at
    /// most [`BUDGET`]). Forgets the Secrets not wanted.
    fn due(&self, wanted: &BTreeSet<ObjectKey>) -> (Vec<ObjectKey>, Vec<ObjectKey>) {
        let mut entries = self.entries();
        entries.retain(|key, _| wanted.contains(key));
        let new = wanted
            .iter()
            .filter(|key| !entries.contains_key(*key))
            .cloned()
            .collect();
        let now = Instant::now();
        let mut stale: Vec<(Instant, &ObjectKey)> = entries
            .iter()
            .filter(|(_, e)| now.duration_since(e.fetched) >= REFRESH)
            .map(|(key, e)| (e.fetched, key))
            .collect();
        stale.sort();
        let stale = stale
            .into_iter()
            .take(BUDGET)
            .map(|(_, key)| key.clone())
            .collect();
        (new, stale)
    }

    /// Reads one Secret: `None` when it does not exist, or when the operator may not read
    /// it (an RBAC setup problem, logged as a warning on the `first` read).
    async fn fetch(&self, key: &ObjectKey, first: bool) -> Result<Option<Secret>, kube::Error> {
        let api = Api::<Secret>::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.name).await {
            Ok(secret) => Ok(secret),
            Err(kube::Error::Api(status)) if status.code == 403 => {
                if first {
                    warn!(secret = %key, "not allowed to read a referenced Secret; treating it as missing");
                } else {
                    debug!(secret = %key, "not allowed to read a referenced Secret");
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Records `secret` as the current content of `key`, as fetched now.
    pub fn store(&self, key: ObjectKey, secret: Option<Secret>) {
        let entry = Entry {
            secret: secret.map(Arc::new),
            fetched: Instant::now(),
        };
        self.entries().insert(key, entry);
    }

    /// The cached Secret `key`, if it exists.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<Secret>> {
        self.entries().get(key)?.secret.clone()
    }

    /// Every cached Secret that exists, sorted by namespace and name.
    pub fn present(&self) -> Vec<Secret> {
        let mut all: Vec<Secret> = self
            .entries()
            .values()
            .filter_map(|e| e.secret.as_deref().cloned())
            .collect();
        all.sort_by_key(|s| ObjectKey::new(s.namespace().unwrap_or_default(), s.name_any()));
        all
    }

    /// Each cached Secret's key and resource version (`None`: it does not exist), sorted:
    /// what a compilation depends on.
    pub fn versions(&self) -> Vec<(ObjectKey, Option<String>)> {
        let mut all: Vec<(ObjectKey, Option<String>)> = self
            .entries()
            .iter()
            .map(|(key, e)| {
                let version = e
                    .secret
                    .as_ref()
                    .map(|s| s.resource_version().unwrap_or_default());
                (key.clone(), version)
            })
            .collect();
        all.sort();
        all
    }
}

/// The Secrets (namespace and name) that the given objects reference: Sources' verification
/// secrets, Destinations' credentials, headers and signing secrets, AlertRules' webhook
/// signing secrets. A reference resolves in its object's namespace.
pub fn referenced<'a>(
    sources: impl IntoIterator<Item = &'a Source>,
    destinations: impl IntoIterator<Item = &'a Destination>,
    alert_rules: impl IntoIterator<Item = &'a AlertRule>,
) -> BTreeSet<ObjectKey> {
    let mut out = BTreeSet::new();
    for source in sources {
        let refs = source
            .spec
            .verification
            .iter()
            .flat_map(|v| v.secret_ref.iter().chain(&v.secret_refs));
        add(&mut out, source, refs);
    }
    for destination in destinations {
        let spec = &destination.spec;
        let http = spec
            .http
            .iter()
            .flat_map(|h| h.headers_from.iter().map(|h| &h.secret_ref));
        let signing = spec
            .signing
            .iter()
            .flat_map(|s| std::iter::once(&s.secret_ref).chain(&s.secret_refs));
        let kafka_ca = spec
            .kafka
            .iter()
            .filter_map(|k| k.tls.as_ref()?.ca_secret_ref.as_ref());
        add(&mut out, destination, http.chain(signing).chain(kafka_ca));
        // The credentials Secret is read whole (the broker types read fixed keys).
        if let Some(reference) = &spec.credentials_ref {
            let namespace = destination.namespace().unwrap_or_default();
            out.insert(ObjectKey::new(namespace, reference.name.clone()));
        }
    }
    for rule in alert_rules {
        let refs = rule
            .spec
            .channels
            .iter()
            .filter_map(|c| c.webhook.as_ref()?.secret_ref.as_ref());
        add(&mut out, rule, refs);
    }
    out
}

/// Adds `refs` of `object`, in the object's namespace.
fn add<'a, K: ResourceExt>(
    out: &mut BTreeSet<ObjectKey>,
    object: &K,
    refs: impl IntoIterator<Item = &'a SecretKeyRef>,
) {
    let namespace = object.namespace().unwrap_or_default();
    for r in refs {
        out.insert(ObjectKey::new(namespace.clone(), r.name.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::compiler::{compile, Objects, Reason};
    use hookstream_crds::manifest::parse_into;

    /// Objects that use every kind of Secret reference, and no Secret.
    const OBJECTS: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: src, namespace: a}
spec:
  verification:
    type: hmac-sha256
    secretRef: {name: v1, key: k}
    secretRefs: [{name: v2, key: k}]
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: dst, namespace: b}
spec:
  type: http
  template: pagerduty
  credentialsRef: {name: cred, key: k}
  http:
    url: "http://192.0.2.1/x"
    headersFrom: [{name: Authorization, secretRef: {name: header, key: k}}]
  signing: {secretRef: {name: sign1, key: k}, secretRefs: [{name: sign2, key: k}]}
---
apiVersion: hookstream.io/v1alpha1
kind: AlertRule
metadata: {name: rule, namespace: a}
spec:
  type: dlq
  channels: [{webhook: {url: "http://192.0.2.1/alerts", secretRef: {name: alert, key: k}}}]
"#;

    fn objects() -> Objects {
        let mut objects = Objects::default();
        let errors = parse_into(&mut objects, "refs.yaml", OBJECTS);
        assert!(errors.is_empty(), "{errors:#?}");
        objects
    }

    #[test]
    fn every_kind_of_reference_is_found_in_its_objects_namespace() {
        let objects = objects();
        let found = referenced(
            &objects.sources,
            &objects.destinations,
            &objects.alert_rules,
        );
        let expected: BTreeSet<ObjectKey> = [
            ("a", "v1"),
            ("a", "v2"),
            ("b", "cred"),
            ("b", "header"),
            ("b", "sign1"),
            ("b", "sign2"),
            ("a", "alert"),
        ]
        .into_iter()
        .map(|(ns, name)| ObjectKey::new(ns, name))
        .collect();
        assert_eq!(found, expected);
    }

    /// The compiler looks up no Secret that `referenced` misses: with the found Secrets
    /// present (every key set), no error is about a missing Secret. A reference field added
    /// to the API but not to `referenced` fails here.
    #[test]
    fn the_compiler_resolves_only_referenced_secrets() {
        let mut objects = objects();
        let without = compile(&objects);
        assert!(without
            .errors
            .iter()
            .any(|e| e.reason == Reason::SecretNotFound));
        let found = referenced(
            &objects.sources,
            &objects.destinations,
            &objects.alert_rules,
        );
        objects.secrets = found
            .iter()
            .map(|key| Secret {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(key.name.clone()),
                    namespace: Some(key.namespace.clone()),
                    ..Default::default()
                },
                string_data: Some([("k".to_owned(), "value".to_owned())].into()),
                ..Secret::default()
            })
            .collect();
        let with = compile(&objects);
        let missing: Vec<_> = with
            .errors
            .iter()
            .filter(|e| e.reason == Reason::SecretNotFound)
            .collect();
        assert!(missing.is_empty(), "{missing:#?}");
    }
}
