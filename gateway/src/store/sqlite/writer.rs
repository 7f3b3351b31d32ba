//! The single writer: one task owns the write connection and commits queued operations in
//! groups. A failed group is retried one operation per transaction, so one bad operation
//! cannot fail the others.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Row};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::clock::now_ms;
use crate::store::circuit_sql;
use crate::store::model::{
    CircuitChange, CircuitRow, ClaimRequest, Completion, DedupClaim, DeliveryState, EventStatus,
    InsertOutcome, Job, ManualRetry, NewDelivery, NewEvent, ObjectKind, Outcome,
};
use crate::store::{detail_json, headers_json, unwritten, Health, StoreError};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;
/// Rows per multi-row INSERT, under SQLite's bound-parameter limit.
const ROWS_PER_INSERT: usize = 400;

enum Op {
    Insert {
        event: Arc<NewEvent>,
        deliveries: Vec<NewDelivery>,
        dedup: Option<DedupClaim>,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    Complete(Vec<Completion>),
    Claim {
        request: ClaimRequest,
        reply: oneshot::Sender<Result<Vec<Job>, StoreError>>,
    },
    Circuit {
        namespace: String,
        destination: String,
        change: CircuitChange,
        reply: oneshot::Sender<Result<Option<CircuitRow>, StoreError>>,
    },
    Retry {
        request: ManualRetry,
        reply: oneshot::Sender<Result<Option<DeliveryState>, StoreError>>,
    },
    Prune {
        before: i64,
        limit: u32,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// A small write that shows whether the database takes writes.
    Probe(oneshot::Sender<Result<(), StoreError>>),
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    health: Arc<Health>,
}

impl Writer {
    /// Starts the writer task on `conn`.
    ///
    /// The writer runs on a thread of its own: a commit takes several round trips to
    /// SQLite, and on the shared runtime each of them would wait behind every request
    /// being served, stretching the commit (and so every sender's wait) under load.
    ///
    /// After a failed commit the connection is replaced by a new one from `options`, so no
    /// half-finished transaction (SQLite rolls some back by itself on a full disk) can be
    /// left behind for the next commit.
    pub fn start(
        conn: SqliteConnection,
        options: SqliteConnectOptions,
    ) -> Result<Writer, std::io::Error> {
        let (tx, rx) = mpsc::channel(16_384);
        let health = Arc::new(Health::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = health.clone();
        std::thread::Builder::new()
            .name("hookstream-writer".to_owned())
            .spawn(move || runtime.block_on(run(conn, options, rx, shared)))?;
        Ok(Writer { tx, health })
    }

    /// Whether writes go through.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Writes the health row: whether the database takes writes now.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.call(Op::Probe(reply), rx).await
    }

    async fn call<T>(
        &self,
        op: Op,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.tx.send(op).await.map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Stores an event with its deliveries (and claims its dedup key) in one transaction.
    /// Returns once the transaction is durable.
    pub async fn insert(
        &self,
        event: Arc<NewEvent>,
        deliveries: Vec<NewDelivery>,
        dedup: Option<DedupClaim>,
    ) -> Result<InsertOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Op::Insert {
                event,
                deliveries,
                dedup,
                reply,
            },
            rx,
        )
        .await
    }

    /// Records finished delivery work. Fire and forget: if the process dies first, the
    /// deliveries' leases expire and they are attempted again (at least once).
    pub async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        self.tx
            .send(Op::Complete(completions))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Claims due deliveries of one destination.
    pub async fn claim(&self, request: ClaimRequest) -> Result<Vec<Job>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.call(Op::Claim { request, reply }, rx).await
    }

    /// Changes a circuit.
    pub async fn change_circuit(
        &self,
        namespace: &str,
        destination: &str,
        change: CircuitChange,
    ) -> Result<Option<CircuitRow>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let op = Op::Circuit {
            namespace: namespace.to_owned(),
            destination: destination.to_owned(),
            change,
            reply,
        };
        self.call(op, rx).await
    }

    /// Retries by hand. Returns `None` when the delivery or event does not exist, or the
    /// new state.
    pub async fn retry(&self, request: ManualRetry) -> Result<Option<DeliveryState>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.call(Op::Retry { request, reply }, rx).await
    }

    /// Deletes up to `limit` events received before `before` (unix ms) with their
    /// deliveries and attempts, and expired dedup keys. Returns the events deleted.
    pub async fn prune(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.call(
            Op::Prune {
                before,
                limit,
                reply,
            },
            rx,
        )
        .await
    }

    /// Waits until every operation queued so far is committed, then returns. Used at
    /// shutdown.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        let op = Op::Prune {
            before: i64::MIN,
            limit: 0,
            reply,
        };
        if self.tx.send(op).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Returns deliveries that a previous run of this gateway had claimed to the queue. Only
/// safe with a single gateway per database, which is what SQLite supports.
pub async fn recover(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE deliveries SET state = ?, lease_until = NULL WHERE state = ?")
        .bind(DeliveryState::Pending.as_str())
        .bind(DeliveryState::Inflight.as_str())
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

async fn run(
    mut conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut rx: mpsc::Receiver<Op>,
    health: Arc<Health>,
) {
    let mut unwritten: Vec<Completion> = Vec::new();
    while let Some(mut ops) = unwritten::next_group(&mut rx, MAX_BATCH, &unwritten).await {
        if !unwritten.is_empty() {
            ops.insert(0, Op::Complete(std::mem::take(&mut unwritten)));
        }
        let failures = health.failures();
        unwritten = commit_group(&mut conn, ops, &health).await;
        if health.failures() != failures {
            match options.connect().await {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    warn!(error = %crate::store::error_chain(&e), "cannot reopen the database after a failed write")
                }
            }
        }
        unwritten::bound(&mut unwritten);
    }
}

/// Replies are sent after the commit, so nobody hears "done" before the data is durable.
enum Reply {
    Insert(
        oneshot::Sender<Result<InsertOutcome, StoreError>>,
        InsertOutcome,
    ),
    Claim(oneshot::Sender<Result<Vec<Job>, StoreError>>, Vec<Job>),
    Circuit(
        oneshot::Sender<Result<Option<CircuitRow>, StoreError>>,
        Option<CircuitRow>,
    ),
    Retry(
        oneshot::Sender<Result<Option<DeliveryState>, StoreError>>,
        Option<DeliveryState>,
    ),
    Prune(oneshot::Sender<Result<u64, StoreError>>, u64),
    Probe(oneshot::Sender<Result<(), StoreError>>),
}

impl Reply {
    fn send(self) {
        // A caller that gave up waiting is not an error.
        match self {
            Reply::Insert(tx, v) => drop(tx.send(Ok(v))),
            Reply::Claim(tx, v) => drop(tx.send(Ok(v))),
            Reply::Circuit(tx, v) => drop(tx.send(Ok(v))),
            Reply::Retry(tx, v) => drop(tx.send(Ok(v))),
            Reply::Prune(tx, v) => drop(tx.send(Ok(v))),
            Reply::Probe(tx) => drop(tx.send(Ok(()))),
        }
    }
}

/// Answers a failed operation; returns the completions to write again later.
fn fail(op: Op, e: &StoreError) -> Vec<Completion> {
    let cause = crate::store::error_chain(e);
    warn!(error = %cause, "database write failed");
    let err = || StoreError::Database(sqlx::Error::Protocol(format!("write failed: {cause}")));
    match op {
        Op::Insert { reply, .. } => drop(reply.send(Err(err()))),
        Op::Claim { reply, .. } => drop(reply.send(Err(err()))),
        Op::Circuit { reply, .. } => drop(reply.send(Err(err()))),
        Op::Retry { reply, .. } => drop(reply.send(Err(err()))),
        Op::Prune { reply, .. } => drop(reply.send(Err(err()))),
        Op::Probe(reply) => drop(reply.send(Err(err()))),
        Op::Complete(list) => return list,
    }
    Vec::new()
}

/// Commits `ops`; returns the completions that could not be written.
async fn commit_group(
    conn: &mut SqliteConnection,
    ops: Vec<Op>,
    health: &Health,
) -> Vec<Completion> {
    // Fast path: everything in one transaction. Ops are moved into the transaction attempt
    // only by reference, so the slow path can replay them one by one after a failure.
    match apply_all(conn, &ops).await {
        Ok(replies) => {
            health.succeeded();
            for (op, reply) in ops.into_iter().zip(replies) {
                deliver_reply(op, reply);
            }
            Vec::new()
        }
        Err(e) if ops.len() == 1 => {
            health.failed();
            ops.into_iter().flat_map(|op| fail(op, &e)).collect()
        }
        Err(_) => {
            let mut unwritten = Vec::new();
            for op in ops {
                match apply_all(conn, std::slice::from_ref(&op)).await {
                    Ok(mut replies) => {
                        health.succeeded();
                        deliver_reply(op, replies.pop().flatten());
                    }
                    Err(e) => {
                        health.failed();
                        unwritten.extend(fail(op, &e));
                    }
                }
            }
            unwritten
        }
    }
}

fn deliver_reply(op: Op, reply: Option<ReplyValue>) {
    let reply = match (op, reply) {
        (Op::Insert { reply, .. }, Some(ReplyValue::Insert(v))) => Reply::Insert(reply, v),
        (Op::Claim { reply, .. }, Some(ReplyValue::Claim(v))) => Reply::Claim(reply, v),
        (Op::Circuit { reply, .. }, Some(ReplyValue::Circuit(v))) => Reply::Circuit(reply, v),
        (Op::Retry { reply, .. }, Some(ReplyValue::Retry(v))) => Reply::Retry(reply, v),
        (Op::Prune { reply, .. }, Some(ReplyValue::Prune(v))) => Reply::Prune(reply, v),
        (Op::Probe(reply), Some(ReplyValue::Probe)) => Reply::Probe(reply),
        _ => return,
    };
    reply.send();
}

enum ReplyValue {
    Insert(InsertOutcome),
    Claim(Vec<Job>),
    Circuit(Option<CircuitRow>),
    Retry(Option<DeliveryState>),
    Prune(u64),
    Probe,
}

/// Statements of one commit, sent to SQLite in one round trip: under load each round trip
/// between the writer and SQLite's thread waits for a CPU, so their number, more than the
/// work in them, sets how long a commit (and every sender's wait) takes.
struct Statements<'a> {
    qb: QueryBuilder<'a, Sqlite>,
    count: usize,
}

impl<'a> Statements<'a> {
    fn new() -> Self {
        Statements {
            qb: QueryBuilder::new(""),
            count: 0,
        }
    }

    /// Starts the next statement with `sql` and returns the builder to continue it.
    fn next(&mut self, sql: &str) -> &mut QueryBuilder<'a, Sqlite> {
        if self.count > 0 {
            self.qb.push(";\n");
        }
        self.count += 1;
        self.qb.push(sql);
        &mut self.qb
    }

    async fn execute(mut self, conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
        if self.count > 0 {
            // Each batch has its own text: caching its prepared form would only evict
            // the statements that do repeat.
            self.qb.build().persistent(false).execute(conn).await?;
        }
        Ok(())
    }
}

/// Whether an operation needs nothing back from the database but success.
fn is_plain(op: &Op) -> bool {
    matches!(op, Op::Insert { dedup: None, .. } | Op::Complete(_))
}

async fn apply_all(
    conn: &mut SqliteConnection,
    ops: &[Op],
) -> Result<Vec<Option<ReplyValue>>, StoreError> {
    let now = now_ms();
    if ops.iter().all(is_plain) {
        // The common case, ingest and delivery results: the whole transaction, BEGIN to
        // COMMIT, in one round trip.
        let refs: Vec<&Op> = ops.iter().collect();
        let mut st = Statements::new();
        st.next("BEGIN IMMEDIATE");
        push_plain(&mut st, &refs, now);
        st.next("COMMIT");
        if let Err(e) = st.execute(conn).await {
            // The transaction is still open when a statement after BEGIN failed; when none
            // is open, ROLLBACK fails harmlessly.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(e.into());
        }
        return Ok(ops
            .iter()
            .map(|op| {
                matches!(op, Op::Insert { .. }).then_some(ReplyValue::Insert(InsertOutcome::Stored))
            })
            .collect());
    }

    let mut tx = conn.begin().await?;
    let mut plain: Vec<&Op> = Vec::with_capacity(ops.len());
    let mut replies: Vec<Option<ReplyValue>> = Vec::with_capacity(ops.len());
    for op in ops {
        let reply = match op {
            Op::Insert { event, dedup, .. } => {
                // The dedup claim decides whether the event is stored.
                let outcome = match dedup {
                    Some(claim) => claim_dedup(&mut tx, event, claim, now).await?,
                    None => InsertOutcome::Stored,
                };
                if outcome == InsertOutcome::Stored {
                    plain.push(op);
                }
                Some(ReplyValue::Insert(outcome))
            }
            Op::Complete(_) => {
                plain.push(op);
                None
            }
            Op::Claim { request, .. } => {
                Some(ReplyValue::Claim(claim(&mut tx, request, now).await?))
            }
            Op::Circuit {
                namespace,
                destination,
                change,
                ..
            } => Some(ReplyValue::Circuit(
                change_circuit(&mut tx, namespace, destination, *change).await?,
            )),
            Op::Retry { request, .. } => Some(ReplyValue::Retry(
                manual_retry(&mut tx, request, now).await?,
            )),
            Op::Probe(_) => {
                // As large as a commit of a few large events; then emptied again.
                sqlx::query("INSERT OR REPLACE INTO health (id, checked_at, pad) VALUES (1, ?, zeroblob(262144))")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE health SET pad = NULL WHERE id = 1")
                    .execute(&mut *tx)
                    .await?;
                Some(ReplyValue::Probe)
            }
            Op::Prune { before, limit, .. } => Some(ReplyValue::Prune(
                prune(&mut tx, *before, *limit, now).await?,
            )),
        };
        replies.push(reply);
    }
    let mut st = Statements::new();
    push_plain(&mut st, &plain, now);
    st.execute(&mut tx).await?;
    tx.commit().await?;
    Ok(replies)
}

/// Adds the statements of stored inserts, completions and circuit saves.
fn push_plain<'a>(st: &mut Statements<'a>, ops: &[&'a Op], now: i64) {
    let mut events: Vec<(&'a NewEvent, bool)> = Vec::new();
    let mut deliveries: Vec<(&'a NewEvent, &'a NewDelivery)> = Vec::new();
    let mut completions: Vec<&'a Completion> = Vec::new();
    for op in ops {
        match op {
            Op::Insert {
                event,
                deliveries: ds,
                ..
            } => {
                let event: &'a NewEvent = event;
                events.push((event, !ds.is_empty()));
                deliveries.extend(ds.iter().map(|d| (event, d)));
            }
            Op::Complete(list) => completions.extend(list.iter()),
            Op::Claim { .. }
            | Op::Circuit { .. }
            | Op::Retry { .. }
            | Op::Prune { .. }
            | Op::Probe(_) => {}
        }
    }
    push_events(st, &events);
    push_deliveries(st, &deliveries, now);
    push_completions(st, &completions, now);
    push_counters(st, &events, &completions);
}

/// Per Source: events received; per Destination: attempts that succeeded or failed and
/// deliveries dead-lettered; each with the time of the latest. One upsert per commit.
fn push_counters<'a>(
    st: &mut Statements<'a>,
    events: &[(&'a NewEvent, bool)],
    completions: &[&'a Completion],
) {
    #[derive(Default)]
    struct Totals {
        received: i64,
        succeeded: i64,
        failed: i64,
        dead: i64,
        last_at: i64,
    }
    let mut totals: BTreeMap<(ObjectKind, &'a str, &'a str), Totals> = BTreeMap::new();
    for (event, _) in events {
        let t = totals
            .entry((ObjectKind::Source, &event.namespace, &event.source))
            .or_default();
        t.received += 1;
        t.last_at = t.last_at.max(event.received_at);
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
        if matches!(c.outcome, Outcome::Succeeded) {
            t.succeeded += 1;
        } else {
            t.failed += 1;
        }
        if matches!(c.outcome, Outcome::Dead) {
            t.dead += 1;
        }
        t.last_at = t.last_at.max(attempt.attempted_at);
    }
    if totals.is_empty() {
        return;
    }
    let rows: Vec<_> = totals.into_iter().collect();
    for chunk in rows.chunks(ROWS_PER_INSERT / 2) {
        st.next(
            "INSERT INTO counters (kind, namespace, name, received, succeeded, failed, dead_lettered, last_at) ",
        )
        .push_values(chunk, |mut row, ((kind, namespace, name), t)| {
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
                last_at = MAX(COALESCE(counters.last_at, 0), excluded.last_at)",
        );
    }
}

async fn claim_dedup(
    tx: &mut SqliteConnection,
    event: &NewEvent,
    claim: &DedupClaim,
    now: i64,
) -> Result<InsertOutcome, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO dedup_keys (namespace, source, key, event_id, expires_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (namespace, source, key) DO UPDATE
         SET event_id = excluded.event_id, expires_at = excluded.expires_at
         WHERE dedup_keys.expires_at <= ?",
    )
    .bind(&event.namespace)
    .bind(&event.source)
    .bind(&claim.key)
    .bind(&event.id)
    .bind(claim.expires_at)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() > 0 {
        return Ok(InsertOutcome::Stored);
    }
    let row = sqlx::query(
        "SELECT event_id FROM dedup_keys WHERE namespace = ? AND source = ? AND key = ?",
    )
    .bind(&event.namespace)
    .bind(&event.source)
    .bind(&claim.key)
    .fetch_one(&mut *tx)
    .await?;
    Ok(InsertOutcome::Duplicate {
        event_id: row.try_get("event_id")?,
    })
}

fn push_events<'a>(st: &mut Statements<'a>, events: &[(&'a NewEvent, bool)]) {
    for chunk in events.chunks(ROWS_PER_INSERT / 2) {
        st.next(
            "INSERT INTO events (id, namespace, source, method, path, query, headers, body, content_type, source_ip, received_at, status, validation_errors) "
        )
        .push_values(chunk, |mut row, (e, routed)| {
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
                .push_bind(if *routed {
                    EventStatus::Processing.as_str()
                } else {
                    EventStatus::Received.as_str()
                })
                .push_bind(e.validation_errors.as_ref().map(|v| v.to_string()));
        });
    }
}

fn push_deliveries<'a>(
    st: &mut Statements<'a>,
    deliveries: &[(&'a NewEvent, &'a NewDelivery)],
    now: i64,
) {
    for chunk in deliveries.chunks(ROWS_PER_INSERT) {
        st.next(
            "INSERT INTO deliveries (id, event_id, namespace, destination, route_kind, route, state, due_at, lease_until, created_at, updated_at) "
        )
        .push_values(chunk, |mut row, (e, d)| {
            row.push_bind(&d.id)
                .push_bind(&e.id)
                .push_bind(&e.namespace)
                .push_bind(&d.destination)
                .push_bind(d.route_kind.as_str())
                .push_bind(&d.route)
                .push_bind(if d.lease_until.is_some() {
                    DeliveryState::Inflight.as_str()
                } else {
                    DeliveryState::Pending.as_str()
                })
                .push_bind(now)
                .push_bind(d.lease_until)
                .push_bind(now)
                .push_bind(now);
        });
    }
}

/// Claims due deliveries of one destination, oldest first: claims whose lease ran out, then
/// pending deliveries. Each is an index range walked in order, so a claim reads about as
/// many rows as it takes, however long the destination's backlog.
async fn claim(
    tx: &mut SqliteConnection,
    request: &ClaimRequest,
    now: i64,
) -> Result<Vec<Job>, StoreError> {
    let mut jobs = claim_in(tx, request, DeliveryState::Inflight, request.limit, now).await?;
    let left = request.limit.saturating_sub(jobs.len() as u32);
    if left > 0 {
        jobs.extend(claim_in(tx, request, DeliveryState::Pending, left, now).await?);
    }
    Ok(jobs)
}

/// Claims up to `limit` deliveries of the destination in `state` that are due: pending ones
/// whose due time passed, or claimed ones whose lease ran out.
async fn claim_in(
    tx: &mut SqliteConnection,
    request: &ClaimRequest,
    state: DeliveryState,
    limit: u32,
    now: i64,
) -> Result<Vec<Job>, StoreError> {
    let due_column = match state {
        DeliveryState::Inflight => "lease_until",
        _ => "due_at",
    };
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("UPDATE deliveries SET state = ");
    qb.push_bind(DeliveryState::Inflight.as_str())
        .push(", lease_until = ")
        .push_bind(request.lease_until)
        .push(", updated_at = ")
        .push_bind(now)
        .push(" WHERE seq IN (SELECT seq FROM deliveries WHERE state = ")
        .push_bind(state.as_str())
        .push(" AND namespace = ")
        .push_bind(&request.namespace)
        .push(" AND destination = ")
        .push_bind(&request.destination)
        .push(format!(" AND {due_column} <= "))
        .push_bind(now)
        .push(" ORDER BY due_at, seq LIMIT ")
        .push_bind(i64::from(limit))
        .push(")");
    qb.push(" RETURNING id, event_id, namespace, destination, route_kind, route, attempts, round_attempts, due_at, seq");
    let rows = qb.build().fetch_all(&mut *tx).await?;
    let mut jobs: Vec<(i64, i64, Job)> = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("due_at")?,
                r.try_get::<i64, _>("seq")?,
                super::read::job_from(r)?,
            ))
        })
        .collect::<Result<_, StoreError>>()?;
    // RETURNING gives no order guarantee; workers start deliveries oldest first.
    jobs.sort_by_key(|(due, seq, _)| (*due, *seq));
    Ok(jobs.into_iter().map(|(_, _, j)| j).collect())
}

fn push_completions<'a>(st: &mut Statements<'a>, completions: &[&'a Completion], now: i64) {
    if completions.is_empty() {
        return;
    }
    let attempts: Vec<&Completion> = completions
        .iter()
        .copied()
        .filter(|c| c.attempt.is_some())
        .collect();
    for chunk in attempts.chunks(ROWS_PER_INSERT / 2) {
        st.next(
            "INSERT INTO attempts (id, delivery_id, event_id, namespace, destination, route_kind, route, attempt_number, status, error, request_headers, detail, latency_ms, attempted_at, next_retry_at, is_dlq) ",
        )
        .push_values(chunk, |mut row, c| {
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
                    .push_bind(i64::from(a.is_dlq));
            }
        });
    }
    // One statement per chunk for the state changes and one for the event statuses: at
    // thousands of deliveries a second, per-row statements would dominate the commit.
    for chunk in completions.chunks(ROWS_PER_INSERT / 2) {
        let qb = st.next("WITH v(id, state, due_at, attempted, error) AS (");
        qb.push_values(chunk, |mut row, c| {
            let (new_state, due_at) = c.outcome.state();
            row.push_bind(&c.job.delivery_id)
                .push_bind(new_state.as_str())
                .push_bind(due_at)
                .push_bind(i64::from(c.attempt.is_some()))
                .push_bind(&c.error);
        });
        // Only the holder of the claim may finish it: a delivery retried by hand while an
        // attempt was in flight keeps its new state.
        qb.push(
            ") UPDATE deliveries SET state = v.state, due_at = COALESCE(v.due_at, deliveries.due_at),
                 lease_until = NULL, attempts = deliveries.attempts + v.attempted,
                 round_attempts = deliveries.round_attempts + v.attempted,
                 last_error = COALESCE(v.error, deliveries.last_error), updated_at = ",
        )
        .push_bind(now)
        .push(" FROM v WHERE deliveries.id = v.id AND deliveries.state = ")
        .push_bind(DeliveryState::Inflight.as_str());
    }
    let mut event_ids: Vec<&'a str> = completions
        .iter()
        .map(|c| c.job.event_id.as_str())
        .collect();
    event_ids.sort_unstable();
    event_ids.dedup();
    for chunk in event_ids.chunks(ROWS_PER_INSERT) {
        push_event_statuses(st, chunk);
    }
}

async fn refresh_event_status(
    tx: &mut SqliteConnection,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    let mut st = Statements::new();
    push_event_statuses(&mut st, &[event_id]);
    st.execute(tx).await
}

/// Derives an event's status from its deliveries; the statement continues with a list of
/// event ids and `)`.
static EVENT_STATUS_UPDATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE events SET status = COALESCE((
             SELECT CASE
                 WHEN COUNT(*) = 0 THEN '{received}'
                 WHEN SUM(state IN ('{pending}', '{inflight}')) > 0 THEN '{processing}'
                 WHEN SUM(state IN ('{dead}', '{cancelled}')) > 0 THEN '{failed}'
                 ELSE '{delivered}' END
             FROM deliveries WHERE deliveries.event_id = events.id), '{received}')
         WHERE id IN (",
        received = EventStatus::Received,
        processing = EventStatus::Processing,
        failed = EventStatus::Failed,
        delivered = EventStatus::Delivered,
        pending = DeliveryState::Pending,
        inflight = DeliveryState::Inflight,
        dead = DeliveryState::Dead,
        cancelled = DeliveryState::Cancelled,
    )
});

/// Derives each event's status from its deliveries.
fn push_event_statuses<'a>(st: &mut Statements<'a>, event_ids: &[&'a str]) {
    let qb = st.next(&EVENT_STATUS_UPDATE);
    let mut list = qb.separated(", ");
    for id in event_ids {
        list.push_bind(*id);
    }
    qb.push(")");
}

async fn manual_retry(
    tx: &mut SqliteConnection,
    request: &ManualRetry,
    now: i64,
) -> Result<Option<DeliveryState>, StoreError> {
    match request {
        ManualRetry::Delivery { delivery_id } => {
            let row = sqlx::query("SELECT event_id, state FROM deliveries WHERE id = ?")
                .bind(delivery_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let current: DeliveryState = row.try_get::<&str, _>("state")?.parse()?;
            if current == DeliveryState::Inflight {
                return Ok(Some(current));
            }
            let event_id: String = row.try_get("event_id")?;
            sqlx::query(
                "UPDATE deliveries SET state = ?, due_at = ?, lease_until = NULL, round_attempts = 0, updated_at = ? WHERE id = ?",
            )
            .bind(DeliveryState::Pending.as_str())
            .bind(now)
            .bind(now)
            .bind(delivery_id)
            .execute(&mut *tx)
            .await?;
            refresh_event_status(tx, &event_id).await?;
            Ok(Some(DeliveryState::Pending))
        }
        ManualRetry::Event {
            event_id,
            deliveries,
        } => {
            let row = sqlx::query("SELECT namespace FROM events WHERE id = ?")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let namespace: String = row.try_get("namespace")?;
            for d in deliveries {
                sqlx::query(
                    "INSERT INTO deliveries (id, event_id, namespace, destination, route_kind, route, state, due_at, created_at, updated_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&d.id)
                .bind(event_id)
                .bind(&namespace)
                .bind(&d.destination)
                .bind(d.route_kind.as_str())
                .bind(&d.route)
                .bind(DeliveryState::Pending.as_str())
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            refresh_event_status(tx, event_id).await?;
            Ok(Some(DeliveryState::Pending))
        }
    }
}

async fn change_circuit(
    tx: &mut SqliteConnection,
    namespace: &str,
    destination: &str,
    change: CircuitChange,
) -> Result<Option<CircuitRow>, StoreError> {
    let (sql, params) = circuit_sql::statement(change);
    let sql = circuit_sql::for_sqlite(sql);
    let row = circuit_sql::query::<Sqlite>(&sql, namespace, destination, params)
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(super::read::circuit_from).transpose()
}

async fn prune(
    tx: &mut SqliteConnection,
    before: i64,
    limit: u32,
    now: i64,
) -> Result<u64, sqlx::Error> {
    if limit == 0 {
        return Ok(0);
    }
    // Events whose deliveries are all finished; an event still being delivered is kept.
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM events WHERE received_at < ? AND NOT EXISTS (
             SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.state IN (?, ?))
         ORDER BY received_at LIMIT ?",
    )
    .bind(before)
    .bind(DeliveryState::Pending.as_str())
    .bind(DeliveryState::Inflight.as_str())
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    for chunk in ids.chunks(ROWS_PER_INSERT) {
        for table in ["attempts", "deliveries"] {
            let mut qb: QueryBuilder<'_, Sqlite> =
                QueryBuilder::new(format!("DELETE FROM {table} WHERE event_id IN ("));
            let mut list = qb.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("DELETE FROM events WHERE id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(id);
        }
        qb.push(")");
        qb.build().execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM dedup_keys WHERE expires_at <= ?")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(ids.len() as u64)
}
