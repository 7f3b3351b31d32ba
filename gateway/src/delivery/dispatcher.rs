//! The dispatcher loop: takes new deliveries handed over by ingest, claims due ones from the
//! store (retries, circuit probes and drains, recovery), and starts a worker for each while
//! there are free slots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::config::ObjectKey;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::{destination_of, worker, Dispatcher, Shared, Work, IDLE_POLL};
use crate::clock::now_ms;
use crate::store::{ClaimFilter, Completion, Job, Outcome, SharedEvent};

/// Deliveries claimed from the store at once.
const CLAIM_BATCH: u32 = 256;

pub(super) async fn run(
    shared: Arc<Shared>,
    mut fast_rx: mpsc::Receiver<Work>,
    max_in_flight: usize,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    let wake = shared.wake.clone();
    // The next look at the queue. A fixed deadline, not a sleep restarted on every turn, so a
    // steady stream of new deliveries cannot postpone retries indefinitely.
    let mut poll_at = tokio::time::Instant::now() + IDLE_POLL;
    loop {
        while tasks.try_join_next().is_some() {}
        // Checked before the select, whose bias toward new deliveries would otherwise let a
        // never-empty hand-off channel starve the queue (retries, probes, recovery).
        let poll = tokio::time::Instant::now() >= poll_at
            || tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(work) = fast_rx.recv() => {
                    let Ok(permit) = slots.clone().acquire_owned().await else { break };
                    tasks.spawn(worker::attempt(shared.clone(), work, permit));
                    false
                }
                _ = wake.notified() => true,
                _ = tokio::time::sleep_until(poll_at) => true,
            };
        if poll {
            let next_due = poll_queue(&shared, &slots, &mut tasks).await;
            let idle = tokio::time::Instant::now() + IDLE_POLL;
            poll_at = match next_due {
                Some(due) => {
                    let wait = Duration::from_millis(
                        u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0),
                    );
                    idle.min(tokio::time::Instant::now() + wait)
                }
                None => idle,
            };
        }
    }
    drain_at_shutdown(tasks, grace).await;
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

/// Claims due deliveries while there is room and work. Returns when the next delivery falls
/// due, when that is known and in the future.
async fn poll_queue(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) -> Option<i64> {
    loop {
        let now = now_ms();
        match shared.store.next_due().await {
            Ok(Some(due)) if due <= now => {}
            Ok(next) => return next,
            Err(e) => {
                warn!(error = %crate::store::error_chain(&e), "cannot read the delivery queue");
                return None;
            }
        }
        let room = u32::try_from(slots.available_permits())
            .unwrap_or(u32::MAX)
            .min(CLAIM_BATCH);
        if room == 0 {
            return None;
        }
        let jobs = claim(shared, room, now).await;
        if jobs.is_empty() {
            return None;
        }
        let full = jobs.len() as u32 >= room;
        if !start_claimed(shared, slots, tasks, jobs).await || !full {
            return None;
        }
    }
}

/// Claims what may go now: circuit probes, the next delivery of each draining circuit, and
/// up to `room` deliveries of destinations that flow freely.
async fn claim(shared: &Shared, room: u32, now: i64) -> Vec<Job> {
    let config = shared.config.borrow().clone();
    let blocked = shared.circuits.blocked(now, |key| {
        config.destinations.get(key).map(|d| d.circuit.cooldown_ms)
    });
    let lease = Dispatcher::lease_until(now);
    let mut jobs = Vec::new();
    for key in blocked.probe_ready {
        match shared.store.claim(1, lease, only(&key, None)).await {
            Ok(j) => jobs.extend(j),
            Err(e) => warn!(error = %e, "cannot claim a probe delivery"),
        }
    }
    // A draining destination gets its oldest due delivery, one at a time, so waiting
    // deliveries arrive in the order they were queued.
    for (key, cutoff) in blocked.drain_ready {
        match shared.store.claim(1, lease, only(&key, Some(cutoff))).await {
            Ok(j) => match j.first() {
                Some(job) => {
                    shared.circuits.drain_claimed(&key, &job.delivery_id);
                    jobs.extend(j);
                }
                None => shared.circuits.drain_finished(&key),
            },
            Err(e) => warn!(error = %e, "cannot claim a delivery to drain"),
        }
    }
    let bulk = ClaimFilter {
        exclude: blocked.exclude,
        only: None,
        due_by: None,
    };
    match shared.store.claim(room, lease, bulk).await {
        Ok(j) => jobs.extend(j),
        // Probe and drain deliveries claimed above still go out: dropping them would leave
        // their circuits waiting for a delivery that never finishes.
        Err(e) => warn!(error = %e, "cannot claim deliveries"),
    }
    jobs
}

fn only(key: &ObjectKey, due_by: Option<i64>) -> ClaimFilter {
    ClaimFilter {
        exclude: Vec::new(),
        only: Some((key.namespace.clone(), key.name.clone())),
        due_by,
    }
}

/// Loads the events of claimed deliveries and starts a worker for each. Returns false when
/// the dispatcher should stop looking for now.
async fn start_claimed(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    jobs: Vec<Job>,
) -> bool {
    let ids: Vec<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
    let events: HashMap<String, SharedEvent> = match shared.store.events_by_ids(&ids).await {
        Ok(events) => events
            .into_iter()
            .map(|e| (e.event.id.clone(), Arc::new(e.event)))
            .collect(),
        Err(e) => {
            // The claims expire and the deliveries are claimed again later.
            warn!(error = %e, "cannot load events of claimed deliveries");
            for job in &jobs {
                shared
                    .circuits
                    .finished(&destination_of(job), &job.delivery_id);
            }
            return false;
        }
    };
    for job in jobs {
        let Some(event) = events.get(&job.event_id).cloned() else {
            cancel_orphan(shared, job).await;
            continue;
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return false;
        };
        tasks.spawn(worker::attempt(shared.clone(), Work { job, event }, permit));
    }
    true
}

/// A claimed delivery whose event is gone (deleted by retention meanwhile) is cancelled.
async fn cancel_orphan(shared: &Shared, job: Job) {
    warn!(event_id = %job.event_id, "claimed delivery has no event; cancelling it");
    let key = destination_of(&job);
    let delivery_id = job.delivery_id.clone();
    let completion = Completion {
        job,
        attempt: None,
        outcome: Outcome::Cancelled,
        error: Some("event no longer exists".into()),
    };
    let _ = shared.store.complete(vec![completion]).await;
    if shared.circuits.finished(&key, &delivery_id) {
        shared.wake.notify_one();
    }
}
