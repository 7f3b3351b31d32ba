//! The controllers.
//!
//! Every object of the five kinds is watched by a kube-runtime `Controller` of its kind; their
//! caches, plus a cache of Secrets, are the operator's view of the cluster. One compile loop
//! turns the whole view into a [`Compilation`] whenever anything in it changes (an object, a
//! deletion, a referenced Secret, the config Secret itself), writes the gateway config Secret,
//! and publishes the compilation. Publishing re-reconciles every object; a reconcile compares
//! the status the compilation implies with the object's status and writes only a difference.
//! So a change anywhere (a Destination created, a Secret rotated) re-reconciles whatever
//! depends on it, and a reconcile never acts on a compilation older than the object.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use hookstream_crds::compiler::{compile_serving, Compilation, LastValid, Objects, Served};
use hookstream_crds::config::ObjectKey;
use hookstream_crds::v1alpha1::{
    AlertRule, Connection, Destination, Source, Topic, CONDITION_READY,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::{ByteString, NamespaceResourceScope};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::status::{self, Verdict};

/// Field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "hookstream-operator";
/// Key of the compiled config (JSON) in the gateway config Secret, shared with the gateway.
pub use hookstream_crds::config::CONFIG_KEY;
/// Key of the config Secret holding the last valid version of each object, so that a
/// restarted operator keeps serving them while their current versions are broken.
pub const LAST_VALID_KEY: &str = "last-valid.json";
/// Quiet time after a change before compiling, so a `kubectl apply` of many objects compiles
/// once or twice rather than once per object.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the compile loop looks for changes nobody announced (deletions, Secrets).
const POLL: Duration = Duration::from_millis(250);
/// Periodic re-check of an object whose status is right.
const RESYNC: Duration = Duration::from_secs(600);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the operator needs to know besides the cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// The Secret the compiled gateway config is written to.
    pub config_secret: ObjectKey,
    /// Base of ingest and publish URLs written into status.
    pub ingest_base_url: String,
    /// Name of this replica, for Events.
    pub instance: String,
    /// Only this namespace's objects (and Secrets) are watched; all namespaces when unset.
    pub watch_namespace: Option<String>,
    /// Where the gateway's deliveries may connect: Destinations at a denied literal address
    /// are refused.
    pub egress: hookstream_crds::egress::EgressPolicy,
}

impl Options {
    fn api<K: Managed>(&self, client: Client) -> Api<K> {
        match &self.watch_namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

/// A kind the operator manages.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Kind name, as the compiler reports it.
    const KIND: &'static str;
    /// Current observed generation, conditions and URL in status.
    fn current(&self) -> (Option<i64>, &[Condition], Option<&str>);
    /// The status field holding this kind's URL and its value, for kinds that have one.
    fn url(_base: &str, _key: &ObjectKey) -> Option<(&'static str, String)> {
        None
    }
}

macro_rules! status_parts {
    ($object:expr, $url:ident) => {
        match &$object.status {
            Some(s) => (s.observed_generation, &s.conditions[..], s.$url.as_deref()),
            None => (None, &[][..], None),
        }
    };
    ($object:expr) => {
        match &$object.status {
            Some(s) => (s.observed_generation, &s.conditions[..], None),
            None => (None, &[][..], None),
        }
    };
}

impl Managed for Source {
    const KIND: &'static str = "Source";
    fn current(&self) -> (Option<i64>, &[Condition], Option<&str>) {
        status_parts!(self, ingest_url)
    }
    fn url(base: &str, key: &ObjectKey) -> Option<(&'static str, String)> {
        Some(("ingestUrl", status::ingest_url(base, key)))
    }
}

impl Managed for Destination {
    const KIND: &'static str = "Destination";
    fn current(&self) -> (Option<i64>, &[Condition], Option<&str>) {
        status_parts!(self)
    }
}

impl Managed for Connection {
    const KIND: &'static str = "Connection";
    fn current(&self) -> (Option<i64>, &[Condition], Option<&str>) {
        status_parts!(self)
    }
}

impl Managed for Topic {
    const KIND: &'static str = "Topic";
    fn current(&self) -> (Option<i64>, &[Condition], Option<&str>) {
        status_parts!(self, publish_url)
    }
    fn url(base: &str, key: &ObjectKey) -> Option<(&'static str, String)> {
        Some(("publishUrl", status::publish_url(base, key)))
    }
}

impl Managed for AlertRule {
    const KIND: &'static str = "AlertRule";
    fn current(&self) -> (Option<i64>, &[Condition], Option<&str>) {
        status_parts!(self)
    }
}

/// Which version of an object a compilation saw: its uid and generation.
type Seen = HashMap<(&'static str, ObjectKey), (Option<String>, Option<i64>)>;

/// One compilation and the object versions it was made from.
pub struct Snapshot {
    /// What is served, each object's problems, and which objects are served in an earlier
    /// version.
    pub served: Served,
    seen: Seen,
}

/// Errors of one reconcile; the object is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

struct Shared {
    client: Client,
    options: Options,
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    recorder: Recorder,
    metrics: Metrics,
    failures: Mutex<HashMap<(&'static str, ObjectKey), u32>>,
    wake: Notify,
    /// The last valid versions (`None` until read back from the config Secret).
    last_valid: Mutex<Option<LastValid>>,
}

struct Stores {
    sources: Store<Source>,
    destinations: Store<Destination>,
    connections: Store<Connection>,
    topics: Store<Topic>,
    alert_rules: Store<AlertRule>,
    secrets: Store<Secret>,
}

fn key_of<K: ResourceExt>(object: &K) -> ObjectKey {
    ObjectKey::new(object.namespace().unwrap_or_default(), object.name_any())
}

/// Runs the controllers until `shutdown` turns true.
pub async fn run(
    client: Client,
    options: Options,
    metrics: Metrics,
    ready: watch::Sender<bool>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(options.instance.clone()),
        },
    );
    let shared = Arc::new(Shared {
        client: client.clone(),
        options,
        snapshot: watch::channel(None).0,
        recorder,
        metrics,
        failures: Mutex::default(),
        wake: Notify::new(),
        last_valid: Mutex::new(None),
    });

    let (sources, run_sources) = controller::<Source>(&shared, &shutdown);
    let (destinations, run_destinations) = controller::<Destination>(&shared, &shutdown);
    let (connections, run_connections) = controller::<Connection>(&shared, &shutdown);
    let (topics, run_topics) = controller::<Topic>(&shared, &shutdown);
    let (alert_rules, run_alert_rules) = controller::<AlertRule>(&shared, &shutdown);

    let (secrets, writer) = reflector::store::<Secret>();
    let watch_namespace = shared.options.watch_namespace.clone();
    let wake = shared.clone();
    let mut stop = shutdown.clone();
    let secret_watch = async move {
        let stream = reflector::reflector(
            writer,
            watcher(
                match &watch_namespace {
                    Some(ns) => Api::<Secret>::namespaced(client, ns),
                    None => Api::<Secret>::all(client),
                },
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                item = stream.next() => match item {
                    Some(Ok(_)) => wake.wake.notify_one(),
                    Some(Err(e)) => warn!(error = %e, "watching Secrets failed; retrying"),
                    None => return,
                },
            }
        }
    };

    let stores = Stores {
        sources,
        destinations,
        connections,
        topics,
        alert_rules,
        secrets,
    };
    let compiler = compile_loop(shared.clone(), stores, ready, shutdown.clone());
    tokio::join!(
        run_sources,
        run_destinations,
        run_connections,
        run_topics,
        run_alert_rules,
        secret_watch,
        compiler,
    );
    Ok(())
}

fn controller<K: Managed>(
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
) -> (Store<K>, impl std::future::Future<Output = ()>) {
    let mut stop = shutdown.clone();
    let api = shared.options.api::<K>(shared.client.clone());
    let controller = Controller::new(api, watcher::Config::default())
        .reconcile_all_on(changes(shared.snapshot.subscribe()))
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let store = controller.store();
    let run = controller
        .run(reconcile::<K>, error_policy::<K>, shared.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(kind = K::KIND, error = %e, "controller");
            }
        });
    (store, run)
}

/// One item per change of `rx`.
fn changes<T: Send + Sync + 'static>(rx: watch::Receiver<T>) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

async fn compile_loop(
    shared: Arc<Shared>,
    stores: Stores,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Compiling before every cache holds the whole cluster would write a config missing
    // objects, and the gateway would drop their routes until the next compilation.
    let synced = async {
        let _ = tokio::join!(
            stores.sources.wait_until_ready(),
            stores.destinations.wait_until_ready(),
            stores.connections.wait_until_ready(),
            stores.topics.wait_until_ready(),
            stores.alert_rules.wait_until_ready(),
            stores.secrets.wait_until_ready(),
        );
    };
    tokio::select! {
        _ = synced => info!("caches synced"),
        _ = shutdown.wait_for(|s| *s) => return,
    }
    let mut done: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        let fingerprint = fingerprint(&stores, &shared.options.config_secret);
        if done != Some(fingerprint) {
            let started = Instant::now();
            match compile_and_write(&shared, &stores).await {
                Ok(written) => {
                    done = Some(fingerprint);
                    failures = 0;
                    let _ = ready.send(true);
                    shared
                        .metrics
                        .compilations
                        .with_label_values(&[if written { "written" } else { "unchanged" }])
                        .inc();
                }
                Err(e) => {
                    failures += 1;
                    let delay = backoff(failures);
                    warn!(error = %e, retry_in = ?delay, "cannot write the gateway config");
                    shared
                        .metrics
                        .compilations
                        .with_label_values(&["error"])
                        .inc();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => continue,
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
            shared
                .metrics
                .compile_duration
                .observe(started.elapsed().as_secs_f64());
        }
        tokio::select! {
            _ = shared.wake.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// A hash of every object version the compilation depends on.
fn fingerprint(stores: &Stores, config_secret: &ObjectKey) -> u64 {
    fn add<K: Managed>(hasher: &mut Vec<(String, String, String, Option<i64>)>, store: &Store<K>) {
        for o in store.state() {
            let meta = o.meta();
            hasher.push((
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
                meta.uid.clone().unwrap_or_default(),
                meta.generation,
            ));
        }
    }
    let mut all = Vec::new();
    add(&mut all, &stores.sources);
    add(&mut all, &stores.destinations);
    add(&mut all, &stores.connections);
    add(&mut all, &stores.topics);
    add(&mut all, &stores.alert_rules);
    let namespaces: BTreeSet<&str> = all.iter().map(|(ns, ..)| ns.as_str()).collect();
    let mut secrets: Vec<(String, String, String)> = stores
        .secrets
        .state()
        .iter()
        .filter(|s| {
            let ns = s.namespace().unwrap_or_default();
            namespaces.contains(ns.as_str())
                || (ns == config_secret.namespace && s.name_any() == config_secret.name)
        })
        .map(|s| {
            (
                s.namespace().unwrap_or_default(),
                s.name_any(),
                s.resource_version().unwrap_or_default(),
            )
        })
        .collect();
    all.sort_unstable();
    secrets.sort_unstable();
    let mut hasher = DefaultHasher::new();
    all.hash(&mut hasher);
    secrets.hash(&mut hasher);
    hasher.finish()
}

/// Compiles the cached objects, writes the config Secret when its content changes, and
/// publishes the compilation. Returns whether the Secret was written.
async fn compile_and_write(shared: &Shared, stores: &Stores) -> anyhow::Result<bool> {
    let mut seen = Seen::new();
    // Sorted, so that the same objects always compile to the same bytes (the store's order
    // is arbitrary) and an unchanged cluster never rewrites the Secret.
    fn take<K: Managed>(store: &Store<K>, seen: &mut Seen) -> Vec<K> {
        let mut all = store.state();
        all.sort_by_key(|o| key_of(&**o));
        all.into_iter()
            .map(|o| {
                seen.insert(
                    (K::KIND, key_of(&*o)),
                    (o.meta().uid.clone(), o.meta().generation),
                );
                (*o).clone()
            })
            .collect()
    }
    let mut objects = Objects {
        sources: take(&stores.sources, &mut seen),
        destinations: take(&stores.destinations, &mut seen),
        connections: take(&stores.connections, &mut seen),
        topics: take(&stores.topics, &mut seen),
        alert_rules: take(&stores.alert_rules, &mut seen),
        egress: shared.options.egress.clone(),
        ..Objects::default()
    };
    let namespaces: BTreeSet<String> = seen.keys().map(|(_, k)| k.namespace.clone()).collect();
    objects.secrets = stores
        .secrets
        .state()
        .iter()
        .filter(|s| namespaces.contains(&s.namespace().unwrap_or_default()))
        .map(|s| (**s).clone())
        .collect();
    objects.secrets.sort_by_key(key_of);
    let target = &shared.options.config_secret;
    let written = stores
        .secrets
        .get(&ObjectRef::new(&target.name).within(&target.namespace));
    let stored = |key: &str| {
        written
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(key).map(|v| v.0.clone()))
    };
    let previous = {
        let mut last = shared.last_valid.lock().unwrap_or_else(|p| p.into_inner());
        last.get_or_insert_with(|| {
            // A restarted operator picks up where the last one left off.
            stored(LAST_VALID_KEY)
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .unwrap_or_default()
        })
        .clone()
    };
    let served = tokio::task::spawn_blocking(move || compile_serving(&objects, &previous)).await?;
    let compilation = &served.compilation;
    let data = serde_json::to_vec(&compilation.config)?;
    let kept = serde_json::to_vec(&served.last_valid)?;
    let write = stored(CONFIG_KEY).as_deref() != Some(data.as_slice())
        || stored(LAST_VALID_KEY).as_deref() != Some(kept.as_slice());
    if write {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(target.name.clone()),
                namespace: Some(target.namespace.clone()),
                labels: Some(
                    [
                        ("app.kubernetes.io/managed-by", FIELD_MANAGER),
                        ("app.kubernetes.io/part-of", "hookstream"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(
                [
                    (CONFIG_KEY.to_owned(), ByteString(data)),
                    (LAST_VALID_KEY.to_owned(), ByteString(kept)),
                ]
                .into(),
            ),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(shared.client.clone(), &target.namespace)
            .patch(
                &target.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        shared.metrics.config_writes.inc();
        info!(
            sources = compilation.config.sources.len(),
            destinations = compilation.config.destinations.len(),
            connections = compilation.config.connections.len(),
            topics = compilation.config.topics.len(),
            invalid_objects = invalid_objects(compilation),
            served_from_last_valid = served.from_last_valid.len(),
            secret = %target,
            "gateway config written"
        );
    }
    count_objects(&shared.metrics, &seen, compilation);
    *shared.last_valid.lock().unwrap_or_else(|p| p.into_inner()) = Some(served.last_valid.clone());
    shared
        .snapshot
        .send_replace(Some(Arc::new(Snapshot { served, seen })));
    Ok(write)
}

fn invalid_objects(compilation: &Compilation) -> usize {
    compilation
        .errors
        .iter()
        .map(|e| (&e.kind, &e.object))
        .collect::<BTreeSet<_>>()
        .len()
}

fn count_objects(metrics: &Metrics, seen: &Seen, compilation: &Compilation) {
    let broken: BTreeSet<(&str, &ObjectKey)> = compilation
        .errors
        .iter()
        .map(|e| (e.kind.as_str(), &e.object))
        .collect();
    metrics.objects.reset();
    for (kind, key) in seen.keys() {
        let ready = !broken.contains(&(*kind, key)) && *kind != AlertRule::KIND;
        metrics
            .objects
            .with_label_values(&[*kind, if ready { "true" } else { "false" }])
            .inc();
    }
}

async fn reconcile<K: Managed>(object: Arc<K>, shared: Arc<Shared>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = key_of(&*object);
    let snapshot = shared.snapshot.borrow().clone();
    let version = (object.meta().uid.clone(), object.meta().generation);
    let result = match snapshot.filter(|s| s.seen.get(&(K::KIND, key.clone())) == Some(&version)) {
        // The compile loop has not seen this version yet; publishing it re-reconciles.
        None => {
            shared.wake.notify_one();
            Ok(("stale", Action::await_change()))
        }
        Some(snapshot) => write_status(&*object, &key, &snapshot, &shared).await,
    };
    let outcome = match &result {
        Ok((outcome, _)) => {
            shared
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(K::KIND, key));
            *outcome
        }
        Err(_) => "error",
    };
    shared
        .metrics
        .reconciliations
        .with_label_values(&[K::KIND, outcome])
        .inc();
    shared
        .metrics
        .reconcile_duration
        .with_label_values(&[K::KIND])
        .observe(started.elapsed().as_secs_f64());
    result.map(|(_, action)| action)
}

async fn write_status<K: Managed>(
    object: &K,
    key: &ObjectKey,
    snapshot: &Snapshot,
    shared: &Shared,
) -> Result<(&'static str, Action), Error> {
    let generation = object.meta().generation;
    let (current_generation, current, current_url) = object.current();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let verdict = Verdict::of(&snapshot.served, K::KIND, key);
    let conditions = status::conditions(&verdict, generation, current, &now);
    let serving = verdict.serving_generation(generation);
    let url = K::url(&shared.options.ingest_base_url, key);
    let unchanged = current_generation == generation
        && conditions == current
        && url.as_ref().map(|(_, u)| u.as_str()) == current_url;
    if unchanged {
        return Ok(("unchanged", Action::requeue(RESYNC)));
    }
    let mut status = serde_json::json!({
        "observedGeneration": generation,
        "servingGeneration": serving,
        "conditions": conditions,
    });
    if let Some((field, value)) = &url {
        status[*field] = serde_json::Value::String(value.clone());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::KIND,
        "status": status,
    });
    Api::<K>::namespaced(shared.client.clone(), &key.namespace)
        .patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    announce(object, current, &conditions, shared).await;
    Ok(("updated", Action::requeue(RESYNC)))
}

/// A Kubernetes Event when the Ready condition changes status or reason.
async fn announce<K: Managed>(
    object: &K,
    before: &[Condition],
    after: &[Condition],
    shared: &Shared,
) {
    let ready = |list: &[Condition]| {
        list.iter()
            .find(|c| c.type_ == CONDITION_READY)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (Some((status, reason, message)), previous) = (ready(after), ready(before)) else {
        return;
    };
    if previous
        .as_ref()
        .is_some_and(|(s, r, _)| *s == status && *r == reason)
    {
        return;
    }
    let event = Event {
        // A broken edit served in its last valid version is still worth a warning.
        type_: if status == "True" && reason != status::REASON_LAST_VALID {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason,
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    if let Err(e) = shared
        .recorder
        .publish(&event, &object.object_ref(&()))
        .await
    {
        warn!(kind = K::KIND, object = %key_of(object), error = %e, "cannot record an Event");
    }
}

fn error_policy<K: Managed>(object: Arc<K>, error: &Error, shared: Arc<Shared>) -> Action {
    let key = key_of(&*object);
    let mut failures = shared.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures.entry((K::KIND, key.clone())).or_insert(0);
    *count += 1;
    let delay = backoff(*count);
    warn!(kind = K::KIND, object = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// 500 ms doubling per failure, at most five minutes.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (Duration::from_millis(500) * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }
}
