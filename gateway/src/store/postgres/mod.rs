//! The PostgreSQL backend: several gateway replicas share one database.
//!
//! Ingest inserts and delivery completions go through a [`writer`] task that commits them in
//! groups (one transaction for many events). Claims, manual retries, pruning and reads are
//! transactions of their own on the pool, concurrent with the writer and with other replicas.
//! A claim takes due deliveries with `FOR UPDATE SKIP LOCKED`, so each goes to one replica,
//! and records which replica holds it. Every replica writes a heartbeat; the claims of a
//! replica whose heartbeat stopped (it was killed) are taken over at once instead of when
//! their lease runs out. Dedup keys are claimed with an upsert in the event's transaction,
//! so a payload sent to two replicas at once is stored once.

mod queue;
mod read;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tracing::warn;

use super::model::{
    AttemptListing, AttemptQuery, CircuitChange, CircuitRow, ClaimRequest, Completion, CounterKey,
    Counters, DedupClaim, DeliveryState, EventListing, EventQuery, InsertOutcome, Job, ManualRetry,
    NewDelivery, QueueDepth, SharedEvent, StoredAttempt, StoredEvent,
};
use super::{error_chain, Health, Store, StoreError};
use crate::clock::now_ms;
use writer::Writer;

/// How often a replica writes its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica whose heartbeat is older than this is gone: its claims are taken over.
const REPLICA_STALE_MS: i64 = 10_000;
/// Connections per replica: the writer, claims, API reads and the heartbeat.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a connection (or a new one) before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// An open PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
    writer: Writer,
    /// This replica's name in `replicas` and `deliveries.claimed_by`.
    replica: String,
}

impl PgStore {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`; without a password in
    /// the URL, `PGPASSWORD`), runs migrations, starts the writer and the heartbeat.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?
            .application_name("hookstream-gateway")
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let replica = crate::ids::replica();
        queue::heartbeat(&pool, &replica, now_ms()).await?;
        tokio::spawn(beat(pool.clone(), replica.clone()));
        Ok(PgStore {
            writer: Writer::start(pool.clone(), replica.clone()),
            pool,
            replica,
        })
    }
}

/// Writes this replica's heartbeat until the process ends. A missed beat (the database is
/// down) is logged once and retried at the next.
async fn beat(pool: PgPool, replica: String) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match queue::heartbeat(&pool, &replica, now_ms()).await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn!(error = %error_chain(&e), "cannot write the replica heartbeat");
            }
            Err(_) => {}
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn insert(
        &self,
        event: SharedEvent,
        deliveries: Vec<NewDelivery>,
        dedup: Option<DedupClaim>,
    ) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(event, deliveries, dedup).await
    }

    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError> {
        self.writer.complete(completions).await
    }

    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Job>, StoreError> {
        let now = now_ms();
        let claim = queue::Claim {
            request: &request,
            replica: &self.replica,
            now,
            stale_before: now - REPLICA_STALE_MS,
        };
        queue::claim(&self.pool, &claim).await
    }

    async fn due_destinations(&self) -> Result<Vec<(String, String)>, StoreError> {
        let now = now_ms();
        queue::due_destinations(&self.pool, now, now - REPLICA_STALE_MS).await
    }

    async fn live_replicas(&self) -> Result<u32, StoreError> {
        queue::live_replicas(&self.pool, now_ms() - REPLICA_STALE_MS).await
    }

    async fn retry(&self, request: ManualRetry) -> Result<Option<DeliveryState>, StoreError> {
        queue::manual_retry(&self.pool, &request, now_ms()).await
    }

    async fn change_circuit(
        &self,
        namespace: &str,
        destination: &str,
        change: CircuitChange,
    ) -> Result<Option<CircuitRow>, StoreError> {
        queue::change_circuit(&self.pool, namespace, destination, change).await
    }

    async fn prune(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        queue::prune(&self.pool, before, limit, now_ms()).await
    }

    async fn lead(&self, task: &str, term_ms: i64) -> Result<bool, StoreError> {
        queue::lead(&self.pool, task, &self.replica, now_ms(), term_ms).await
    }

    async fn flush(&self) {
        self.writer.flush().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        if self.writer.health().is_failing() {
            // A write shows whether commits go through again.
            queue::heartbeat(&self.pool, &self.replica, now_ms()).await?;
            self.writer.health().succeeded();
        }
        Ok(())
    }

    fn health(&self) -> &Health {
        self.writer.health()
    }

    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        read::event(&self.pool, id).await
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<EventListing>, StoreError> {
        read::events(&self.pool, q).await
    }

    async fn events_by_ids(&self, ids: &[&str]) -> Result<Vec<StoredEvent>, StoreError> {
        read::events_by_ids(&self.pool, ids).await
    }

    async fn attempts(&self, q: &AttemptQuery) -> Result<Vec<AttemptListing>, StoreError> {
        read::attempts(&self.pool, q).await
    }

    async fn attempts_of_event(&self, event_id: &str) -> Result<Vec<StoredAttempt>, StoreError> {
        read::attempts_of_event(&self.pool, event_id).await
    }

    async fn attempt(&self, id: &str) -> Result<Option<StoredAttempt>, StoreError> {
        read::attempt(&self.pool, id).await
    }

    async fn circuits(&self) -> Result<Vec<CircuitRow>, StoreError> {
        read::circuits(&self.pool).await
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        read::queue_depths(&self.pool).await
    }

    async fn counters(&self) -> Result<Vec<(CounterKey, Counters)>, StoreError> {
        read::counters(&self.pool).await
    }
}
