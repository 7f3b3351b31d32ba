//! PostgreSQL queries on the pool: events and attempts for the management API (lists read
//! only summary columns, never bodies or headers), circuits, totals and queue depths.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::store::model::{
    AttemptQuery, CounterKey, Counters, DeliveryState, EventQuery, QueueDepth, SEARCH_BODY_BYTES,
    SEARCH_WINDOW,
};

crate::store::rows::row_decoders!(PgRow);

pub(super) async fn event(pool: &PgPool, id: &str) -> Result<Option<StoredEvent>, StoreError> {
    let row = sqlx::query("SELECT * FROM events WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(event_from).transpose()
}

/// The columns of an event listing: neither the body nor the headers.
const EVENT_LISTING: &str = "seq, id, namespace, source, method, content_type, received_at, status";

/// The columns of an attempt listing: no headers, and of the transport's detail only the
/// status code.
const ATTEMPT_LISTING: &str = "seq, id, delivery_id, event_id, namespace, destination, route_kind, route, attempt_number, status, error, latency_ms, attempted_at, next_retry_at, is_dlq, CAST(CAST(detail AS jsonb) ->> 'status_code' AS BIGINT) AS status_code";

/// ` AND namespace = ANY(...)` for a caller's scope (nothing matches an empty scope).
fn push_scope(qb: &mut QueryBuilder<'_, Postgres>, namespaces: Option<&Vec<String>>) {
    if let Some(namespaces) = namespaces {
        qb.push(" AND namespace = ANY(")
            .push_bind(namespaces.clone())
            .push(")");
    }
}

/// The filters of an event list other than the search, and its position.
fn push_event_filters(qb: &mut QueryBuilder<'_, Postgres>, q: &EventQuery) {
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
    }
    if let Some(before) = q.before {
        qb.push(" AND received_at < ").push_bind(before);
    }
    if let Some((at, seq)) = q.after_position {
        qb.push(" AND (received_at < ")
            .push_bind(at)
            .push(" OR (received_at = ")
            .push_bind(at)
            .push(" AND seq < ")
            .push_bind(seq)
            .push("))");
    }
}

pub(super) async fn events(pool: &PgPool, q: &EventQuery) -> Result<Vec<EventListing>, StoreError> {
    let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new("SELECT ");
    qb.push(EVENT_LISTING);
    match &q.search {
        None => {
            qb.push(" FROM events WHERE 1 = 1");
            push_event_filters(&mut qb, q);
        }
        Some(search) => {
            // Bounded: the newest SEARCH_WINDOW rows that pass the other filters, and the
            // first SEARCH_BODY_BYTES of each of their bodies. Case-insensitive like SQLite's
            // LIKE; the body is bytes, searched in its escaped text form (non-ASCII bytes as
            // octal escapes on both sides).
            qb.push(" FROM (SELECT ")
                .push(EVENT_LISTING)
                .push(", substring(body from 1 for ")
                .push_bind(i32::try_from(SEARCH_BODY_BYTES).unwrap_or(i32::MAX))
                .push(") AS head FROM events WHERE 1 = 1");
            push_event_filters(&mut qb, q);
            qb.push(" ORDER BY received_at DESC, seq DESC LIMIT ")
                .push_bind(i64::from(SEARCH_WINDOW));
            qb.push(") AS recent WHERE (starts_with(lower(id), lower(")
                .push_bind(search.clone())
                .push(")) OR strpos(lower(encode(head, 'escape')), lower(encode(convert_to(")
                .push_bind(search.clone())
                .push(", 'UTF8'), 'escape'))) > 0)");
        }
    }
    qb.push(" ORDER BY received_at DESC, seq DESC LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter().map(event_listing_from).collect()
}

pub(super) async fn attempts(
    pool: &PgPool,
    q: &AttemptQuery,
) -> Result<Vec<AttemptListing>, StoreError> {
    let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new("SELECT ");
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
        qb.push(" AND is_dlq");
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
    pool: &PgPool,
    event_id: &str,
) -> Result<Vec<StoredAttempt>, StoreError> {
    let rows = sqlx::query("SELECT * FROM attempts WHERE event_id = $1 ORDER BY seq")
        .bind(event_id)
        .fetch_all(pool)
        .await?;
    rows.iter().map(attempt_from).collect()
}

pub(super) async fn attempt(pool: &PgPool, id: &str) -> Result<Option<StoredAttempt>, StoreError> {
    let row = sqlx::query("SELECT * FROM attempts WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(attempt_from).transpose()
}

/// A circuit from its row.
pub(super) async fn circuits(pool: &PgPool) -> Result<Vec<CircuitRow>, StoreError> {
    let rows = sqlx::query("SELECT * FROM circuits")
        .fetch_all(pool)
        .await?;
    rows.iter().map(circuit_from).collect()
}

pub(super) async fn queue_depths(pool: &PgPool) -> Result<Vec<QueueDepth>, StoreError> {
    let rows = sqlx::query(
        "SELECT namespace, destination, COUNT(*) AS n, MIN(created_at) AS oldest FROM deliveries WHERE state IN ($1, $2) GROUP BY namespace, destination",
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

pub(super) async fn counters(pool: &PgPool) -> Result<Vec<(CounterKey, Counters)>, StoreError> {
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
    pool: &PgPool,
    ids: &[&str],
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query("SELECT * FROM events WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from).collect()
}
