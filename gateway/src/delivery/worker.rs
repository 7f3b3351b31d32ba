//! One delivery attempt: look the route and destination up in the current config, ask the
//! circuit, make the payload, send it through the destination's provider, and record what
//! happened (attempt, retry schedule or dead letter, circuit, metrics).

use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::config::{DestinationConfig, ObjectKey};
use tracing::{debug, warn, Instrument};

use super::provider::{Message, Sent};
use super::schedule::{self, Next};
use super::{destination_of, Admission, Shared, Work};
use crate::clock::now_ms;
use crate::config::{Route, RuntimeConfig};
use crate::ids;
use crate::pipeline::event::event_hops;
use crate::pipeline::transform;
use crate::store::{AttemptOutcome, AttemptRecord, Completion, Job, Outcome, SharedEvent};

/// Runs one delivery attempt and records its outcome. The slot is freed when it is
/// recorded; if the destination has more deliveries waiting, the dispatcher is woken to
/// claim the next.
pub(super) async fn attempt(shared: Arc<Shared>, work: Work) {
    let span = tracing::info_span!(
        "delivery",
        event_id = %work.job.event_id,
        destination = %format!("{}/{}", work.job.namespace, work.job.destination),
        attempt = work.job.attempts
    );
    let key = destination_of(&work.job);
    let Work {
        job,
        event,
        admission,
        probe,
    } = work;
    let slot = match admission {
        Admission::Slot(slot) => slot,
        // A handed-over delivery waits its turn in the lane; if the gateway stops first, its
        // claim expires and it is attempted later.
        Admission::Ticket(ticket) => match ticket.slot().await {
            Some(slot) => slot,
            None => return,
        },
    };
    let completion = run(&shared, job, event, probe).instrument(span).await;
    let requeue = match completion.outcome {
        Outcome::Retry { due_at } => Some(due_at),
        Outcome::Release => Some(now_ms()),
        _ => None,
    };
    if shared.store.complete(vec![completion]).await.is_err() {
        // Shutting down: the claim expires and the delivery is attempted again.
        debug!("attempt not recorded: the store's writer stopped");
    }
    drop(slot);
    if let Some(due_at) = requeue {
        shared.dispatcher.queued(key.clone(), due_at);
    }
    if shared.lanes.is_backlogged(&key) {
        shared.dispatcher.wake.notify_one();
    }
}

/// A completion that records no attempt.
fn unattempted(job: Job, outcome: Outcome, error: Option<String>) -> Completion {
    Completion {
        job,
        attempt: None,
        outcome,
        error,
    }
}

async fn run(shared: &Shared, job: Job, event: SharedEvent, probe: bool) -> Completion {
    let config = shared.config.borrow().clone();
    let dest_key = destination_of(&job);
    let route = route_of(&config, &job);
    let Some(destination) = config.destinations.get(&dest_key).cloned() else {
        let error = "destination was removed before delivery; retry the event to route it again";
        return unattempted(job, Outcome::Cancelled, Some(error.to_owned()));
    };
    let Some(route) = route else {
        let error = format!(
            "{} was removed before delivery; retry the event to route it again",
            job.route_kind
        );
        return unattempted(job, Outcome::Cancelled, Some(error));
    };
    let now = now_ms();
    // A delivery claimed (or handed over) before its circuit opened waits for the circuit.
    if !probe && !shared.circuits.is_closed(&dest_key) {
        return unattempted(job, Outcome::Release, None);
    }
    // Each claim counted as an attempt. More claims than the retry policy allows means
    // earlier attempts never finished: the gateway stopped during each (whatever this
    // delivery does to it), so it is not run again.
    if job.round_attempts > destination.retry.max_retries.saturating_add(1) {
        let sent = Sent {
            permanent: true,
            error: Some(format!(
                "retries used up: claimed {} times, and attempts that never finished (the gateway stopped during them) count",
                job.round_attempts
            )),
            ..Sent::default()
        };
        return finish(shared, job, &destination, sent, now);
    }
    let was_probe = probe;
    let attempt_number = job.attempts;
    let payload = match transform::payload(&route, &event, &shared.sandbox, &shared.metrics).await {
        Ok(p) => p,
        Err(failure) => {
            // The destination was not contacted: this says nothing about its health.
            if was_probe {
                shared.circuits.release_probe(&dest_key).await;
            }
            count_attempt(shared, &dest_key, false, None);
            // An error the event itself causes comes back on every retry: dead-lettered now.
            let sent = Sent {
                error: Some(failure.message),
                permanent: failure.permanent,
                ..Sent::default()
            };
            return finish(shared, job, &destination, sent, now);
        }
    };
    let provider = shared.providers.for_destination(&destination);
    let message = Message {
        event: &event,
        payload,
        attempt: attempt_number,
        timestamp: now / 1000,
        hops: event_hops(&event).saturating_add(1),
        sandbox: &shared.sandbox,
    };
    let sent = provider.deliver(&destination, message).await;
    // A permanent failure (the egress policy refused the address, no such queue) says
    // nothing about whether the destination is up: it does not count toward the circuit.
    if sent.success || !sent.permanent || was_probe {
        shared
            .circuits
            .record(
                &dest_key,
                &destination.circuit,
                sent.success,
                was_probe,
                now_ms(),
            )
            .await;
    }
    count_attempt(shared, &dest_key, sent.success, Some(sent.latency));
    finish(shared, job, &destination, sent, now)
}

fn count_attempt(shared: &Shared, key: &ObjectKey, success: bool, latency: Option<Duration>) {
    let label = key.to_string();
    let result = if success { "success" } else { "failure" };
    shared
        .metrics
        .delivery_attempts
        .with_label_values(&[label.as_str(), result])
        .inc();
    if let Some(latency) = latency {
        shared
            .metrics
            .delivery_duration
            .with_label_values(&[&label])
            .observe(latency.as_secs_f64());
    }
}

/// The attempt's record and the delivery's new state: delivered, a retry, or a dead letter.
fn finish(
    shared: &Shared,
    job: Job,
    destination: &DestinationConfig,
    sent: Sent,
    attempted_at: i64,
) -> Completion {
    let mut record = AttemptRecord {
        id: ids::attempt(),
        attempt_number: job.attempts,
        outcome: if sent.success {
            AttemptOutcome::Success
        } else {
            AttemptOutcome::Failed
        },
        error: sent.error,
        request_headers: sent.request_headers,
        detail: sent.detail,
        latency_ms: i64::try_from(sent.latency.as_millis()).unwrap_or(i64::MAX),
        attempted_at,
        next_retry_at: None,
        is_dlq: false,
    };
    if sent.success {
        return Completion {
            job,
            attempt: Some(record),
            outcome: Outcome::Succeeded,
            error: None,
        };
    }
    let error = record.error.clone();
    let round = job.round_attempts;
    let next = schedule::after_failure(
        &destination.retry,
        round,
        sent.permanent,
        sent.retry_after,
        now_ms(),
    );
    let outcome = match next {
        Next::Retry { due_at } => {
            record.next_retry_at = Some(due_at);
            Outcome::Retry { due_at }
        }
        Next::DeadLetter => {
            record.is_dlq = true;
            shared
                .metrics
                .dead_lettered
                .with_label_values(&[&destination.key.to_string()])
                .inc();
            warn!(
                attempts = record.attempt_number,
                permanent = sent.permanent,
                "delivery dead-lettered"
            );
            Outcome::Dead
        }
    };
    Completion {
        job,
        attempt: Some(record),
        outcome,
        error,
    }
}

/// The route a job goes along in `config`.
fn route_of(config: &RuntimeConfig, job: &Job) -> Option<Arc<Route>> {
    config
        .routes
        .get(&(job.namespace.clone(), job.route_kind, job.route.clone()))
        .cloned()
}
