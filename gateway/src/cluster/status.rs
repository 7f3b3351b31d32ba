//! Runtime status written back onto the resources with the gateway's own server-side-apply
//! field manager: on Sources the events received and the last receive time, on Destinations
//! the circuit, the delivery counters and the last attempt time. The totals come from the
//! database (so they survive restarts and agree across replicas); one replica, the holder
//! of a Lease, writes them, only when they changed and at most once per interval per object.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::config::ObjectKey;
use hookstream_crds::v1alpha1::{Destination, Source};
use kube::api::{Patch, PatchParams};
use kube::Api;
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Cluster, FIELD_MANAGER, STATUS_LEASE};
use crate::clock::rfc3339_seconds;
use crate::config::ConfigHandle;
use crate::delivery::circuit::Circuits;
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
    // What was last written, by object: write again only on a change.
    let mut written: HashMap<(&'static str, ObjectKey), Value> = HashMap::new();
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
                continue;
            }
            _ = tick.tick() => {}
        }
        if !*leader.borrow() {
            continue;
        }
        if let Err(e) = write_changes(&cluster, &sources, &mut written).await {
            warn!(error = %e, "cannot read the totals for status");
        }
    }
    drop(leader);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

/// The status every configured object should have.
async fn desired(sources: &Sources) -> Result<Vec<((&'static str, ObjectKey), Value)>, StoreError> {
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
    for key in config.sources.keys() {
        let t = total(ObjectKind::Source, key);
        desired.push((("Source", key.clone()), source_status(&t)));
    }
    for key in config.destinations.keys() {
        let t = total(ObjectKind::Destination, key);
        let view = sources.circuits.view(key);
        desired.push((
            ("Destination", key.clone()),
            destination_status(&t, view.state, view.failure_count),
        ));
    }
    Ok(desired)
}

async fn write_changes(
    cluster: &Cluster,
    sources: &Sources,
    written: &mut HashMap<(&'static str, ObjectKey), Value>,
) -> Result<(), StoreError> {
    for (id, status) in desired(sources).await? {
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
    Ok(())
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
}
