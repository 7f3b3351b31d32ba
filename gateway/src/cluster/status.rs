//! Runtime status written back onto the resources with the gateway's own server-side-apply
//! field manager: on Sources the events received and the last receive time, on Destinations
//! the circuit (also as the `CircuitOpen` condition, with a Warning Event when it opens and
//! a Normal one when it closes), the delivery counters and the last attempt time. The totals come from the
//! database (so they survive restarts and agree across replicas); one replica, the holder
//! of a Lease, writes them, only when they changed and at most once per interval per object.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::config::ObjectKey;
use hookstream_crds::v1alpha1::{Destination, Source};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Cluster, FIELD_MANAGER, STATUS_LEASE};
use crate::clock::{now_ms, rfc3339_seconds};
use crate::config::ConfigHandle;
use crate::delivery::circuit::{Circuits, View};
use crate::store::{
    CircuitState as State, CounterKey, Counters, ObjectKind, SharedStore, StoreError,
};

/// What the status writer reads: the totals, the circuits and the configured objects.
pub struct Sources {
    /// Totals.
    pub store: SharedStore,
    /// Circuits.
    pub circuits: Arc<Circuits>,
    /// The objects to write status onto.
    pub config: ConfigHandle,
}

/// How often status is compared and, where changed, written.
pub const INTERVAL: Duration = Duration::from_secs(2);
const LEASE_SECONDS: u64 = 15;

/// Writes status while this replica holds the status Lease, until `shutdown`.
pub async fn run(cluster: Cluster, sources: Sources, mut shutdown: watch::Receiver<bool>) {
    let lease = LeaseManagerBuilder::new(cluster.client.clone(), STATUS_LEASE)
        .with_namespace(&cluster.namespace)
        .with_identity(&cluster.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(5)
        .build()
        .await;
    let lease = match lease {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "cannot set up the status Lease; this replica writes no status");
            return;
        }
    };
    let (mut leader, task) = lease.watch().await;
    let recorder = Recorder::new(
        cluster.client.clone(),
        Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(cluster.identity.clone()),
        },
    );
    // What was last written, by object: write again only on a change.
    let mut written: HashMap<(&'static str, ObjectKey), Value> = HashMap::new();
    let mut reports = CircuitReports::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            changed = leader.changed() => {
                if changed.is_err() {
                    break;
                }
                let leading = *leader.borrow_and_update();
                info!(leading, "status Lease {}", if leading { "acquired" } else { "lost" });
                // A new term starts from what is in the cluster, not from memory.
                written.clear();
                reports = CircuitReports::default();
                continue;
            }
            _ = tick.tick() => {}
        }
        if !*leader.borrow() {
            continue;
        }
        match write_changes(&cluster, &sources, &mut written, &mut reports).await {
            Ok(transitions) => {
                for (key, open, message) in transitions {
                    circuit_event(&recorder, &key, open, message).await;
                }
            }
            Err(e) => warn!(error = %e, "cannot read the totals for status"),
        }
    }
    drop(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

/// A circuit that opened (`true`) or closed since the last look, with the words for its Event.
type Transition = (ObjectKey, bool, String);

/// The status every configured object should have, and the circuits that changed.
async fn desired(
    sources: &Sources,
    reports: &mut CircuitReports,
) -> Result<(Vec<((&'static str, ObjectKey), Value)>, Vec<Transition>), StoreError> {
    let totals: HashMap<CounterKey, Counters> =
        sources.store.counters().await?.into_iter().collect();
    let total = |kind: ObjectKind, key: &ObjectKey| {
        totals
            .get(&(kind, key.namespace.clone(), key.name.clone()))
            .cloned()
            .unwrap_or_default()
    };
    let config = sources.config.borrow().clone();
    let mut desired: Vec<((&'static str, ObjectKey), Value)> = Vec::new();
    let mut transitions = Vec::new();
    let now = now_ms();
    for key in config.sources.keys() {
        let t = total(ObjectKind::Source, key);
        desired.push((("Source", key.clone()), source_status(&t)));
    }
    for key in config.destinations.keys() {
        let t = total(ObjectKind::Destination, key);
        let view = sources.circuits.view(key);
        let mut status = destination_status(&t, view.state, view.failure_count);
        let (condition, changed) = reports.observe(key, &view, now);
        if let Some(open) = changed {
            let message = condition["message"].as_str().unwrap_or_default().to_owned();
            transitions.push((key.clone(), open, message));
        }
        status["conditions"] = json!([condition]);
        desired.push((("Destination", key.clone()), status));
    }
    Ok((desired, transitions))
}

/// How old an opening may be and still get its Event when this writer first sees it.
const RECENT_MS: i64 = 60_000;

/// Each destination's circuit as last reported: whether it was open, and since when.
#[derive(Default)]
struct CircuitReports {
    seen: HashMap<ObjectKey, (bool, i64)>,
}

impl CircuitReports {
    /// The `CircuitOpen` condition of `key` now, and `Some(open)` when the circuit opened or
    /// closed since the last look.
    fn observe(&mut self, key: &ObjectKey, view: &View, now: i64) -> (Value, Option<bool>) {
        let open = view.state != State::Closed;
        let (since, changed) = match self.seen.get(key) {
            Some((was, since)) if *was == open => (*since, None),
            Some(_) => (now, Some(open)),
            // Opened before this writer first looked (a new term, a fresh start): still news
            // when it is recent.
            None if open => {
                let opened = view.opened_at.unwrap_or(now);
                let recent = now.saturating_sub(opened) <= RECENT_MS;
                (opened, recent.then_some(true))
            }
            None => (now, None),
        };
        self.seen.insert(key.clone(), (open, since));
        (circuit_condition(view, since), changed)
    }
}

/// The `CircuitOpen` condition the gateway owns on a Destination (the operator owns the
/// others; server-side apply merges them by type).
fn circuit_condition(view: &View, since: i64) -> Value {
    let (status, reason, message) = match view.state {
        State::Open => (
            "True",
            "Open",
            format!(
                "{} consecutive failures opened the circuit: deliveries wait (they are not dropped) until a probe succeeds after the cooldown, or the hookstream.io/reset-circuit annotation resets it",
                view.failure_count
            ),
        ),
        State::HalfOpen => (
            "True",
            "HalfOpen",
            "the cooldown is over and one probe delivery is out; deliveries wait for its result".to_owned(),
        ),
        State::Closed => ("False", "Closed", "deliveries flow".to_owned()),
    };
    json!({
        "type": "CircuitOpen",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339_seconds(since),
    })
}

/// A Warning Event when a Destination's circuit opens, a Normal one when it closes.
async fn circuit_event(recorder: &Recorder, key: &ObjectKey, open: bool, message: String) {
    let event = Event {
        type_: if open {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: if open { "CircuitOpen" } else { "CircuitClosed" }.to_owned(),
        note: Some(message),
        action: "Deliver".to_owned(),
        secondary: None,
    };
    let reference = ObjectReference {
        api_version: Some("hookstream.io/v1alpha1".to_owned()),
        kind: Some("Destination".to_owned()),
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        ..ObjectReference::default()
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        warn!(destination = %key, error = %e, "cannot record an Event");
    }
}

async fn write_changes(
    cluster: &Cluster,
    sources: &Sources,
    written: &mut HashMap<(&'static str, ObjectKey), Value>,
    reports: &mut CircuitReports,
) -> Result<Vec<Transition>, StoreError> {
    let (desired, transitions) = desired(sources, reports).await?;
    for (id, status) in desired {
        if written.get(&id) == Some(&status) {
            continue;
        }
        let (kind, key) = &id;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = match *kind {
            "Source" => {
                let patch = json!({"apiVersion": "hookstream.io/v1alpha1", "kind": "Source", "status": status});
                Api::<Source>::namespaced(cluster.client.clone(), &key.namespace)
                    .patch_status(&key.name, &params, &Patch::Apply(&patch))
                    .await
                    .map(|_| ())
            }
            _ => {
                let patch = json!({"apiVersion": "hookstream.io/v1alpha1", "kind": "Destination", "status": status});
                Api::<Destination>::namespaced(cluster.client.clone(), &key.namespace)
                    .patch_status(&key.name, &params, &Patch::Apply(&patch))
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => {
                debug!(kind, object = %key, "status written");
                written.insert(id, status);
            }
            // Deleted since the config was compiled: the next config drops it.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(kind, object = %key, error = %e, "cannot write status"),
        }
    }
    Ok(transitions)
}

fn source_status(t: &Counters) -> Value {
    let mut status = json!({"eventsReceived": t.received});
    if let Some(at) = t.last_at.and_then(rfc3339_seconds) {
        status["lastReceivedAt"] = Value::String(at);
    }
    status
}

fn destination_status(t: &Counters, state: State, failures: u32) -> Value {
    let state = match state {
        State::Closed => "Closed",
        State::Open => "Open",
        State::HalfOpen => "HalfOpen",
    };
    let mut status = json!({
        "circuit": {"state": state, "consecutiveFailures": failures},
        "deliveries": {
            "succeeded": t.succeeded,
            "failed": t.failed,
            "deadLettered": t.dead_lettered,
        },
    });
    if let Some(at) = t.last_at.and_then(rfc3339_seconds) {
        status["lastAttemptAt"] = Value::String(at);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_use_the_crd_field_names() {
        let t = Counters {
            received: 0,
            succeeded: 3,
            failed: 2,
            dead_lettered: 1,
            last_at: Some(1_700_000_000_000),
        };
        let d = destination_status(&t, State::Open, 5);
        assert_eq!(d["circuit"]["state"], "Open");
        assert_eq!(d["circuit"]["consecutiveFailures"], 5);
        assert_eq!(d["deliveries"]["deadLettered"], 1);
        assert_eq!(d["lastAttemptAt"], "2023-11-14T22:13:20Z");
        let s = source_status(&Counters::default());
        assert_eq!(s, json!({"eventsReceived": 0}));
    }

    fn view(state: State, opened_at: Option<i64>) -> View {
        View {
            state,
            failure_count: 3,
            last_failure_at: opened_at,
            opened_at,
        }
    }

    #[test]
    fn circuit_condition_follows_the_circuit_and_reports_transitions_once() {
        let key = ObjectKey::new("t", "d");
        let mut reports = CircuitReports::default();
        let (c, changed) = reports.observe(&key, &view(State::Closed, None), 1_000);
        assert_eq!((c["status"].as_str(), changed), (Some("False"), None));
        let (c, changed) = reports.observe(&key, &view(State::Open, Some(1_500)), 2_000);
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "Open");
        assert!(c["message"]
            .as_str()
            .unwrap()
            .contains("3 consecutive failures"));
        assert_eq!(changed, Some(true));
        let (_, changed) = reports.observe(&key, &view(State::HalfOpen, Some(1_500)), 3_000);
        assert_eq!(changed, None, "half-open is still not closed");
        let (c, changed) = reports.observe(&key, &view(State::Closed, None), 4_000);
        assert_eq!(
            (c["status"].as_str(), changed),
            (Some("False"), Some(false))
        );
        assert_eq!(c["lastTransitionTime"], "1970-01-01T00:00:04Z");
    }

    #[test]
    fn an_opening_seen_first_is_news_only_when_recent() {
        let key = ObjectKey::new("t", "d");
        let now = 10 * RECENT_MS;
        let mut fresh = CircuitReports::default();
        let (_, changed) = fresh.observe(&key, &view(State::Open, Some(now - 1_000)), now);
        assert_eq!(changed, Some(true));
        let mut late = CircuitReports::default();
        let (c, changed) = late.observe(&key, &view(State::Open, Some(now - 2 * RECENT_MS)), now);
        assert_eq!(changed, None);
        assert_eq!(c["status"], "True");
    }
}
