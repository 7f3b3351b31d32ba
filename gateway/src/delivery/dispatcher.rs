//! The dispatcher loop: starts deliveries handed over by ingest, and claims waiting ones from
//! the store one destination at a time, as many as the destination's lane has room for, in
//! the order they were queued. It knows which destinations have deliveries waiting from
//! what ingest and the workers tell it, and looks the rest up in the store about once a
//! second (another replica's work, claims whose holder died, the state after a restart).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::config::{DestinationConfig, ObjectKey};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::circuit::Gate;
use super::lanes::Slot;
use super::{lease_until, worker, Admission, Notice, Shared, Work, IDLE_POLL, LEASE_MARGIN_MS};
use crate::clock::now_ms;
use crate::store::{error_chain, ClaimRequest, Completion, Job, Outcome, SharedEvent};

/// Most deliveries of one destination claimed at once.
const CLAIM_BATCH: u32 = 256;
/// How often the store is asked which destinations have deliveries due, and circuits and
/// replicas are refreshed.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);

/// Destinations with deliveries waiting in the store, with the earliest known due time.
type Waiting = HashMap<ObjectKey, i64>;

pub(super) async fn run(
    shared: Arc<Shared>,
    mut notices: mpsc::UnboundedReceiver<Notice>,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    let mut waiting = Waiting::new();
    let wake = shared.dispatcher.wake.clone();
    let mut discover_at = tokio::time::Instant::now();
    let mut poll_at = tokio::time::Instant::now();
    loop {
        while tasks.try_join_next().is_some() {}
        let now = tokio::time::Instant::now();
        if now < poll_at && now < discover_at {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(notice) = notices.recv() => {
                    match notice {
                        Notice::Start(work) => {
                            tasks.spawn(worker::attempt(shared.clone(), work));
                        }
                        Notice::Queued(key, due) => {
                            let entry = waiting.entry(key).or_insert(due);
                            *entry = (*entry).min(due);
                            poll_at = poll_at.min(instant_of(due));
                        }
                    }
                    continue;
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(poll_at.min(discover_at)) => {}
            }
        }
        if tokio::time::Instant::now() >= discover_at {
            discover(&shared, &mut waiting).await;
            discover_at = tokio::time::Instant::now() + DISCOVER_EVERY;
        }
        let next = poll(&shared, &mut waiting, &mut tasks).await;
        poll_at = tokio::time::Instant::now() + IDLE_POLL;
        if let Some(due) = next {
            poll_at = poll_at.min(instant_of(due));
        }
    }
    drain_at_shutdown(tasks, grace).await;
}

/// The runtime instant of a unix-ms time.
fn instant_of(ms: i64) -> tokio::time::Instant {
    let wait = u64::try_from(ms.saturating_sub(now_ms())).unwrap_or(0);
    tokio::time::Instant::now() + Duration::from_millis(wait)
}

/// Asks the store which destinations have deliveries due, and refreshes circuits and the
/// number of replicas sharing the limits.
async fn discover(shared: &Shared, waiting: &mut Waiting) {
    let now = now_ms();
    match shared.store.due_destinations().await {
        Ok(due) => {
            for (namespace, name) in due {
                let entry = waiting
                    .entry(ObjectKey::new(namespace, name))
                    .or_insert(now);
                *entry = (*entry).min(now);
            }
        }
        Err(e) => warn!(error = %error_chain(&e), "cannot read the delivery queue"),
    }
    if let Err(e) = shared.circuits.refresh().await {
        warn!(error = %error_chain(&e), "cannot read the circuits");
    }
    if let Ok(n) = shared.store.live_replicas().await {
        shared.lanes.set_replicas(n);
    }
}

async fn drain_at_shutdown(mut tasks: JoinSet<()>, grace: Duration) {
    info!(
        in_flight = tasks.len(),
        "delivery stopping; waiting for attempts in flight"
    );
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        warn!(
            abandoned = tasks.len(),
            "attempts still in flight at shutdown are retried when their lease runs out"
        );
        tasks.abort_all();
    }
}

/// Claims what may go now for every destination with due deliveries. Returns the earliest
/// due time still in the future, if any.
async fn poll(shared: &Arc<Shared>, waiting: &mut Waiting, tasks: &mut JoinSet<()>) -> Option<i64> {
    let now = now_ms();
    let config = shared.config.borrow().clone();
    let due: Vec<ObjectKey> = waiting
        .iter()
        .filter(|(_, due)| **due <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in due {
        if shared.lanes.free() == 0 {
            break;
        }
        let destination = config.destinations.get(&key).map(|d| d.as_ref());
        match claim(shared, &key, destination, now, tasks).await {
            Claimed::All => {
                waiting.remove(&key);
                shared.lanes.set_backlog(&key, destination, false);
            }
            Claimed::More => shared.lanes.set_backlog(&key, destination, true),
            Claimed::Later(at) => {
                shared.lanes.set_backlog(&key, destination, true);
                waiting.insert(key, at);
            }
            Claimed::Held => {}
        }
    }
    while tasks.try_join_next().is_some() {}
    waiting.values().copied().filter(|due| *due > now).min()
}

/// What a claim left behind.
enum Claimed {
    /// Nothing more is due.
    All,
    /// More may be due: the lane was full, or the claim took all it had room for.
    More,
    /// More may be due, and the destination's rate lets the next go at this time (unix ms).
    Later(i64),
    /// Nothing was claimed: the circuit holds the deliveries.
    Held,
}

/// Claims `key`'s due deliveries into free slots of its lane and starts them.
async fn claim(
    shared: &Arc<Shared>,
    key: &ObjectKey,
    destination: Option<&DestinationConfig>,
    now: i64,
    tasks: &mut JoinSet<()>,
) -> Claimed {
    let lease = destination.map_or(now + LEASE_MARGIN_MS, |d| lease_until(d, now));
    let gate = match destination {
        Some(d) => {
            shared
                .circuits
                .gate(key, &d.circuit, lease - now, now)
                .await
        }
        // A removed destination's deliveries are claimed to be cancelled.
        None => Gate::Closed,
    };
    let want = match gate {
        Gate::Wait => return Claimed::Held,
        Gate::Probe => 1,
        Gate::Closed => CLAIM_BATCH,
    };
    let taken = shared.lanes.take(key, destination, want);
    let more = match taken.rate_wait {
        Some(wait) => {
            Claimed::Later(now.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
        }
        None => Claimed::More,
    };
    let slots = taken.slots;
    if slots.is_empty() {
        if gate == Gate::Probe {
            shared.circuits.release_probe(key).await;
        }
        return more;
    }
    let request = ClaimRequest {
        namespace: key.namespace.clone(),
        destination: key.name.clone(),
        limit: slots.len() as u32,
        lease_until: lease,
    };
    let jobs = match shared.store.claim(request).await {
        Ok(jobs) => jobs,
        Err(e) => {
            warn!(destination = %key, error = %error_chain(&e), "cannot claim deliveries");
            if gate == Gate::Probe {
                shared.circuits.release_probe(key).await;
            }
            return more;
        }
    };
    if jobs.is_empty() && gate == Gate::Probe {
        shared.circuits.release_probe(key).await;
    }
    let full = jobs.len() == slots.len();
    start_claimed(shared, jobs, slots, gate == Gate::Probe, tasks).await;
    if full || gate == Gate::Probe {
        more
    } else {
        Claimed::All
    }
}

/// Loads the events of claimed deliveries and starts a worker for each.
async fn start_claimed(
    shared: &Arc<Shared>,
    jobs: Vec<Job>,
    slots: Vec<Slot>,
    probe: bool,
    tasks: &mut JoinSet<()>,
) {
    if jobs.is_empty() {
        return;
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
    let events: HashMap<String, SharedEvent> = match shared.store.events_by_ids(&ids).await {
        Ok(events) => events
            .into_iter()
            .map(|e| (e.event.id.clone(), Arc::new(e.event)))
            .collect(),
        Err(e) => {
            // The claims expire and the deliveries are claimed again later.
            warn!(error = %error_chain(&e), "cannot load events of claimed deliveries");
            return;
        }
    };
    for (job, slot) in jobs.into_iter().zip(slots) {
        match events.get(&job.event_id).cloned() {
            Some(event) => {
                let work = Work {
                    job,
                    event,
                    admission: Admission::Slot(slot),
                    probe,
                };
                tasks.spawn(worker::attempt(shared.clone(), work));
            }
            None => cancel_orphan(shared, job).await,
        }
    }
}

/// A claimed delivery whose event is gone (deleted by retention meanwhile) is cancelled.
async fn cancel_orphan(shared: &Shared, job: Job) {
    warn!(event_id = %job.event_id, "claimed delivery has no event; cancelling it");
    let completion = Completion {
        job,
        attempt: None,
        outcome: Outcome::Cancelled,
        error: Some("event no longer exists".into()),
    };
    let _ = shared.store.complete(vec![completion]).await;
}
