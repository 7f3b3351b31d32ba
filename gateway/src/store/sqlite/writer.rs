//! The single writer: one thread owns the write connection and commits queued operations in
//! groups. A failed group is retried one operation per transaction, so one bad operation
//! cannot fail the others.
//!
//! The writer drives SQLite directly (rusqlite) on its own thread, with every statement
//! prepared once and kept: a commit is a run of `sqlite3_step` calls on that thread, with no
//! SQL parsed per commit and no hand-off to another thread per statement. Reads keep the
//! async pool of the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{event_with_id, SqliteSync};
use crate::clock::now_ms;
use crate::ids;
use crate::store::circuit_sql;
use crate::store::model::{
    CircuitChange, CircuitRow, ClaimRequest, Completion, DedupClaim, DeliveryState, EventStatus,
    InsertOutcome, Job, ManualRetry, NewDelivery, NewEvent, ObjectKind, Outcome,
};
use crate::store::{detail_json, headers_json, unwritten, Health, StoreError};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;
/// Prepared statements kept on the connection (every statement of the writer fits).
const STATEMENT_CACHE: usize = 64;

enum Op {
    Insert {
        event: Arc<NewEvent>,
        /// The event's headers in their stored form, made by the caller: off the writer's
        /// thread, which every commit waits for.
        headers: String,
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

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    health: Arc<Health>,
}

/// Opens the write connection to the database at `path`.
fn open(path: &Path, sync: SqliteSync) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let synchronous = match sync {
        SqliteSync::Full => "FULL",
        SqliteSync::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous};
         PRAGMA foreign_keys = OFF; PRAGMA wal_autocheckpoint = 4000;"
    ))?;
    Ok(conn)
}

impl Writer {
    /// Opens the write connection to the (migrated) database at `path`, returns deliveries
    /// that a previous run had claimed to the queue, and starts the writer thread.
    ///
    /// The writer runs on a thread of its own: a commit is a run of calls into SQLite, and
    /// on the shared runtime each of them would wait behind every request being served,
    /// stretching the commit (and so every sender's wait) under load.
    ///
    /// After a failed commit the connection is replaced by a new one, so no half-finished
    /// transaction (SQLite rolls some back by itself on a full disk) can be left behind for
    /// the next commit.
    pub fn start(path: PathBuf, sync: SqliteSync) -> Result<Writer, StoreError> {
        let mut conn = open(&path, sync)?;
        recover(&mut conn)?;
        // Events are stored under the number their id carries: ids made from now on carry
        // numbers above every one stored, whatever the clock did since the last run.
        let highest: Option<i64> =
            conn.query_row("SELECT max(seq) FROM events", [], |r| r.get(0))?;
        ids::raise_event_floor(highest.unwrap_or(0));
        let (tx, rx) = mpsc::channel(16_384);
        let health = Arc::new(Health::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(StoreError::Io)?;
        let shared = health.clone();
        std::thread::Builder::new()
            .name("hookstream-writer".to_owned())
            .spawn(move || runtime.block_on(run(conn, path, sync, rx, shared)))
            .map_err(StoreError::Io)?;
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
        let headers = headers_json(&event.headers);
        self.call(
            Op::Insert {
                event,
                headers,
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
fn recover(conn: &mut Connection) -> Result<usize, rusqlite::Error> {
    conn.execute(
        "UPDATE deliveries SET state = ?1, lease_until = NULL WHERE state = ?2",
        params![
            DeliveryState::Pending.as_str(),
            DeliveryState::Inflight.as_str()
        ],
    )
}

async fn run(
    mut conn: Connection,
    path: PathBuf,
    sync: SqliteSync,
    mut rx: mpsc::Receiver<Op>,
    health: Arc<Health>,
) {
    let mut unwritten: Vec<Completion> = Vec::new();
    while let Some(mut ops) = unwritten::next_group(&mut rx, MAX_BATCH, &unwritten).await {
        if !unwritten.is_empty() {
            ops.insert(0, Op::Complete(std::mem::take(&mut unwritten)));
        }
        let failures = health.failures();
        unwritten = commit_group(&mut conn, ops, &health);
        if health.failures() != failures {
            match open(&path, sync) {
                Ok(fresh) => conn = fresh,
                Err(e) => {
                    warn!(error = %crate::store::error_chain(&e), "cannot reopen the database after a failed write")
                }
            }
        }
        unwritten::bound(&mut unwritten);
    }
}

/// What an operation answers once its transaction is committed.
enum ReplyValue {
    Insert(InsertOutcome),
    Claim(Vec<Job>),
    Circuit(Option<CircuitRow>),
    Retry(Option<DeliveryState>),
    Prune(u64),
    Probe,
    /// Completions answer nobody.
    Nothing,
}

/// Sends `op` its answer. Replies are sent after the commit, so nobody hears "done" before
/// the data is durable; a caller that gave up waiting is not an error.
fn deliver_reply(op: Op, value: ReplyValue) {
    match (op, value) {
        (Op::Insert { reply, .. }, ReplyValue::Insert(v)) => drop(reply.send(Ok(v))),
        (Op::Claim { reply, .. }, ReplyValue::Claim(v)) => drop(reply.send(Ok(v))),
        (Op::Circuit { reply, .. }, ReplyValue::Circuit(v)) => drop(reply.send(Ok(v))),
        (Op::Retry { reply, .. }, ReplyValue::Retry(v)) => drop(reply.send(Ok(v))),
        (Op::Prune { reply, .. }, ReplyValue::Prune(v)) => drop(reply.send(Ok(v))),
        (Op::Probe(reply), ReplyValue::Probe) => drop(reply.send(Ok(()))),
        _ => {}
    }
}

/// Answers a failed operation; returns the completions to write again later.
fn fail(op: Op, e: &StoreError) -> Vec<Completion> {
    let cause = crate::store::error_chain(e);
    warn!(error = %cause, "database write failed");
    let err = || StoreError::WriteFailed(cause.clone());
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
fn commit_group(conn: &mut Connection, ops: Vec<Op>, health: &Health) -> Vec<Completion> {
    // Fast path: everything in one transaction. Ops are only borrowed by the attempt, so
    // the slow path can replay them one by one after a failure.
    match apply_all(conn, &ops) {
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
                match apply_all(conn, std::slice::from_ref(&op)) {
                    Ok(mut replies) => {
                        health.succeeded();
                        deliver_reply(op, replies.pop().unwrap_or(ReplyValue::Nothing));
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

/// Applies `ops` in one transaction and commits it; the answers, in the order of `ops`.
/// On an error the transaction is rolled back (when it is dropped).
fn apply_all(conn: &mut Connection, ops: &[Op]) -> Result<Vec<ReplyValue>, StoreError> {
    let now = now_ms();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut totals = Totals::default();
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    let mut replies = Vec::with_capacity(ops.len());
    for op in ops {
        let reply = match op {
            Op::Insert {
                event,
                headers,
                deliveries,
                dedup,
                ..
            } => {
                // The dedup claim decides whether the event is stored.
                let outcome = match dedup {
                    Some(claim) => claim_dedup(&tx, event, claim, now)?,
                    None => InsertOutcome::Stored,
                };
                if outcome == InsertOutcome::Stored {
                    insert_event(&tx, event, headers, deliveries, now)?;
                    totals.received(event);
                }
                ReplyValue::Insert(outcome)
            }
            Op::Complete(list) => {
                complete(&tx, list, now)?;
                for c in list {
                    totals.completed(c);
                    touched.insert(&c.job.event_id);
                }
                ReplyValue::Nothing
            }
            Op::Claim { request, .. } => ReplyValue::Claim(claim(&tx, request, now)?),
            Op::Circuit {
                namespace,
                destination,
                change,
                ..
            } => ReplyValue::Circuit(change_circuit(&tx, namespace, destination, *change)?),
            Op::Retry { request, .. } => ReplyValue::Retry(manual_retry(&tx, request, now)?),
            Op::Probe(_) => {
                // As large as a commit of a few large events; then emptied again.
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO health (id, checked_at, pad) VALUES (1, ?1, zeroblob(262144))",
                )?
                .execute(params![now])?;
                tx.prepare_cached("UPDATE health SET pad = NULL WHERE id = 1")?
                    .execute([])?;
                ReplyValue::Probe
            }
            Op::Prune { before, limit, .. } => ReplyValue::Prune(prune(&tx, *before, *limit, now)?),
        };
        replies.push(reply);
    }
    for event_id in touched {
        refresh_event_status(&tx, event_id)?;
    }
    totals.write(&tx)?;
    tx.commit()?;
    Ok(replies)
}

/// Per Source: events received; per Destination: attempts that succeeded or failed and
/// deliveries dead-lettered; each with the time of the latest. One upsert per object and
/// commit.
#[derive(Default)]
struct Totals<'a> {
    by_object: BTreeMap<(ObjectKind, &'a str, &'a str), Counts>,
}

#[derive(Default)]
struct Counts {
    received: i64,
    succeeded: i64,
    failed: i64,
    dead: i64,
    last_at: i64,
}

impl<'a> Totals<'a> {
    fn received(&mut self, event: &'a NewEvent) {
        let t = self
            .by_object
            .entry((ObjectKind::Source, &event.namespace, &event.source))
            .or_default();
        t.received += 1;
        t.last_at = t.last_at.max(event.received_at);
    }

    fn completed(&mut self, c: &'a Completion) {
        let Some(attempt) = &c.attempt else { return };
        let t = self
            .by_object
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

    fn write(self, tx: &Transaction<'_>) -> Result<(), rusqlite::Error> {
        if self.by_object.is_empty() {
            return Ok(());
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO counters (kind, namespace, name, received, succeeded, failed, dead_lettered, last_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (kind, namespace, name) DO UPDATE SET
                 received = counters.received + excluded.received,
                 succeeded = counters.succeeded + excluded.succeeded,
                 failed = counters.failed + excluded.failed,
                 dead_lettered = counters.dead_lettered + excluded.dead_lettered,
                 last_at = MAX(COALESCE(counters.last_at, 0), excluded.last_at)",
        )?;
        for ((kind, namespace, name), t) in self.by_object {
            st.execute(params![
                kind.as_str(),
                namespace,
                name,
                t.received,
                t.succeeded,
                t.failed,
                t.dead,
                t.last_at
            ])?;
        }
        Ok(())
    }
}

fn claim_dedup(
    tx: &Transaction<'_>,
    event: &NewEvent,
    claim: &DedupClaim,
    now: i64,
) -> Result<InsertOutcome, rusqlite::Error> {
    let stored = tx
        .prepare_cached(
            "INSERT INTO dedup_keys (namespace, source, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (namespace, source, key) DO UPDATE
             SET event_id = excluded.event_id, expires_at = excluded.expires_at
             WHERE dedup_keys.expires_at <= ?6",
        )?
        .execute(params![
            event.namespace,
            event.source,
            claim.key,
            event.id,
            claim.expires_at,
            now
        ])?;
    if stored > 0 {
        return Ok(InsertOutcome::Stored);
    }
    let event_id = tx
        .prepare_cached(
            "SELECT event_id FROM dedup_keys WHERE namespace = ?1 AND source = ?2 AND key = ?3",
        )?
        .query_row(params![event.namespace, event.source, claim.key], |r| {
            r.get(0)
        })?;
    Ok(InsertOutcome::Duplicate { event_id })
}

/// Stores an event and its deliveries.
fn insert_event(
    tx: &Transaction<'_>,
    e: &NewEvent,
    headers: &str,
    deliveries: &[NewDelivery],
    now: i64,
) -> Result<(), rusqlite::Error> {
    let status = if deliveries.is_empty() {
        EventStatus::Received
    } else {
        EventStatus::Processing
    };
    let seq = ids::event_seq(&e.id).ok_or_else(|| {
        rusqlite::Error::ToSqlConversionFailure(
            format!("event id {} does not carry a sequence number", e.id).into(),
        )
    })?;
    tx.prepare_cached(
        "INSERT INTO events (seq, id, namespace, source, method, path, query, headers, body, content_type, source_ip, received_at, status, validation_errors)
         VALUES (?14, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        e.id,
        e.namespace,
        e.source,
        e.method,
        e.path,
        e.query,
        headers,
        e.body.as_ref(),
        e.content_type,
        e.source_ip,
        e.received_at,
        status.as_str(),
        e.validation_errors.as_ref().map(|v| v.to_string()),
        seq,
    ])?;
    for d in deliveries {
        let state = if d.lease_until.is_some() {
            DeliveryState::Inflight
        } else {
            DeliveryState::Pending
        };
        insert_delivery(tx, &e.id, &e.namespace, d, state, d.lease_until, now)?;
    }
    Ok(())
}

fn insert_delivery(
    tx: &Transaction<'_>,
    event_id: &str,
    namespace: &str,
    d: &NewDelivery,
    state: DeliveryState,
    lease_until: Option<i64>,
    now: i64,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO deliveries (id, event_id, namespace, destination, route_kind, route, state, due_at, lease_until, created_at, updated_at, attempts, round_attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?8, ?8, ?10, ?10)",
    )?
    .execute(params![
        d.id,
        event_id,
        namespace,
        d.destination,
        d.route_kind.as_str(),
        d.route,
        state.as_str(),
        now,
        lease_until,
        // Claimed at once (handed to a worker): the claim counts as its first attempt.
        i64::from(state == DeliveryState::Inflight),
    ])?;
    Ok(())
}

/// Records finished delivery work: the attempts and the deliveries' new states.
fn complete(tx: &Transaction<'_>, list: &[Completion], now: i64) -> Result<(), rusqlite::Error> {
    let mut attempt = tx.prepare_cached(
        "INSERT INTO attempts (id, delivery_id, event_id, namespace, destination, route_kind, route, attempt_number, status, error, request_headers, detail, latency_ms, attempted_at, next_retry_at, is_dlq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    // Only the holder of the claim may finish it: a delivery retried by hand while an
    // attempt was in flight keeps its new state. The claim counted an attempt; work that
    // was not attempted after all (circuit open, shutting down) gives it back.
    let mut update = tx.prepare_cached(
        "UPDATE deliveries SET state = ?1, due_at = COALESCE(?2, due_at), lease_until = NULL,
             attempts = attempts + ?3 - 1, round_attempts = round_attempts + ?3 - 1,
             last_error = COALESCE(?4, last_error), updated_at = ?5
         WHERE id = ?6 AND state = ?7",
    )?;
    for c in list {
        if let Some(a) = &c.attempt {
            attempt.execute(params![
                a.id,
                c.job.delivery_id,
                c.job.event_id,
                c.job.namespace,
                c.job.destination,
                c.job.route_kind.as_str(),
                c.job.route,
                a.attempt_number,
                a.outcome.as_str(),
                a.error,
                headers_json(&a.request_headers),
                detail_json(&a.detail),
                a.latency_ms,
                a.attempted_at,
                a.next_retry_at,
                a.is_dlq,
            ])?;
        }
        let (state, due_at) = c.outcome.state();
        update.execute(params![
            state.as_str(),
            due_at,
            i64::from(c.attempt.is_some()),
            c.error,
            now,
            c.job.delivery_id,
            DeliveryState::Inflight.as_str(),
        ])?;
    }
    Ok(())
}

/// Derives an event's status from its deliveries.
static EVENT_STATUS_UPDATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE events SET status = COALESCE((
             SELECT CASE
                 WHEN COUNT(*) = 0 THEN '{received}'
                 WHEN SUM(state IN ('{pending}', '{inflight}')) > 0 THEN '{processing}'
                 WHEN SUM(state IN ('{dead}', '{cancelled}')) > 0 THEN '{failed}'
                 ELSE '{delivered}' END
             FROM deliveries WHERE deliveries.event_id = events.id), '{received}')
         WHERE {event}",
        event = event_with_id(1, 2),
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

fn refresh_event_status(tx: &Transaction<'_>, event_id: &str) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(&EVENT_STATUS_UPDATE)?
        .execute(params![event_id, ids::event_seq(event_id)])?;
    Ok(())
}

/// Claims due deliveries of one destination, oldest first: claims whose lease ran out, then
/// pending deliveries. Each is an index range walked in order, so a claim reads about as
/// many rows as it takes, however long the destination's backlog.
fn claim(tx: &Transaction<'_>, request: &ClaimRequest, now: i64) -> Result<Vec<Job>, StoreError> {
    let mut jobs = claim_in(tx, request, DeliveryState::Inflight, request.limit, now)?;
    let left = request.limit.saturating_sub(jobs.len() as u32);
    if left > 0 {
        jobs.extend(claim_in(tx, request, DeliveryState::Pending, left, now)?);
    }
    Ok(jobs)
}

/// The claim statement over the column that says when a row in `state` is due.
fn claim_sql(due_column: &str) -> String {
    format!(
        "UPDATE deliveries SET state = ?1, lease_until = ?2, updated_at = ?3,
             attempts = attempts + 1, round_attempts = round_attempts + 1
         WHERE seq IN (SELECT seq FROM deliveries WHERE state = ?4 AND namespace = ?5
                       AND destination = ?6 AND {due_column} <= ?3
                       ORDER BY due_at, seq LIMIT ?7)
         RETURNING id, event_id, namespace, destination, route_kind, route, attempts, round_attempts, due_at, seq"
    )
}

static CLAIM_EXPIRED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| claim_sql("lease_until"));
static CLAIM_PENDING: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| claim_sql("due_at"));

/// A claimed row as read, before its values are checked.
struct ClaimedRow {
    due_at: i64,
    seq: i64,
    id: String,
    event_id: String,
    namespace: String,
    destination: String,
    route_kind: String,
    route: String,
    attempts: i64,
    round_attempts: i64,
}

/// Claims up to `limit` deliveries of the destination in `state` that are due: pending ones
/// whose due time passed, or claimed ones whose lease ran out.
fn claim_in(
    tx: &Transaction<'_>,
    request: &ClaimRequest,
    state: DeliveryState,
    limit: u32,
    now: i64,
) -> Result<Vec<Job>, StoreError> {
    let sql = match state {
        DeliveryState::Inflight => CLAIM_EXPIRED.as_str(),
        _ => CLAIM_PENDING.as_str(),
    };
    let mut st = tx.prepare_cached(sql)?;
    let rows = st.query_map(
        params![
            DeliveryState::Inflight.as_str(),
            request.lease_until,
            now,
            state.as_str(),
            request.namespace,
            request.destination,
            i64::from(limit),
        ],
        |r| {
            Ok(ClaimedRow {
                id: r.get("id")?,
                event_id: r.get("event_id")?,
                namespace: r.get("namespace")?,
                destination: r.get("destination")?,
                route_kind: r.get("route_kind")?,
                route: r.get("route")?,
                attempts: r.get("attempts")?,
                round_attempts: r.get("round_attempts")?,
                due_at: r.get("due_at")?,
                seq: r.get("seq")?,
            })
        },
    )?;
    let mut claimed = rows.collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order guarantee; workers start deliveries oldest first.
    claimed.sort_by_key(|r| (r.due_at, r.seq));
    claimed
        .into_iter()
        .map(|r| {
            Ok(Job {
                delivery_id: r.id,
                event_id: r.event_id,
                namespace: r.namespace,
                destination: r.destination,
                route_kind: r.route_kind.parse()?,
                route: r.route,
                attempts: u32::try_from(r.attempts).unwrap_or(0),
                round_attempts: u32::try_from(r.round_attempts).unwrap_or(0),
            })
        })
        .collect()
}

fn manual_retry(
    tx: &Transaction<'_>,
    request: &ManualRetry,
    now: i64,
) -> Result<Option<DeliveryState>, StoreError> {
    match request {
        ManualRetry::Delivery { delivery_id } => {
            let row: Option<(String, String)> = tx
                .prepare_cached("SELECT event_id, state FROM deliveries WHERE id = ?1")?
                .query_map(params![delivery_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .next()
                .transpose()?;
            let Some((event_id, state)) = row else {
                return Ok(None);
            };
            let current: DeliveryState = state.parse()?;
            if current == DeliveryState::Inflight {
                return Ok(Some(current));
            }
            tx.prepare_cached(
                "UPDATE deliveries SET state = ?1, due_at = ?2, lease_until = NULL, round_attempts = 0, updated_at = ?2 WHERE id = ?3",
            )?
            .execute(params![DeliveryState::Pending.as_str(), now, delivery_id])?;
            refresh_event_status(tx, &event_id)?;
            Ok(Some(DeliveryState::Pending))
        }
        ManualRetry::Event {
            event_id,
            deliveries,
        } => {
            let namespace: Option<String> = tx
                .prepare_cached(&format!(
                    "SELECT namespace FROM events WHERE {}",
                    event_with_id(1, 2)
                ))?
                .query_map(params![event_id, ids::event_seq(event_id)], |r| r.get(0))?
                .next()
                .transpose()?;
            let Some(namespace) = namespace else {
                return Ok(None);
            };
            for d in deliveries {
                insert_delivery(
                    tx,
                    event_id,
                    &namespace,
                    d,
                    DeliveryState::Pending,
                    None,
                    now,
                )?;
            }
            refresh_event_status(tx, event_id)?;
            Ok(Some(DeliveryState::Pending))
        }
    }
}

fn change_circuit(
    tx: &Transaction<'_>,
    namespace: &str,
    destination: &str,
    change: CircuitChange,
) -> Result<Option<CircuitRow>, StoreError> {
    let (sql, params) = circuit_sql::statement(change);
    let sql = circuit_sql::for_sqlite(sql);
    let mut values: Vec<rusqlite::types::Value> =
        vec![namespace.to_owned().into(), destination.to_owned().into()];
    values.extend(params.values().into_iter().map(|v| match v {
        circuit_sql::Value::Bool(b) => rusqlite::types::Value::from(b),
        circuit_sql::Value::Int(i) => rusqlite::types::Value::from(i),
    }));
    let mut st = tx.prepare_cached(&sql)?;
    let row = st
        .query_map(rusqlite::params_from_iter(values), |r| {
            Ok((
                r.get::<_, String>("namespace")?,
                r.get::<_, String>("destination")?,
                r.get::<_, String>("state")?,
                r.get::<_, i64>("consecutive_failures")?,
                r.get::<_, Option<i64>>("opened_at")?,
                r.get::<_, Option<i64>>("last_failure_at")?,
                r.get::<_, Option<i64>>("probe_at")?,
            ))
        })?
        .next()
        .transpose()?;
    let Some((namespace, destination, state, failures, opened_at, last_failure_at, probe_at)) = row
    else {
        return Ok(None);
    };
    Ok(Some(CircuitRow {
        namespace,
        destination,
        state: state.parse()?,
        consecutive_failures: u32::try_from(failures).unwrap_or(0),
        opened_at,
        last_failure_at,
        probe_at,
    }))
}

/// How far past the retention bound the pruner reads in `seq` order before it stops: an
/// event's `seq` follows its receipt time to within moments (see `RECEIPT_ORDER_SLACK_MS` in
/// `read.rs`, whose wider slack also covers a clock set back), far less than this.
const PRUNE_ORDER_SLACK_MS: i64 = 10_000;

fn prune(tx: &Transaction<'_>, before: i64, limit: u32, now: i64) -> Result<u64, rusqlite::Error> {
    if limit == 0 {
        return Ok(0);
    }
    // Oldest first in `seq` order (events have no index on their receipt time), until events
    // received well after `before`; an event still being delivered is kept.
    let mut old: Vec<(i64, String)> = Vec::new();
    {
        let mut oldest = tx.prepare_cached(
            "SELECT seq, id, received_at, EXISTS (
                 SELECT 1 FROM deliveries d WHERE d.event_id = events.id AND d.state IN (?1, ?2))
             FROM events ORDER BY seq",
        )?;
        let mut rows = oldest.query(params![
            DeliveryState::Pending.as_str(),
            DeliveryState::Inflight.as_str()
        ])?;
        while let Some(row) = rows.next()? {
            let received_at: i64 = row.get(2)?;
            if received_at >= before.saturating_add(PRUNE_ORDER_SLACK_MS) {
                break;
            }
            if received_at < before && !row.get::<_, bool>(3)? {
                old.push((row.get(0)?, row.get(1)?));
                if old.len() >= limit as usize {
                    break;
                }
            }
        }
    }
    {
        let mut attempts = tx.prepare_cached("DELETE FROM attempts WHERE event_id = ?1")?;
        let mut deliveries = tx.prepare_cached("DELETE FROM deliveries WHERE event_id = ?1")?;
        let mut events = tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
        for (seq, id) in &old {
            attempts.execute(params![id])?;
            deliveries.execute(params![id])?;
            events.execute(params![seq])?;
        }
    }
    tx.prepare_cached("DELETE FROM dedup_keys WHERE expires_at <= ?1")?
        .execute(params![now])?;
    Ok(old.len() as u64)
}
