//! Delivery: workers that take deliveries from the queue, apply the route's transform, send
//! them, and record the attempt, the retry schedule, the circuit breaker and dead-lettering.
//!
//! Deliveries reach a worker two ways. New ones come straight from ingest, already claimed
//! in the same transaction that stored the event, so a delivery starts microseconds after
//! the sender's 200. Everything else (retries, circuit drains, recovery after a restart, an
//! overflow of the hand-off channel) is claimed from the database in batches. The database
//! is the only source of truth: a worker that dies mid-attempt leaves a claimed delivery
//! whose lease expires (or that the next start returns to the queue), so it is attempted
//! again: at least once, never lost.

pub mod circuit;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookstream_crds::config::{DestinationConfig, ObjectKey};
use hookstream_transform::Limits;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::config::{ConfigHandle, Route};
use crate::ids;
use crate::metrics::Metrics;
use crate::store::writer::ClaimFilter;
use crate::store::{now_ms, read, AttemptRecord, Completion, Job, NewEvent, Outcome, Store};
use circuit::{Circuits, Decision};

/// Deliveries claimed from the database at once.
const CLAIM_BATCH: u32 = 256;
/// Longest wait between two looks at the queue when nothing wakes the dispatcher. A look is
/// also due when the earliest scheduled retry falls due, so retries are not late by this much.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long a claim lasts beyond the longest possible attempt.
const LEASE_MARGIN_MS: i64 = 60_000;
/// The longest destination timeout the compiler allows.
const MAX_TIMEOUT_MS: i64 = hookstream_crds::compiler::MAX_TIMEOUT_SECONDS as i64 * 1000;
/// How long shutdown waits for attempts in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A delivery and its event, ready for a worker.
pub struct Work {
    /// The claimed delivery.
    pub job: Job,
    /// Its event.
    pub event: Arc<NewEvent>,
}

/// Handle used by ingest and the API.
#[derive(Clone)]
pub struct Dispatcher {
    fast: mpsc::Sender<Work>,
    /// Wakes the dispatcher to look at the queue now.
    pub wake: Arc<Notify>,
    /// Circuit breakers.
    pub circuits: Arc<Circuits>,
}

impl Dispatcher {
    /// Reserves room to hand `n` new deliveries straight to workers. `None` when workers
    /// are saturated: the deliveries then wait in the queue.
    pub fn reserve(&self, n: usize) -> Option<mpsc::PermitIterator<'_, Work>> {
        if n == 0 {
            return None;
        }
        self.fast.try_reserve_many(n).ok()
    }

    /// The claim expiry for a delivery handed over now.
    pub fn lease_until(now: i64) -> i64 {
        // A handed-over delivery may wait for a worker slot up to one full timeout (the
        // attempt holding the slot) before its own attempt, which takes at most another.
        now + 2 * MAX_TIMEOUT_MS + LEASE_MARGIN_MS
    }
}

/// What workers share.
struct Shared {
    store: Store,
    config: ConfigHandle,
    metrics: Metrics,
    client: reqwest::Client,
    circuits: Arc<Circuits>,
    limits: Limits,
    /// Wakes the dispatcher to look at the queue now.
    wake: Arc<Notify>,
}

/// Starts the dispatcher. It stops when `shutdown` turns true, after attempts in flight end
/// (or the grace period passes).
pub async fn start(
    store: Store,
    config: ConfigHandle,
    metrics: Metrics,
    max_in_flight: usize,
    shutdown: watch::Receiver<bool>,
) -> Result<(Dispatcher, tokio::task::JoinHandle<()>), crate::store::StoreError> {
    let wake = Arc::new(Notify::new());
    let circuits = Arc::new(Circuits::new(
        read::circuits(&store.read).await?,
        store.writer.clone(),
        metrics.clone(),
        wake.clone(),
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .user_agent(concat!("hookstream/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| crate::store::StoreError::Database(sqlx::Error::Configuration(Box::new(e))))?;
    let (fast, fast_rx) = mpsc::channel(max_in_flight);
    let shared = Arc::new(Shared {
        store,
        config,
        metrics,
        client,
        circuits: circuits.clone(),
        limits: Limits::default(),
        wake: wake.clone(),
    });
    let dispatcher = Dispatcher {
        fast,
        wake: wake.clone(),
        circuits,
    };
    let handle = tokio::spawn(run(shared, fast_rx, wake, max_in_flight, shutdown));
    Ok((dispatcher, handle))
}

async fn run(
    shared: Arc<Shared>,
    mut fast_rx: mpsc::Receiver<Work>,
    wake: Arc<Notify>,
    max_in_flight: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
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
                    tasks.spawn(attempt(shared.clone(), work, permit));
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
    info!(
        in_flight = tasks.len(),
        "delivery stopping; waiting for attempts in flight"
    );
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!(
            abandoned = tasks.len(),
            "attempts still in flight at shutdown are retried on the next start"
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
        match read::next_due(&shared.store.read).await {
            Ok(Some(due)) if due <= now => {}
            Ok(next) => return next,
            Err(e) => {
                warn!(error = %e, "cannot read the delivery queue");
                return None;
            }
        }
        let room = u32::try_from(slots.available_permits())
            .unwrap_or(u32::MAX)
            .min(CLAIM_BATCH);
        if room == 0 {
            return None;
        }
        let config = shared.config.borrow().clone();
        let blocked = shared.circuits.blocked(now, |key| {
            config.destinations.get(key).map(|d| d.circuit.cooldown_ms)
        });
        let lease = Dispatcher::lease_until(now);
        let mut jobs = Vec::new();
        for key in blocked.probe_ready {
            let only = ClaimFilter {
                exclude: Vec::new(),
                only: Some((key.namespace, key.name)),
                due_by: None,
            };
            match shared.store.writer.claim(1, lease, only).await {
                Ok(j) => jobs.extend(j),
                Err(e) => warn!(error = %e, "cannot claim a probe delivery"),
            }
        }
        // A draining destination gets its oldest due delivery, one at a time, so waiting
        // deliveries arrive in the order they were queued.
        for (key, cutoff) in blocked.drain_ready {
            let only = ClaimFilter {
                exclude: Vec::new(),
                only: Some((key.namespace.clone(), key.name.clone())),
                due_by: Some(cutoff),
            };
            match shared.store.writer.claim(1, lease, only).await {
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
        match shared
            .store
            .writer
            .claim(
                room,
                lease,
                ClaimFilter {
                    exclude: blocked.exclude,
                    only: None,
                    due_by: None,
                },
            )
            .await
        {
            Ok(j) => jobs.extend(j),
            // Probe and drain deliveries claimed above still go out: dropping them would
            // leave their circuits waiting for a delivery that never finishes.
            Err(e) => warn!(error = %e, "cannot claim deliveries"),
        }
        if jobs.is_empty() {
            return None;
        }
        let full = jobs.len() as u32 >= room;
        let ids: Vec<&str> = jobs.iter().map(|j| j.event_id.as_str()).collect();
        let events = match read::events_by_ids(&shared.store.read, &ids).await {
            Ok(events) => events,
            Err(e) => {
                // The claims expire and the deliveries are claimed again later.
                warn!(error = %e, "cannot load events of claimed deliveries");
                for job in &jobs {
                    let key = ObjectKey::new(job.namespace.clone(), job.destination.clone());
                    shared.circuits.finished(&key, &job.delivery_id);
                }
                return None;
            }
        };
        let events: std::collections::HashMap<String, Arc<NewEvent>> = events
            .into_iter()
            .map(|e| (e.id.clone(), Arc::new(NewEvent::from(e))))
            .collect();
        for job in jobs {
            let Some(event) = events.get(&job.event_id).cloned() else {
                warn!(event_id = %job.event_id, "claimed delivery has no event; cancelling it");
                let key = ObjectKey::new(job.namespace.clone(), job.destination.clone());
                let delivery_id = job.delivery_id.clone();
                let completion = Completion {
                    job,
                    attempt: None,
                    outcome: Outcome::Cancelled,
                    error: Some("event no longer exists".into()),
                };
                let _ = shared.store.writer.complete(vec![completion]).await;
                if shared.circuits.finished(&key, &delivery_id) {
                    shared.wake.notify_one();
                }
                continue;
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return None;
            };
            tasks.spawn(attempt(shared.clone(), Work { job, event }, permit));
        }
        if !full {
            return None;
        }
    }
}

/// Runs one delivery attempt and records its outcome.
async fn attempt(shared: Arc<Shared>, work: Work, _permit: OwnedSemaphorePermit) {
    let span = tracing::info_span!(
        "delivery",
        event_id = %work.job.event_id,
        destination = %format!("{}/{}", work.job.namespace, work.job.destination),
        attempt = work.job.attempts + 1
    );
    let key = ObjectKey::new(work.job.namespace.clone(), work.job.destination.clone());
    let delivery_id = work.job.delivery_id.clone();
    let completion = run_attempt(&shared, work).instrument(span).await;
    let retry_at = match completion.outcome {
        Outcome::Retry { due_at } => Some(due_at),
        _ => None,
    };
    if shared
        .store
        .writer
        .complete(vec![completion])
        .await
        .is_err()
    {
        // Shutting down: the claim expires and the delivery is attempted again.
        debug!("attempt not recorded: writer stopped");
    }
    if shared.circuits.finished(&key, &delivery_id) {
        shared.wake.notify_one();
    }
    // A retry due before the dispatcher's next regular look would otherwise be late by up to
    // IDLE_POLL: wake the dispatcher when it falls due. Later retries are seen by that look.
    if let Some(due_at) = retry_at {
        let delay = u64::try_from(due_at.saturating_sub(now_ms())).unwrap_or(0);
        if delay < IDLE_POLL.as_millis() as u64 {
            let wake = shared.wake.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                wake.notify_one();
            });
        }
    }
}

async fn run_attempt(shared: &Shared, work: Work) -> Completion {
    let Work { job, event } = work;
    let config = shared.config.borrow().clone();
    let dest_key = ObjectKey::new(job.namespace.clone(), job.destination.clone());
    let route = config
        .routes
        .get(&(job.namespace.clone(), job.route_kind, job.route.clone()))
        .cloned();
    let destination = config.destinations.get(&dest_key).cloned();
    let missing_destination = destination.is_none();
    let (Some(route), Some(destination)) = (route, destination) else {
        let what = if missing_destination {
            "destination"
        } else {
            job.route_kind.as_str()
        };
        let error =
            format!("{what} was removed before delivery; retry the event to route it again");
        return Completion {
            job,
            attempt: None,
            outcome: Outcome::Cancelled,
            error: Some(error),
        };
    };
    let now = now_ms();
    let decision = shared.circuits.decide(&dest_key, &destination.circuit, now);
    if decision == Decision::Wait {
        return Completion {
            job,
            attempt: None,
            outcome: Outcome::Release,
            error: None,
        };
    }
    let was_probe = decision == Decision::Probe;
    let attempt_number = job.attempts + 1;
    let round = job.round_attempts + 1;
    let dest_label = dest_key.to_string();

    let (body, content_type) = match payload(shared, &route, &event).await {
        Ok(p) => p,
        Err(error) => {
            // The destination was not contacted: this says nothing about its health.
            if was_probe {
                shared.circuits.release_probe(&dest_key);
            }
            shared
                .metrics
                .delivery_attempts
                .with_label_values(&[&dest_label, "failure"])
                .inc();
            let record = AttemptRecord {
                id: ids::attempt(),
                attempt_number,
                status: "failed",
                status_code: None,
                error: Some(error.clone()),
                request_headers: Vec::new(),
                response_headers: None,
                response_body: None,
                latency_ms: 0,
                attempted_at: now,
                next_retry_at: None,
                is_dlq: false,
            };
            return finish(shared, job, &destination, record, round, None, now);
        }
    };
    let Some(http_config) = &destination.http else {
        let error = "destination has no http settings".to_owned();
        return Completion {
            job,
            attempt: None,
            outcome: Outcome::Cancelled,
            error: Some(error),
        };
    };
    let timestamp = now / 1000;
    let (headers, shown) = http::request_headers(
        http_config,
        destination.signing.as_ref(),
        &event.id,
        attempt_number,
        timestamp,
        content_type.as_deref(),
        &body,
    );
    let response = http::send(&shared.client, http_config, &headers, body).await;
    let success = response.succeeded();
    shared.circuits.record(
        &dest_key,
        &destination.circuit,
        success,
        was_probe,
        now_ms(),
    );
    shared
        .metrics
        .delivery_attempts
        .with_label_values(&[
            dest_label.as_str(),
            if success { "success" } else { "failure" },
        ])
        .inc();
    shared
        .metrics
        .delivery_duration
        .with_label_values(&[&dest_label])
        .observe(response.latency.as_secs_f64());
    let record = AttemptRecord {
        id: ids::attempt(),
        attempt_number,
        status: if success { "success" } else { "failed" },
        status_code: response.status,
        error: response.error,
        request_headers: shown,
        response_headers: response.headers,
        response_body: response.body,
        latency_ms: i64::try_from(response.latency.as_millis()).unwrap_or(i64::MAX),
        attempted_at: now,
        next_retry_at: None,
        is_dlq: false,
    };
    if success {
        return Completion {
            job,
            attempt: Some(record),
            outcome: Outcome::Succeeded,
            error: None,
        };
    }
    finish(
        shared,
        job,
        &destination,
        record,
        round,
        response.retry_after,
        now_ms(),
    )
}

/// Schedules the retry of a failed attempt, or dead-letters the delivery after the last.
fn finish(
    shared: &Shared,
    job: Job,
    destination: &DestinationConfig,
    mut record: AttemptRecord,
    round: u32,
    retry_after: Option<Duration>,
    now: i64,
) -> Completion {
    let error = record.error.clone();
    if round > destination.retry.max_retries {
        record.is_dlq = true;
        shared
            .metrics
            .dead_lettered
            .with_label_values(&[&destination.key.to_string()])
            .inc();
        warn!(
            attempts = record.attempt_number,
            "delivery dead-lettered after its last retry"
        );
        return Completion {
            job,
            attempt: Some(record),
            outcome: Outcome::Dead,
            error,
        };
    }
    let backoff = destination.retry.delay_ms(round);
    // Retry-After can only lengthen the wait: a `Retry-After: 0` must not burn the retries.
    let delay = retry_after.map_or(backoff, |d| {
        u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .max(backoff)
    });
    let due_at = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
    record.next_retry_at = Some(due_at);
    Completion {
        job,
        attempt: Some(record),
        outcome: Outcome::Retry { due_at },
        error,
    }
}

/// The body and content type to send: the original request body, or the JSON the route's
/// transform and then the destination's payload transform make of it.
async fn payload(
    shared: &Shared,
    route: &Route,
    event: &Arc<NewEvent>,
) -> Result<(Bytes, Option<String>), String> {
    if route.transform.is_none() && route.payload.is_none() {
        return Ok((event.body.clone(), event.content_type.clone()));
    }
    let (transform, payload) = (route.transform.clone(), route.payload.clone());
    let credential = route.credential.clone();
    let event = event.clone();
    let limits = shared.limits;
    let metrics = shared.metrics.clone();
    let label = format!("{}/{}", route.namespace, route.destination);
    // Evaluation is CPU work bounded by the limits; it runs off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let (input, mut bindings) = transform_input(&event);
        let routed = match transform {
            Some(expression) => {
                let refs: Vec<(&str, &Value)> = bindings.iter().map(|(k, v)| (*k, v)).collect();
                match expression.evaluate(&input, &refs, &limits) {
                    Ok(Some(value)) => value,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(("transform", e)),
                }
            }
            None => input,
        };
        let Some(expression) = payload else {
            return Ok(Some(routed));
        };
        if let Some(c) = credential {
            bindings.push(("credential", Value::String(c)));
        }
        let refs: Vec<(&str, &Value)> = bindings.iter().map(|(k, v)| (*k, v)).collect();
        expression
            .evaluate(&routed, &refs, &limits)
            .map_err(|e| ("destination transform", e))
    })
    .await
    .map_err(|e| format!("transform failed: {e}"))?;
    match result {
        Ok(Some(value)) => {
            let body = serde_json::to_vec(&value)
                .map_err(|e| format!("transform result is not JSON: {e}"))?;
            Ok((Bytes::from(body), Some("application/json".to_owned())))
        }
        Ok(None) => {
            metrics
                .transform_failures
                .with_label_values(&[&label, "empty"])
                .inc();
            Err("transform yielded nothing (JSONata undefined) for this event".to_owned())
        }
        Err((stage, e)) => {
            metrics
                .transform_failures
                .with_label_values(&[&label, e.category()])
                .inc();
            Err(format!("{stage} failed: {e}"))
        }
    }
}

/// The transform's input (the parsed body, or the body as a string when it is not JSON) and
/// its bindings: `$headers`, `$query`, `$method` and `$event`.
pub fn transform_input(event: &NewEvent) -> (Value, Vec<(&'static str, Value)>) {
    let body = parse_body(&event.body);
    let headers = crate::ingest::headers_object(&event.headers);
    let query = crate::ingest::query_object(&event.query);
    let envelope = json!({
        "id": event.id,
        "namespace": event.namespace,
        "source": event.source,
        "method": event.method,
        "path": event.path,
        "query": query,
        "headers": headers,
        "body": body,
        "content_type": event.content_type,
        "source_ip": event.source_ip,
        "received_at": crate::api::rfc3339(event.received_at),
    });
    let bindings = vec![
        ("headers", headers),
        ("query", query),
        ("method", Value::String(event.method.clone())),
        ("event", envelope),
    ];
    (body, bindings)
}

/// The body as JSON when it parses, else as a string.
pub fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}
