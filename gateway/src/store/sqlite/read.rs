//! SQLite queries on the read pool: events and attempts for the management API (lists read
//! only summary columns, never bodies or headers), the queue's next due time, circuits,
//! totals and queue depths.

use std::collections::HashSet;

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{event_with_id, LEGACY_SEQ_LIMIT};
use crate::ids;
use crate::store::like_escape;
use crate::store::model::{
    AttemptQuery, CounterKey, Counters, DeliveryState, EventQuery, QueueDepth, SEARCH_BODY_BYTES,
    SEARCH_WINDOW,
};

crate::store::rows::row_decoders!(SqliteRow);

pub(super) async fn event(pool: &SqlitePool, id: &str) -> Result<Option<StoredEvent>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT * FROM events WHERE {}",
        event_with_id(1, 2)
    ))
    .bind(id)
    .bind(ids::event_seq(id))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(event_from).transpose()
}

/// The columns of an event listing: neither the body nor the headers.
const EVENT_LISTING: &str = "seq, id, namespace, source, method, content_type, received_at, status";

/// The columns of an attempt listing: no headers, and of the transport's detail only the
/// status code.
const ATTEMPT_LISTING: &str = "seq, id, delivery_id, event_id, namespace, destination, route_kind, route, attempt_number, status, error, latency_ms, attempted_at, next_retry_at, is_dlq, json_extract(detail, '$.status_code') AS status_code";

/// ` AND namespace IN (...)` for a caller's scope (nothing matches an empty scope).
fn push_scope(qb: &mut QueryBuilder<'_, Sqlite>, namespaces: Option<&Vec<String>>) {
    let Some(namespaces) = namespaces else {
        return;
    };
    if namespaces.is_empty() {
        qb.push(" AND 0 = 1");
        return;
    }
    qb.push(" AND namespace IN (");
    let mut list = qb.separated(", ");
    for ns in namespaces {
        list.push_bind(ns.clone());
    }
    qb.push(")");
}

/// How far receipt times may run out of `seq` order. An event's `seq` is the number its id
/// got as its request was accepted (events stored before migration 0006: its place in the
/// commit order) and its receipt time is stamped at about that moment; only a clock set
/// back, or one event's wait for the writer, puts them out of order.
const RECEIPT_ORDER_SLACK_MS: i64 = 60_000;

/// The `seq` range that holds every event received in `[after, before)`: events are kept in
/// `seq` order (there is no index on the receipt time, one b-tree less to write per event),
/// so the range is found by a binary search over `seq`, widened by
/// [`RECEIPT_ORDER_SLACK_MS`] on both sides.
#[derive(Clone, Copy, Default)]
struct SeqRange {
    from: Option<i64>,
    until: Option<i64>,
}

impl SeqRange {
    async fn of(pool: &SqlitePool, q: &EventQuery) -> Result<SeqRange, StoreError> {
        if q.after.is_none() && q.before.is_none() {
            return Ok(SeqRange::default());
        }
        let (first, last): (Option<i64>, Option<i64>) =
            sqlx::query_as("SELECT min(seq), max(seq) FROM events")
                .fetch_one(pool)
                .await?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(SeqRange::default());
        };
        let mut range = SeqRange::default();
        if let Some(after) = q.after {
            let at = after.saturating_sub(RECEIPT_ORDER_SLACK_MS);
            range.from = first_seq_at(pool, first, last, at).await?;
        }
        if let Some(before) = q.before {
            let at = before.saturating_add(RECEIPT_ORDER_SLACK_MS);
            range.until = first_seq_at(pool, first, last, at).await?;
        }
        Ok(range)
    }
}

/// The first `seq` in `[first, last]` from which events were received at `at` or later,
/// with receipt times taken as rising with `seq`; `None` when no event was received that
/// late.
async fn first_seq_at(
    pool: &SqlitePool,
    first: i64,
    last: i64,
    at: i64,
) -> Result<Option<i64>, StoreError> {
    // The answer is in [low, high]; high = last + 1 stands for "none".
    let (mut low, mut high) = (first, last + 1);
    while low < high {
        let mid = low + (high - low) / 2;
        let next: Option<(i64, i64)> = sqlx::query_as(
            "SELECT seq, received_at FROM events WHERE seq >= ? ORDER BY seq LIMIT 1",
        )
        .bind(mid)
        .fetch_optional(pool)
        .await?;
        match next {
            Some((seq, received_at)) if received_at < at => low = seq + 1,
            _ => high = mid,
        }
    }
    Ok((low <= last).then_some(low))
}

/// The filters of an event list other than the search, and its position.
fn push_event_filters(qb: &mut QueryBuilder<'_, Sqlite>, q: &EventQuery, range: SeqRange) {
    push_scope(qb, q.namespaces.as_ref());
    if let Some(ns) = &q.namespace {
        qb.push(" AND namespace = ").push_bind(ns.clone());
    }
    if let Some(source) = &q.source {
        qb.push(" AND source = ").push_bind(source.clone());
    }
    if let Some(status) = q.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(after) = q.after {
        qb.push(" AND received_at >= ").push_bind(after);
        if let Some(from) = range.from {
            qb.push(" AND seq >= ").push_bind(from);
        }
    }
    if let Some(before) = q.before {
        qb.push(" AND received_at < ").push_bind(before);
        if let Some(until) = range.until {
            qb.push(" AND seq < ").push_bind(until);
        }
    }
    // Newest first is `seq` order here: the cursor's `seq` says where the page ends.
    if let Some((_, seq)) = q.after_position {
        qb.push(" AND seq < ").push_bind(seq);
    }
}

pub(super) async fn events(
    pool: &SqlitePool,
    q: &EventQuery,
) -> Result<Vec<EventListing>, StoreError> {
    let range = SeqRange::of(pool, q).await?;
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("SELECT ");
    qb.push(EVENT_LISTING);
    match &q.search {
        None => {
            qb.push(" FROM events WHERE 1 = 1");
            push_event_filters(&mut qb, q, range);
        }
        Some(search) => {
            // Bounded: the newest SEARCH_WINDOW rows that pass the other filters, and the
            // first SEARCH_BODY_BYTES of each of their bodies.
            qb.push(" FROM (SELECT ")
                .push(EVENT_LISTING)
                .push(", CAST(substr(body, 1, ")
                .push_bind(i64::from(SEARCH_BODY_BYTES))
                .push(") AS TEXT) AS head FROM events WHERE 1 = 1");
            push_event_filters(&mut qb, q, range);
            qb.push(" ORDER BY seq DESC LIMIT ")
                .push_bind(i64::from(SEARCH_WINDOW));
            let escaped = like_escape(search);
            qb.push(") WHERE (id LIKE ")
                .push_bind(format!("{escaped}%"))
                .push(" ESCAPE '\\' OR head LIKE ")
                .push_bind(format!("%{escaped}%"))
                .push(" ESCAPE '\\')");
        }
    }
    qb.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(event_listing_from).collect()
}

pub(super) async fn attempts(
    pool: &SqlitePool,
    q: &AttemptQuery,
) -> Result<Vec<AttemptListing>, StoreError> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("SELECT ");
    qb.push(ATTEMPT_LISTING).push(" FROM attempts WHERE 1 = 1");
    push_scope(&mut qb, q.namespaces.as_ref());
    if let Some(id) = &q.event_id {
        qb.push(" AND event_id = ").push_bind(id.clone());
    }
    if let Some(ns) = &q.namespace {
        qb.push(" AND namespace = ").push_bind(ns.clone());
    }
    if let Some(d) = &q.destination {
        qb.push(" AND destination = ").push_bind(d.clone());
    }
    if let Some(outcome) = q.outcome {
        qb.push(" AND status = ").push_bind(outcome.as_str());
    }
    if q.dlq_only {
        qb.push(" AND is_dlq = 1");
    }
    if let Some((at, seq)) = q.after_position {
        qb.push(" AND (attempted_at < ")
            .push_bind(at)
            .push(" OR (attempted_at = ")
            .push_bind(at)
            .push(" AND seq < ")
            .push_bind(seq)
            .push("))");
    }
    qb.push(" ORDER BY attempted_at DESC, seq DESC LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(attempt_listing_from).collect()
}

pub(super) async fn attempts_of_event(
    pool: &SqlitePool,
    event_id: &str,
) -> Result<Vec<StoredAttempt>, StoreError> {
    let rows = sqlx::query("SELECT * FROM attempts WHERE event_id = ? ORDER BY seq")
        .bind(event_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(attempt_from).collect()
}

pub(super) async fn attempt(
    pool: &SqlitePool,
    id: &str,
) -> Result<Option<StoredAttempt>, StoreError> {
    let row = sqlx::query("SELECT * FROM attempts WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(attempt_from).transpose()
}

/// A circuit from its row.
pub(super) async fn circuits(pool: &SqlitePool) -> Result<Vec<CircuitRow>, StoreError> {
    let rows = sqlx::query("SELECT * FROM circuits")
        .fetch_all(pool)
        .await?;
    rows.iter().map(circuit_from).collect()
}

pub(super) async fn due_destinations(
    pool: &SqlitePool,
    now: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(
        "SELECT DISTINCT namespace, destination FROM deliveries WHERE state = ? AND due_at <= ?
         UNION SELECT DISTINCT namespace, destination FROM deliveries WHERE state = ? AND lease_until < ?",
    )
    .bind(DeliveryState::Pending.as_str())
    .bind(now)
    .bind(DeliveryState::Inflight.as_str())
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("namespace")?, r.try_get("destination")?)))
        .collect()
}

pub(super) async fn queue_depths(pool: &SqlitePool) -> Result<Vec<QueueDepth>, StoreError> {
    let rows = sqlx::query(
        "SELECT namespace, destination, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries WHERE state IN (?, ?) GROUP BY namespace, destination",
    )
    .bind(DeliveryState::Pending.as_str())
    .bind(DeliveryState::Inflight.as_str())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(QueueDepth {
                namespace: r.try_get("namespace")?,
                destination: r.try_get("destination")?,
                depth: r.try_get("n")?,
                oldest_created_at: r.try_get("oldest")?,
            })
        })
        .collect()
}

pub(super) async fn counters(pool: &SqlitePool) -> Result<Vec<(CounterKey, Counters)>, StoreError> {
    let rows = sqlx::query(
        "SELECT kind, namespace, name, received, succeeded, failed, dead_lettered, last_at FROM counters",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                (
                    r.try_get::<&str, _>("kind")?.parse()?,
                    r.try_get("namespace")?,
                    r.try_get("name")?,
                ),
                Counters {
                    received: r.try_get("received")?,
                    succeeded: r.try_get("succeeded")?,
                    failed: r.try_get("failed")?,
                    dead_lettered: r.try_get("dead_lettered")?,
                    last_at: r.try_get("last_at")?,
                },
            ))
        })
        .collect()
}

pub(super) async fn events_by_ids(
    pool: &SqlitePool,
    ids: &[&str],
) -> Result<Vec<StoredEvent>, StoreError> {
    // By the sequence numbers the ids carry, and the events stored before ids carried one by
    // their ids; a row found by a number is the one asked for only if its id is.
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let wanted: HashSet<&str> = chunk.iter().copied().collect();
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("SELECT * FROM events WHERE seq IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(ids::event_seq(id));
        }
        qb.push(") UNION ALL SELECT * FROM events WHERE id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        qb.push(format!(") AND seq < {LEGACY_SEQ_LIMIT}"));
        let rows = qb.build().fetch_all(pool).await?;
        for r in &rows {
            let event = event_from(r)?;
            if wanted.contains(event.event.id.as_str()) {
                out.push(event);
            }
        }
    }
    Ok(out)
}
