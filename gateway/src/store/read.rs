//! Queries: events and attempts for the management API and the delivery workers.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::model::{state, CircuitRow, Counters};
use super::StoreError;

/// A stored event.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Position in the log (cursor key).
    pub seq: i64,
    /// `evt_` id.
    pub id: String,
    /// Source namespace.
    pub namespace: String,
    /// Source name.
    pub source: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Vec<u8>,
    /// Content-Type.
    pub content_type: Option<String>,
    /// Client address.
    pub source_ip: String,
    /// Receive time, unix ms.
    pub received_at: i64,
    /// received, processing, delivered or failed.
    pub status: String,
    /// Schema errors (warn mode).
    pub validation_errors: Option<serde_json::Value>,
}

/// A stored attempt.
#[derive(Clone, Debug)]
pub struct StoredAttempt {
    /// Position (cursor key).
    pub seq: i64,
    /// `da_` id.
    pub id: String,
    /// Delivery it belongs to.
    pub delivery_id: String,
    /// Event.
    pub event_id: String,
    /// Namespace.
    pub namespace: String,
    /// Destination name.
    pub destination: String,
    /// Route kind.
    pub route_kind: String,
    /// Route name.
    pub route: String,
    /// 1-based.
    pub attempt_number: i64,
    /// success or failed.
    pub status: String,
    /// Response status.
    pub status_code: Option<i64>,
    /// Failure reason.
    pub error: Option<String>,
    /// Headers sent.
    pub request_headers: Vec<(String, String)>,
    /// Headers received.
    pub response_headers: Option<Vec<(String, String)>>,
    /// Start of the response body.
    pub response_body: Option<String>,
    /// Duration.
    pub latency_ms: i64,
    /// When, unix ms.
    pub attempted_at: i64,
    /// Next retry, unix ms.
    pub next_retry_at: Option<i64>,
    /// Dead-lettered by this attempt.
    pub is_dlq: bool,
}

/// Filters for listing events; newest first by receive time.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Source namespace.
    pub namespace: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Received at or after, unix ms.
    pub after: Option<i64>,
    /// Received before, unix ms.
    pub before: Option<i64>,
    /// Event id prefix or body text.
    pub search: Option<String>,
    /// Only events after this (received_at, seq) position in newest-first order (the
    /// cursor).
    pub after_position: Option<(i64, i64)>,
    /// Page size.
    pub limit: u32,
}

/// Filters for listing attempts; newest first by attempt time.
#[derive(Clone, Debug, Default)]
pub struct AttemptQuery {
    /// Event.
    pub event_id: Option<String>,
    /// Destination namespace.
    pub namespace: Option<String>,
    /// Destination name.
    pub destination: Option<String>,
    /// success or failed.
    pub status: Option<String>,
    /// Only attempts that dead-lettered their delivery.
    pub dlq_only: bool,
    /// Only attempts after this (attempted_at, seq) position in newest-first order (the
    /// cursor).
    pub after_position: Option<(i64, i64)>,
    /// Page size.
    pub limit: u32,
}

fn headers_from(text: &str) -> Vec<(String, String)> {
    serde_json::from_str(text).unwrap_or_default()
}

fn event_from(r: &SqliteRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        namespace: r.try_get("namespace")?,
        source: r.try_get("source")?,
        method: r.try_get("method")?,
        path: r.try_get("path")?,
        query: r.try_get("query")?,
        headers: headers_from(r.try_get("headers")?),
        body: r.try_get("body")?,
        content_type: r.try_get("content_type")?,
        source_ip: r.try_get("source_ip")?,
        received_at: r.try_get("received_at")?,
        status: r.try_get("status")?,
        validation_errors: r
            .try_get::<Option<String>, _>("validation_errors")?
            .and_then(|t| serde_json::from_str(&t).ok()),
    })
}

fn attempt_from(r: &SqliteRow) -> Result<StoredAttempt, sqlx::Error> {
    Ok(StoredAttempt {
        seq: r.try_get("seq")?,
        id: r.try_get("id")?,
        delivery_id: r.try_get("delivery_id")?,
        event_id: r.try_get("event_id")?,
        namespace: r.try_get("namespace")?,
        destination: r.try_get("destination")?,
        route_kind: r.try_get("route_kind")?,
        route: r.try_get("route")?,
        attempt_number: r.try_get("attempt_number")?,
        status: r.try_get("status")?,
        status_code: r.try_get("status_code")?,
        error: r.try_get("error")?,
        request_headers: headers_from(r.try_get("request_headers")?),
        response_headers: r
            .try_get::<Option<String>, _>("response_headers")?
            .map(|t| headers_from(&t)),
        response_body: r.try_get("response_body")?,
        latency_ms: r.try_get("latency_ms")?,
        attempted_at: r.try_get("attempted_at")?,
        next_retry_at: r.try_get("next_retry_at")?,
        is_dlq: r.try_get::<i64, _>("is_dlq")? != 0,
    })
}

/// One event by id.
pub async fn event(pool: &SqlitePool, id: &str) -> Result<Option<StoredEvent>, StoreError> {
    let row = sqlx::query("SELECT * FROM events WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(event_from).transpose()?)
}

/// Events matching `q`, newest first, at most `q.limit + 1` (the extra row tells whether
/// there are more).
pub async fn events(pool: &SqlitePool, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("SELECT * FROM events WHERE 1 = 1");
    if let Some(ns) = &q.namespace {
        qb.push(" AND namespace = ").push_bind(ns);
    }
    if let Some(source) = &q.source {
        qb.push(" AND source = ").push_bind(source);
    }
    if let Some(status) = &q.status {
        qb.push(" AND status = ").push_bind(status);
    }
    if let Some(after) = q.after {
        qb.push(" AND received_at >= ").push_bind(after);
    }
    if let Some(before) = q.before {
        qb.push(" AND received_at < ").push_bind(before);
    }
    if let Some(search) = &q.search {
        let escaped = search
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        qb.push(" AND (id LIKE ")
            .push_bind(format!("{escaped}%"))
            .push(" ESCAPE '\\' OR CAST(body AS TEXT) LIKE ")
            .push_bind(format!("%{escaped}%"))
            .push(" ESCAPE '\\')");
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
    qb.push(" ORDER BY received_at DESC, seq DESC LIMIT ")
        .push_bind(i64::from(q.limit) + 1);
    let rows = qb.build().fetch_all(pool).await?;
    Ok(rows.iter().map(event_from).collect::<Result<_, _>>()?)
}

/// Attempts matching `q`, newest first, at most `q.limit + 1`.
pub async fn attempts(
    pool: &SqlitePool,
    q: &AttemptQuery,
) -> Result<Vec<StoredAttempt>, StoreError> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("SELECT * FROM attempts WHERE 1 = 1");
    if let Some(id) = &q.event_id {
        qb.push(" AND event_id = ").push_bind(id);
    }
    if let Some(ns) = &q.namespace {
        qb.push(" AND namespace = ").push_bind(ns);
    }
    if let Some(d) = &q.destination {
        qb.push(" AND destination = ").push_bind(d);
    }
    if let Some(s) = &q.status {
        qb.push(" AND status = ").push_bind(s);
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
    Ok(rows.iter().map(attempt_from).collect::<Result<_, _>>()?)
}

/// Every attempt of one event, oldest first.
pub async fn attempts_of_event(
    pool: &SqlitePool,
    event_id: &str,
) -> Result<Vec<StoredAttempt>, StoreError> {
    let rows = sqlx::query("SELECT * FROM attempts WHERE event_id = ? ORDER BY seq")
        .bind(event_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(attempt_from).collect::<Result<_, _>>()?)
}

/// One attempt by id.
pub async fn attempt(pool: &SqlitePool, id: &str) -> Result<Option<StoredAttempt>, StoreError> {
    let row = sqlx::query("SELECT * FROM attempts WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(attempt_from).transpose()?)
}

/// The state of a delivery.
pub async fn delivery_state(
    pool: &SqlitePool,
    delivery_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT state FROM deliveries WHERE id = ?")
            .bind(delivery_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// Every persisted circuit.
pub async fn circuits(pool: &SqlitePool) -> Result<Vec<CircuitRow>, StoreError> {
    let rows = sqlx::query("SELECT * FROM circuits")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(CircuitRow {
                namespace: r.try_get("namespace")?,
                destination: r.try_get("destination")?,
                state: r.try_get("state")?,
                consecutive_failures: u32::try_from(r.try_get::<i64, _>("consecutive_failures")?)
                    .unwrap_or(0),
                opened_at: r.try_get("opened_at")?,
                last_failure_at: r.try_get("last_failure_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Earliest due time of a waiting delivery, if any waits (claimed deliveries whose lease
/// ran out count as due at their lease end).
pub async fn next_due(pool: &SqlitePool) -> Result<Option<i64>, StoreError> {
    let pending: Option<i64> =
        sqlx::query_scalar("SELECT MIN(due_at) FROM deliveries WHERE state = ?")
            .bind(state::PENDING)
            .fetch_one(pool)
            .await?;
    let leased: Option<i64> =
        sqlx::query_scalar("SELECT MIN(lease_until) FROM deliveries WHERE state = ?")
            .bind(state::INFLIGHT)
            .fetch_one(pool)
            .await?;
    Ok(match (pending, leased) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Waiting deliveries per destination, for the queue depth gauge.
pub async fn queue_depths(pool: &SqlitePool) -> Result<Vec<(String, String, i64)>, StoreError> {
    let rows = sqlx::query(
        "SELECT namespace, destination, COUNT(*) AS n FROM deliveries WHERE state IN ('pending', 'inflight') GROUP BY namespace, destination",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("namespace")?,
                r.try_get("destination")?,
                r.try_get("n")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Running totals by kind (`source` or `destination`), namespace and name.
pub async fn counters(
    pool: &SqlitePool,
) -> Result<Vec<((String, String, String), Counters)>, StoreError> {
    let rows = sqlx::query(
        "SELECT kind, namespace, name, received, succeeded, failed, dead_lettered, last_at FROM counters",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                (
                    r.try_get("kind")?,
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
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Events by id, in no particular order.
pub async fn events_by_ids(
    pool: &SqlitePool,
    ids: &[&str],
) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("SELECT * FROM events WHERE id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        qb.push(")");
        let rows = qb.build().fetch_all(pool).await?;
        for r in &rows {
            out.push(event_from(r)?);
        }
    }
    Ok(out)
}

impl From<StoredEvent> for super::NewEvent {
    fn from(e: StoredEvent) -> Self {
        super::NewEvent {
            id: e.id,
            namespace: e.namespace,
            source: e.source,
            method: e.method,
            path: e.path,
            query: e.query,
            headers: e.headers,
            body: e.body.into(),
            content_type: e.content_type,
            source_ip: e.source_ip,
            received_at: e.received_at,
            validation_errors: e.validation_errors,
        }
    }
}
