//! The PostgreSQL writer: one task that commits ingest inserts and delivery completions in
//! groups, in call order. Requests queue while a transaction commits and the
//! next takes all of them, with multi-row statements, so a commit costs a few round trips
//! whatever the number of events in it.
//!
//! A group that fails is replayed one operation per transaction, so one bad operation cannot
//! fail the others. Completions that cannot be written (the database is down) are kept and
//! written when it is back, so their deliveries are not attempted again for nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::queue::event_status_update;
use crate::clock::now_ms;
use crate::store::model::{
    Completion, DedupClaim, DeliveryState, EventStatus, InsertOutcome, NewDelivery, NewEvent,
    ObjectKind, SharedEvent,
};
use crate::store::{detail_json, error_chain, headers_json, unwritten, Health, StoreError};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;
/// Rows per multi-row INSERT (PostgreSQL allows 65,535 parameters per statement).
const ROWS_PER_INSERT: usize = 1000;
/// Times a group is tried again after a deadlock or serialization failure with another
/// replica's transaction.
const CONFLICT_RETRIES: usize = 3;

enum Op {
    Insert {
        event: SharedEvent,
        deliveries: Vec<NewDelivery>,
        dedup: Option<DedupClaim>,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    Complete(Vec<Completion>),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Op>,
    health: Arc<Health>,
}

impl Writer {
    /// Starts the writer task; `replica` names this replica in the claims it creates.
    pub fn start(pool: PgPool, replica: String) -> Writer {
        let (tx, rx) = mpsc::channel(16_384);
        let health = Arc::new(Health::default());
        tokio::spawn(run(pool, replica, rx, health.clone()));
        Writer { tx, health }
    }

    /// Whether writes go through.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub async fn insert(
        &self,
        event: SharedEvent,
        deliveries: Vec<NewDelivery>,
        dedup: Option<DedupClaim>,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Insert {
            event,
            deliveries,
            dedup,
            reply,
        };
        self.tx.send(op).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    pub async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        self.tx
            .send(Op::Complete(completions))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(pool: PgPool, replica: String, mut rx: mpsc::Receiver<Op>, health: Arc<Health>) {
    let mut unwritten: Vec<Completion> = Vec::new();
    while let Some(ops) = unwritten::next_group(&mut rx, MAX_BATCH, &unwritten).await {
        let group = Group::split(ops, std::mem::take(&mut unwritten));
        unwritten = group.commit(&pool, &replica, &health).await;
        unwritten::bound(&mut unwritten);
    }
}

struct Insert {
    event: SharedEvent,
    deliveries: Vec<NewDelivery>,
    dedup: Option<DedupClaim>,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

/// One group of operations, sorted by kind.
#[derive(Default)]
struct Group {
    inserts: Vec<Insert>,
    completions: Vec<Completion>,
    flushes: Vec<oneshot::Sender<()>>,
}

impl Group {
    fn split(ops: Vec<Op>, unwritten: Vec<Completion>) -> Group {
        let mut group = Group {
            completions: unwritten,
            ..Group::default()
        };
        for op in ops {
            match op {
                Op::Insert {
                    event,
                    deliveries,
                    dedup,
                    reply,
                } => group.inserts.push(Insert {
                    event,
                    deliveries,
                    dedup,
                    reply,
                }),
                Op::Complete(list) => group.completions.extend(list),
                Op::Flush(reply) => group.flushes.push(reply),
            }
        }
        group
    }

    /// Commits the group; returns the completions that could not be written.
    async fn commit(self, pool: &PgPool, replica: &str, health: &Health) -> Vec<Completion> {
        let inserts: Vec<Parts<'_>> = self.inserts.iter().map(Parts::of).collect();
        let mut result = Err(StoreError::WriterGone);
        for _ in 0..=CONFLICT_RETRIES {
            result = write(pool, replica, &inserts, &self.completions).await;
            match &result {
                Err(e) if is_conflict(e) => continue,
                _ => break,
            }
        }
        match &result {
            Ok(_) => health.succeeded(),
            Err(_) => health.failed(),
        }
        let unwritten = match result {
            Ok(outcomes) => {
                for (insert, outcome) in self.inserts.into_iter().zip(outcomes) {
                    let _ = insert.reply.send(Ok(outcome));
                }
                Vec::new()
            }
            Err(e) if self.inserts.len() + self.completions.len() <= 1 => {
                fail_all(self.inserts, &e);
                self.completions
            }
            Err(_) => one_by_one(pool, replica, self.inserts, self.completions).await,
        };
        for flush in self.flushes {
            let _ = flush.send(());
        }
        unwritten
    }
}

/// The parts of an insert the statements borrow.
struct Parts<'a> {
    event: &'a NewEvent,
    deliveries: &'a [NewDelivery],
    dedup: Option<&'a DedupClaim>,
}

impl<'a> Parts<'a> {
    fn of(insert: &'a Insert) -> Parts<'a> {
        Parts {
            event: &insert.event,
            deliveries: &insert.deliveries,
            dedup: insert.dedup.as_ref(),
        }
    }
}

fn fail_all(inserts: Vec<Insert>, e: &StoreError) {
    let cause = error_chain(e);
    warn!(error = %cause, "database write failed");
    for insert in inserts {
        let err = StoreError::Database(sqlx::Error::Protocol(format!("write failed: {cause}")));
        let _ = insert.reply.send(Err(err));
    }
}

/// Replays a failed group one operation per transaction.
async fn one_by_one(
    pool: &PgPool,
    replica: &str,
    inserts: Vec<Insert>,
    completions: Vec<Completion>,
) -> Vec<Completion> {
    for insert in inserts {
        let parts = [Parts::of(&insert)];
        match write(pool, replica, &parts, &[]).await {
            Ok(mut outcome) => {
                let outcome = outcome.pop().unwrap_or(InsertOutcome::Stored);
                let _ = insert.reply.send(Ok(outcome));
            }
            Err(e) => fail_all(vec![insert], &e),
        }
    }
    let mut unwritten = Vec::new();
    for c in completions {
        if write(pool, replica, &[], std::slice::from_ref(&c))
            .await
            .is_err()
        {
            unwritten.push(c);
        }
    }
    unwritten
}

/// A deadlock or serialization failure against another transaction: worth trying again.
fn is_conflict(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40P01" | "40001"))
        }
        _ => false,
    }
}

/// One transaction: dedup claims, events and deliveries, completions, totals.
/// Returns each insert's outcome.
async fn write(
    pool: &PgPool,
    replica: &str,
    inserts: &[Parts<'_>],
    completions: &[Completion],
) -> Result<Vec<InsertOutcome>, StoreError> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(inserts.len());
    for insert in inserts {
        outcomes.push(match insert.dedup {
            Some(claim) => claim_dedup(&mut tx, insert.event, claim, now).await?,
            None => InsertOutcome::Stored,
        });
    }
    let stored: Vec<&Parts<'_>> = inserts
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == InsertOutcome::Stored)
        .map(|(p, _)| p)
        .collect();
    insert_events(&mut tx, &stored).await?;
    insert_deliveries(&mut tx, &stored, replica, now).await?;
    record_completions(&mut tx, completions, replica, now).await?;
    add_counters(&mut tx, &stored, completions).await?;
    tx.commit().await?;
    Ok(outcomes)
}

type Tx = Transaction<'static, Postgres>;

async fn claim_dedup(
    tx: &mut Tx,
    event: &NewEvent,
    claim: &DedupClaim,
    now: i64,
) -> Result<InsertOutcome, StoreError> {
    // Waits for another replica's uncommitted claim of the same key, then sees it.
    let claimed = sqlx::query(
        "INSERT INTO dedup_keys (namespace, source, key, event_id, expires_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (namespace, source, key) DO UPDATE
         SET event_id = excluded.event_id, expires_at = excluded.expires_at
         WHERE dedup_keys.expires_at <= $6",
    )
    .bind(&event.namespace)
    .bind(&event.source)
    .bind(&claim.key)
    .bind(&event.id)
    .bind(claim.expires_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() > 0 {
        return Ok(InsertOutcome::Stored);
    }
    let row = sqlx::query(
        "SELECT event_id FROM dedup_keys WHERE namespace = $1 AND source = $2 AND key = $3",
    )
    .bind(&event.namespace)
    .bind(&event.source)
    .bind(&claim.key)
    .fetch_one(&mut **tx)
    .await?;
    Ok(InsertOutcome::Duplicate {
        event_id: row.try_get("event_id")?,
    })
}

async fn insert_events(tx: &mut Tx, stored: &[&Parts<'_>]) -> Result<(), StoreError> {
    for chunk in stored.chunks(ROWS_PER_INSERT / 2) {
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "INSERT INTO events (id, namespace, source, method, path, query, headers, body, content_type, source_ip, received_at, status, validation_errors) ",
        );
        qb.push_values(chunk, |mut row, p| {
            let e = p.event;
            let status = if p.deliveries.is_empty() {
                EventStatus::Received
            } else {
                EventStatus::Processing
            };
            row.push_bind(&e.id)
                .push_bind(&e.namespace)
                .push_bind(&e.source)
                .push_bind(&e.method)
                .push_bind(&e.path)
                .push_bind(&e.query)
                .push_bind(headers_json(&e.headers))
                .push_bind(e.body.as_ref())
                .push_bind(&e.content_type)
                .push_bind(&e.source_ip)
                .push_bind(e.received_at)
                .push_bind(status.as_str())
                .push_bind(e.validation_errors.as_ref().map(|v| v.to_string()));
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_deliveries(
    tx: &mut Tx,
    stored: &[&Parts<'_>],
    replica: &str,
    now: i64,
) -> Result<(), StoreError> {
    let rows: Vec<(&NewEvent, &NewDelivery)> = stored
        .iter()
        .flat_map(|p| p.deliveries.iter().map(move |d| (p.event, d)))
        .collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "INSERT INTO deliveries (id, event_id, namespace, destination, route_kind, route, state, due_at, lease_until, claimed_by, created_at, updated_at, attempts, round_attempts) ",
        );
        qb.push_values(chunk, |mut row, (e, d)| {
            let (state, holder) = match d.lease_until {
                Some(_) => (DeliveryState::Inflight, Some(replica)),
                None => (DeliveryState::Pending, None),
            };
            row.push_bind(&d.id)
                .push_bind(&e.id)
                .push_bind(&e.namespace)
                .push_bind(&d.destination)
                .push_bind(d.route_kind.as_str())
                .push_bind(&d.route)
                .push_bind(state.as_str())
                .push_bind(now)
                .push_bind(d.lease_until)
                .push_bind(holder)
                .push_bind(now)
                .push_bind(now)
                // Claimed at once: the claim counts as the first attempt.
                .push_bind(i64::from(holder.is_some()))
                .push_bind(i64::from(holder.is_some()));
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Attempts, the deliveries' new states (only where this replica still holds the claim: a
/// delivery retried by hand or taken over meanwhile keeps its new state), and the events'
/// statuses.
async fn record_completions(
    tx: &mut Tx,
    completions: &[Completion],
    replica: &str,
    now: i64,
) -> Result<(), StoreError> {
    if completions.is_empty() {
        return Ok(());
    }
    insert_attempts(tx, completions).await?;
    let mut sorted: Vec<&Completion> = completions.iter().collect();
    // One lock order for every writer, so two replicas' groups cannot deadlock.
    sorted.sort_by(|a, b| a.job.delivery_id.cmp(&b.job.delivery_id));
    for chunk in sorted.chunks(ROWS_PER_INSERT / 2) {
        let mut qb: QueryBuilder<'_, Postgres> =
            QueryBuilder::new("UPDATE deliveries AS d SET state = v.state, due_at = COALESCE(v.due_at, d.due_at), lease_until = NULL, claimed_by = NULL, attempts = d.attempts + v.attempted - 1, round_attempts = d.round_attempts + v.attempted - 1, last_error = COALESCE(v.error, d.last_error), updated_at = ");
        qb.push_bind(now).push(" FROM (");
        qb.push_values(chunk, |mut row, c| {
            let (state, due_at) = c.outcome.state();
            row.push_bind(&c.job.delivery_id)
                .push_bind(state.as_str())
                .push_bind(due_at)
                .push_bind(i64::from(c.attempt.is_some()))
                .push_bind(&c.error);
        });
        qb.push(") AS v(id, state, due_at, attempted, error) WHERE d.id = v.id AND d.state = ")
            .push_bind(DeliveryState::Inflight.as_str())
            .push(" AND d.claimed_by = ")
            .push_bind(replica);
        qb.build().execute(&mut **tx).await?;
    }
    let mut event_ids: Vec<&str> = completions
        .iter()
        .map(|c| c.job.event_id.as_str())
        .collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    sqlx::query(&event_status_update())
        .bind(&event_ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_attempts(tx: &mut Tx, completions: &[Completion]) -> Result<(), StoreError> {
    let attempts: Vec<&Completion> = completions.iter().filter(|c| c.attempt.is_some()).collect();
    for chunk in attempts.chunks(ROWS_PER_INSERT / 2) {
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "INSERT INTO attempts (id, delivery_id, event_id, namespace, destination, route_kind, route, attempt_number, status, error, request_headers, detail, latency_ms, attempted_at, next_retry_at, is_dlq) ",
        );
        qb.push_values(chunk, |mut row, c| {
            if let Some(a) = &c.attempt {
                row.push_bind(&a.id)
                    .push_bind(&c.job.delivery_id)
                    .push_bind(&c.job.event_id)
                    .push_bind(&c.job.namespace)
                    .push_bind(&c.job.destination)
                    .push_bind(c.job.route_kind.as_str())
                    .push_bind(&c.job.route)
                    .push_bind(i64::from(a.attempt_number))
                    .push_bind(a.outcome.as_str())
                    .push_bind(&a.error)
                    .push_bind(headers_json(&a.request_headers))
                    .push_bind(detail_json(&a.detail))
                    .push_bind(a.latency_ms)
                    .push_bind(a.attempted_at)
                    .push_bind(a.next_retry_at)
                    .push_bind(a.is_dlq);
            }
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[derive(Default)]
struct Totals {
    received: i64,
    succeeded: i64,
    failed: i64,
    dead: i64,
    last_at: i64,
}

/// Per Source: events received; per Destination: attempts that succeeded or failed and
/// deliveries dead-lettered; each with the time of the latest. One upsert per group, in key
/// order.
async fn add_counters(
    tx: &mut Tx,
    stored: &[&Parts<'_>],
    completions: &[Completion],
) -> Result<(), StoreError> {
    let mut totals: BTreeMap<(ObjectKind, &str, &str), Totals> = BTreeMap::new();
    for p in stored {
        let t = totals
            .entry((ObjectKind::Source, &p.event.namespace, &p.event.source))
            .or_default();
        t.received += 1;
        t.last_at = t.last_at.max(p.event.received_at);
    }
    for c in completions {
        let Some(attempt) = &c.attempt else { continue };
        let t = totals
            .entry((
                ObjectKind::Destination,
                &c.job.namespace,
                &c.job.destination,
            ))
            .or_default();
        match c.outcome {
            crate::store::Outcome::Succeeded => t.succeeded += 1,
            crate::store::Outcome::Dead => {
                t.failed += 1;
                t.dead += 1;
            }
            _ => t.failed += 1,
        }
        t.last_at = t.last_at.max(attempt.attempted_at);
    }
    if totals.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = totals.into_iter().collect();
    let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "INSERT INTO counters (kind, namespace, name, received, succeeded, failed, dead_lettered, last_at) ",
    );
    qb.push_values(&rows, |mut row, ((kind, namespace, name), t)| {
        row.push_bind(kind.as_str())
            .push_bind(*namespace)
            .push_bind(*name)
            .push_bind(t.received)
            .push_bind(t.succeeded)
            .push_bind(t.failed)
            .push_bind(t.dead)
            .push_bind(t.last_at);
    })
    .push(
        " ON CONFLICT (kind, namespace, name) DO UPDATE SET
            received = counters.received + excluded.received,
            succeeded = counters.succeeded + excluded.succeeded,
            failed = counters.failed + excluded.failed,
            dead_lettered = counters.dead_lettered + excluded.dead_lettered,
            last_at = GREATEST(COALESCE(counters.last_at, 0), excluded.last_at)",
    );
    qb.build().execute(&mut **tx).await?;
    Ok(())
}
