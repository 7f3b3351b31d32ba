//! The delivery queue on PostgreSQL, shared by every replica: claims with leases, the
//! destinations with due work, circuits, manual retries, retention, and the replicas'
//! heartbeats. Each function is one
//! transaction of its own on the pool.

use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::store::circuit_sql;
use crate::store::model::{
    CircuitChange, CircuitRow, ClaimRequest, DeliveryState, EventStatus, Job, ManualRetry,
};
use crate::store::StoreError;

/// A claim's parameters.
pub(super) struct Claim<'a> {
    /// What to take.
    pub request: &'a ClaimRequest,
    /// The replica claiming.
    pub replica: &'a str,
    /// Now, unix ms.
    pub now: i64,
    /// Replicas whose last heartbeat is before this are gone.
    pub stale_before: i64,
}

/// Claimed rows that may be taken over: their lease ran out, or their replica's heartbeat
/// stopped.
fn push_reclaimable<'a>(qb: &mut QueryBuilder<'a, Postgres>, now: i64, stale_before: i64) {
    qb.push("d.state = ")
        .push_bind(DeliveryState::Inflight.as_str())
        .push(" AND (d.lease_until < ")
        .push_bind(now)
        .push(" OR NOT EXISTS (SELECT 1 FROM replicas r WHERE r.id = d.claimed_by AND r.last_seen >= ")
        .push_bind(stale_before)
        .push("))");
}

/// Pending rows whose due time passed.
fn push_pending_due<'a>(qb: &mut QueryBuilder<'a, Postgres>, now: i64) {
    qb.push("d.state = ")
        .push_bind(DeliveryState::Pending.as_str())
        .push(" AND d.due_at <= ")
        .push_bind(now);
}

pub(super) fn job_from(r: &PgRow) -> Result<Job, StoreError> {
    Ok(Job {
        delivery_id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        namespace: r.try_get("namespace")?,
        destination: r.try_get("destination")?,
        route_kind: r.try_get::<&str, _>("route_kind")?.parse()?,
        route: r.try_get("route")?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
        round_attempts: u32::try_from(r.try_get::<i64, _>("round_attempts")?).unwrap_or(0),
    })
}

/// Claims up to `c.request.limit` deliveries of one destination, oldest first: claims to take
/// over, then pending deliveries, each an index range walked in order (a claim reads about
/// as many rows as it takes, however long the backlog); rows another replica is claiming at
/// the same moment are skipped, not waited for.
pub(super) async fn claim(pool: &PgPool, c: &Claim<'_>) -> Result<Vec<Job>, StoreError> {
    let mut jobs = claim_in(pool, c, true, c.request.limit).await?;
    let left = c.request.limit.saturating_sub(jobs.len() as u32);
    if left > 0 {
        jobs.extend(claim_in(pool, c, false, left).await?);
    }
    Ok(jobs)
}

async fn claim_in(
    pool: &PgPool,
    c: &Claim<'_>,
    reclaim: bool,
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    let r = c.request;
    let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new("UPDATE deliveries SET state = ");
    qb.push_bind(DeliveryState::Inflight.as_str())
        .push(", lease_until = ")
        .push_bind(r.lease_until)
        .push(", claimed_by = ")
        .push_bind(c.replica)
        .push(", updated_at = ")
        .push_bind(c.now)
        // A claim counts as an attempt, so work that keeps killing its replica runs out of
        // retries instead of running again after every restart.
        .push(", attempts = attempts + 1, round_attempts = round_attempts + 1")
        .push(" WHERE seq IN (SELECT d.seq FROM deliveries d WHERE d.namespace = ")
        .push_bind(&r.namespace)
        .push(" AND d.destination = ")
        .push_bind(&r.destination)
        .push(" AND ");
    if reclaim {
        push_reclaimable(&mut qb, c.now, c.stale_before);
    } else {
        push_pending_due(&mut qb, c.now);
    }
    qb.push(" ORDER BY d.due_at, d.seq LIMIT ")
        .push_bind(i64::from(limit))
        .push(" FOR UPDATE SKIP LOCKED)");
    qb.push(" RETURNING id, event_id, namespace, destination, route_kind, route, attempts, round_attempts, due_at, seq");
    let rows = qb.build().fetch_all(pool).await?;
    let mut jobs: Vec<(i64, i64, Job)> = rows
        .iter()
        .map(|r| Ok((r.try_get("due_at")?, r.try_get("seq")?, job_from(r)?)))
        .collect::<Result<_, StoreError>>()?;
    // RETURNING gives no order guarantee; workers start deliveries oldest first.
    jobs.sort_by_key(|(due, seq, _)| (*due, *seq));
    Ok(jobs.into_iter().map(|(_, _, j)| j).collect())
}

/// Destinations with deliveries due: pending and due, or claimed by a replica whose lease ran
/// out or whose heartbeat stopped.
pub(super) async fn due_destinations(
    pool: &PgPool,
    now: i64,
    stale_before: i64,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut qb: QueryBuilder<'_, Postgres> =
        QueryBuilder::new("SELECT DISTINCT d.namespace, d.destination FROM deliveries d WHERE ");
    push_pending_due(&mut qb, now);
    qb.push(" UNION SELECT DISTINCT d.namespace, d.destination FROM deliveries d WHERE ");
    push_reclaimable(&mut qb, now, stale_before);
    let rows = qb.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| Ok((r.try_get("namespace")?, r.try_get("destination")?)))
        .collect()
}

/// Replicas whose heartbeat is recent (at least 1: this one).
pub(super) async fn live_replicas(pool: &PgPool, stale_before: i64) -> Result<u32, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM replicas WHERE last_seen >= $1")
        .bind(stale_before)
        .fetch_one(pool)
        .await?;
    Ok(u32::try_from(n).unwrap_or(1).max(1))
}

/// Changes a circuit in one statement.
pub(super) async fn change_circuit(
    pool: &PgPool,
    namespace: &str,
    destination: &str,
    change: CircuitChange,
) -> Result<Option<CircuitRow>, StoreError> {
    let (sql, params) = circuit_sql::statement(change);
    let row = circuit_sql::query::<Postgres>(sql, namespace, destination, params)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(super::read::circuit_from).transpose()
}

/// Takes or renews `replica`'s term for `task`; whether it holds it.
pub(super) async fn lead(
    pool: &PgPool,
    task: &str,
    replica: &str,
    now: i64,
    term_ms: i64,
) -> Result<bool, StoreError> {
    let held = sqlx::query(
        "INSERT INTO leaders (task, holder, until) VALUES ($1, $2, $3)
         ON CONFLICT (task) DO UPDATE SET holder = excluded.holder, until = excluded.until
         WHERE leaders.holder = excluded.holder OR leaders.until < $4",
    )
    .bind(task)
    .bind(replica)
    .bind(now.saturating_add(term_ms))
    .bind(now)
    .execute(pool)
    .await?;
    Ok(held.rows_affected() > 0)
}

/// Records that `replica` is alive, and forgets replicas gone for an hour.
pub(super) async fn heartbeat(pool: &PgPool, replica: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO replicas (id, last_seen) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
    )
    .bind(replica)
    .bind(now)
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM replicas WHERE last_seen < $1")
        .bind(now - 3_600_000)
        .execute(pool)
        .await?;
    Ok(())
}

/// The statement that derives events' statuses from their deliveries, for `id = ANY($1)`.
pub(super) fn event_status_update() -> String {
    format!(
        "UPDATE events SET status = COALESCE((
             SELECT CASE
                 WHEN COUNT(*) = 0 THEN '{received}'
                 WHEN COUNT(*) FILTER (WHERE state IN ('{pending}', '{inflight}')) > 0 THEN '{processing}'
                 WHEN COUNT(*) FILTER (WHERE state IN ('{dead}', '{cancelled}')) > 0 THEN '{failed}'
                 ELSE '{delivered}' END
             FROM deliveries WHERE deliveries.event_id = events.id), '{received}')
         WHERE id = ANY($1)",
        received = EventStatus::Received,
        processing = EventStatus::Processing,
        failed = EventStatus::Failed,
        delivered = EventStatus::Delivered,
        pending = DeliveryState::Pending,
        inflight = DeliveryState::Inflight,
        dead = DeliveryState::Dead,
        cancelled = DeliveryState::Cancelled,
    )
}

pub(super) async fn manual_retry(
    pool: &PgPool,
    request: &ManualRetry,
    now: i64,
) -> Result<Option<DeliveryState>, StoreError> {
    let mut tx = pool.begin().await?;
    let event_id = match request {
        ManualRetry::Delivery { delivery_id } => {
            let row =
                sqlx::query("SELECT event_id, state FROM deliveries WHERE id = $1 FOR UPDATE")
                    .bind(delivery_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(row) = row else { return Ok(None) };
            let current: DeliveryState = row.try_get::<&str, _>("state")?.parse()?;
            if current == DeliveryState::Inflight {
                return Ok(Some(current));
            }
            sqlx::query(
                "UPDATE deliveries SET state = $1, due_at = $2, lease_until = NULL, claimed_by = NULL,
                     round_attempts = 0, updated_at = $2 WHERE id = $3",
            )
            .bind(DeliveryState::Pending.as_str())
            .bind(now)
            .bind(delivery_id)
            .execute(&mut *tx)
            .await?;
            row.try_get::<String, _>("event_id")?
        }
        ManualRetry::Event {
            event_id,
            deliveries,
        } => {
            let namespace: Option<String> =
                sqlx::query_scalar("SELECT namespace FROM events WHERE id = $1")
                    .bind(event_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(namespace) = namespace else {
                return Ok(None);
            };
            if !deliveries.is_empty() {
                let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
                    "INSERT INTO deliveries (id, event_id, namespace, destination, route_kind, route, state, due_at, created_at, updated_at) ",
                );
                qb.push_values(deliveries, |mut row, d| {
                    row.push_bind(&d.id)
                        .push_bind(event_id)
                        .push_bind(&namespace)
                        .push_bind(&d.destination)
                        .push_bind(d.route_kind.as_str())
                        .push_bind(&d.route)
                        .push_bind(DeliveryState::Pending.as_str())
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(now);
                });
                qb.build().execute(&mut *tx).await?;
            }
            event_id.clone()
        }
    };
    sqlx::query(&event_status_update())
        .bind(vec![event_id])
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(DeliveryState::Pending))
}

/// Deletes up to `limit` finished events received before `before` with their deliveries and
/// attempts, and expired dedup keys.
pub(super) async fn prune(
    pool: &PgPool,
    before: i64,
    limit: u32,
    now: i64,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM events e WHERE received_at < $1 AND NOT EXISTS (
             SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state IN ($2, $3))
         ORDER BY received_at LIMIT $4",
    )
    .bind(before)
    .bind(DeliveryState::Pending.as_str())
    .bind(DeliveryState::Inflight.as_str())
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    for table in ["attempts", "deliveries"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE event_id = ANY($1)"))
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM events WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM dedup_keys WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ids.len() as u64)
}
