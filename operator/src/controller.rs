//! The controllers.
//!
//! Every object of the five kinds is watched by a kube-runtime `Controller` of its kind (one
//! per watched namespace, or one for all namespaces); their caches, plus the Secrets the
//! objects reference (fetched by name: see [`crate::secrets`]), are the operator's view of
//! the cluster. One compile loop turns the whole view into a [`Compilation`] whenever
//! anything in it changes (an object, a deletion, a referenced Secret, the config Secret
//! itself), writes the gateway config Secret, and publishes the compilation. Publishing
//! re-reconciles every object; a reconcile compares the status the compilation implies with
//! the object's status and writes only a difference. So a change anywhere (a Destination
//! created, a Secret rotated) re-reconciles whatever depends on it, and a reconcile never acts
//! on a compilation older than the object.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
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
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::secrets::{self, SecretCache};
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
    /// Only these namespaces' objects (and the Secrets they reference) are read; all
    /// namespaces when empty.
    pub watch_namespaces: Vec<String>,
    /// Where the gateway's deliveries may connect: Destinations at a denied literal address
    /// are refused.
    pub egress: hookstream_crds::egress::EgressPolicy,
}

impl Options {
    /// One API per watched namespace, or one for all namespaces.
    fn apis<K: Managed>(&self, client: Client) -> Vec<Api<K>> {
        if self.watch_namespaces.is_empty() {
            return vec![Api::all(client)];
        }
        self.watch_namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
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
    sources: Cache<Source>,
    destinations: Cache<Destination>,
    connections: Cache<Connection>,
    topics: Cache<Topic>,
    alert_rules: Cache<AlertRule>,
    secrets: SecretCache,
}

impl Stores {
    /// The Secrets the cached objects reference, those their last valid versions reference
    /// (an earlier version served while an edit is broken compiles with its own Secrets), and
    /// the config Secret.
    fn wanted_secrets(&self, shared: &Shared) -> BTreeSet<ObjectKey> {
        let (sources, destinations, rules) = (
            self.sources.state(),
            self.destinations.state(),
            self.alert_rules.state(),
        );
        let mut wanted = secrets::referenced(
            sources.iter().map(|o| &**o),
            destinations.iter().map(|o| &**o),
            rules.iter().map(|o| &**o),
        );
        if let Some(last) = &*shared.last_valid.lock().unwrap_or_else(|p| p.into_inner()) {
            wanted.extend(secrets::referenced(
                last.sources.values(),
                last.destinations.values(),
                last.alert_rules.values(),
            ));
        }
        wanted.insert(shared.options.config_secret.clone());
        wanted
    }
}

/// The cached objects of one kind: one store per watched namespace.
struct Cache<K: Managed>(Vec<Store<K>>);

impl<K: Managed> Cache<K> {
    /// Every cached object, from every store.
    fn state(&self) -> Vec<Arc<K>> {
        self.0.iter().flat_map(Store::state).collect()
    }

    /// Waits until every store holds its namespace's objects.
    async fn wait_until_ready(&self) {
        futures::future::join_all(self.0.iter().map(Store::wait_until_ready)).await;
    }
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

    let stores = Stores {
        sources,
        destinations,
        connections,
        topics,
        alert_rules,
        secrets: SecretCache::new(client),
    };
    let compiler = compile_loop(shared.clone(), stores, ready, shutdown.clone());
    tokio::join!(
        run_sources,
        run_destinations,
        run_connections,
        run_topics,
        run_alert_rules,
        compiler,
    );
    Ok(())
}

/// The controllers of kind `K`, one per watched namespace (or one for all), and their caches.
fn controller<K: Managed>(
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
) -> (Cache<K>, impl std::future::Future<Output = ()>) {
    let mut stores = Vec::new();
    let mut runs = Vec::new();
    for api in shared.options.apis::<K>(shared.client.clone()) {
        let mut stop = shutdown.clone();
        let controller = Controller::new(api, watcher::Config::default())
            .reconcile_all_on(changes(shared.snapshot.subscribe()))
            .graceful_shutdown_on(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        stores.push(controller.store());
        runs.push(
            controller
                .run(reconcile::<K>, error_policy::<K>, shared.clone())
                .for_each(|result| async move {
                    if let Err(e) = result {
                        debug!(kind = K::KIND, error = %e, "controller");
                    }
                }),
        );
    }
    let run = futures::future::join_all(runs).map(|_| ());
    (Cache(stores), run)
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
        );
    };
    tokio::select! {
        _ = synced => info!("caches synced"),
        _ = shutdown.wait_for(|s| *s) => return,
    }
    load_last_valid(&shared, &stores).await;
    let mut done: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        // The referenced Secrets are fetched before compiling: a reference compiles as
        // missing only when its Secret really is.
        let wanted = stores.wanted_secrets(&shared);
        if let Err(e) = stores.secrets.refresh(&wanted).await {
            warn!(error = %e, "cannot read referenced Secrets; retrying");
            tokio::select! {
                _ = tokio::time::sleep(POLL) => continue,
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        let fingerprint = fingerprint(&stores);
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

/// Reads the last valid versions a previous leader kept in the config Secret, so that the
/// Secrets they reference are fetched before the first compilation. Leaves them unset when
/// the config Secret cannot be read (the first compilation reads it again).
async fn load_last_valid(shared: &Shared, stores: &Stores) {
    let target = &shared.options.config_secret;
    if let Err(e) = stores
        .secrets
        .refresh(&BTreeSet::from([target.clone()]))
        .await
    {
        debug!(error = %e, "cannot read the config Secret yet");
        return;
    }
    let kept = stores
        .secrets
        .get(target)
        .and_then(|s| s.data.as_ref()?.get(LAST_VALID_KEY).map(|v| v.0.clone()))
        .and_then(|bytes| serde_json::from_slice::<LastValid>(&bytes).ok());
    if let Some(kept) = kept {
        let mut last = shared.last_valid.lock().unwrap_or_else(|p| p.into_inner());
        last.get_or_insert(kept);
    }
}

/// A hash of every object and Secret version the compilation depends on.
fn fingerprint(stores: &Stores) -> u64 {
    fn add<K: Managed>(hasher: &mut Vec<(String, String, String, Option<i64>)>, store: &Cache<K>) {
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
    all.sort_unstable();
    let mut hasher = DefaultHasher::new();
    all.hash(&mut hasher);
    stores.secrets.versions().hash(&mut hasher);
    hasher.finish()
}

/// Compiles the cached objects, writes the config Secret when its content changes, and
/// publishes the compilation. Returns whether the Secret was written.
async fn compile_and_write(shared: &Shared, stores: &Stores) -> anyhow::Result<bool> {
    let mut seen = Seen::new();
    // Sorted, so that the same objects always compile to the same bytes (the store's order
    // is arbitrary) and an unchanged cluster never rewrites the Secret.
    fn take<K: Managed>(store: &Cache<K>, seen: &mut Seen) -> Vec<K> {
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
    // Only referenced Secrets are cached (sorted), and the compiler reads no other.
    objects.secrets = stores.secrets.present();
    let target = &shared.options.config_secret;
    let written = stores.secrets.get(target);
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
        let written = Api::<Secret>::namespaced(shared.client.clone(), &target.namespace)
            .patch(
                &target.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await?;
        // What was written is the config Secret's content now: not written again next pass.
        stores.secrets.store(target.clone(), Some(written));
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
