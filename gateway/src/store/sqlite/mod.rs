//! The SQLite backend, the embedded default for one gateway replica.
//!
//! All writes go through one [`writer`] task that group-commits: requests queue up while a
//! transaction is being committed and the next transaction takes all of them, so ingest
//! throughput is bounded by the number of commits per second times the batch size, not by
//! one commit per event. Reads use a separate pool (WAL lets them run beside the writer).

mod read;
mod writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqlitePool};

use super::model::{
    AttemptListing, AttemptQuery, CircuitChange, CircuitRow, ClaimRequest, Completion, CounterKey,
    Counters, DedupClaim, DeliveryState, EventListing, EventQuery, InsertOutcome, Job, ManualRetry,
    NewDelivery, QueueDepth, SharedEvent, StoredAttempt, StoredEvent,
};
use super::{Health, Store, StoreError};
use crate::clock::now_ms;
use writer::Writer;

/// Events are stored under the sequence number their id carries (`ids::event_seq`), so one
/// is found by its row number. Those stored before ids carried it (before migration 0006)
/// have a `seq` below this and are found through a partial index of their ids.
const LEGACY_SEQ_LIMIT: i64 = 1 << 32;

/// The condition that picks the event whose id is parameter `?{id}`, with the sequence
/// number that id carries as parameter `?{seq}` (NULL if it carries none).
fn event_with_id(id: u8, seq: u8) -> String {
    format!(
        "id = ?{id} AND seq IN (?{seq}, (SELECT seq FROM events WHERE id = ?{id} AND seq < {LEGACY_SEQ_LIMIT}))"
    )
}

/// When a SQLite commit counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SqliteSync {
    /// The commit is fsynced before anyone hears of it: it survives power loss.
    Full,
    /// The commit is in the operating system's cache: it survives the gateway being killed
    /// (even with SIGKILL), not a crash of the machine itself. Faster on slow disks.
    Normal,
}

/// An open SQLite database: the writer handle and the read pool.
pub struct SqliteStore {
    writer: Writer,
    read: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`), runs migrations,
    /// returns deliveries that a previous run had claimed to the queue (one replica per file,
    /// so nobody else holds them), and starts the writer.
    pub async fn open(url: &str, sync: SqliteSync) -> Result<SqliteStore, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match sync {
                SqliteSync::Full => SqliteSynchronous::Full,
                SqliteSync::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .pragma("wal_autocheckpoint", "4000")
            .log_statements(tracing::log::LevelFilter::Trace);
        let mut migrate_conn = options.clone().connect().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut migrate_conn)
            .await?;
        migrate_conn.close().await?;
        let writer = Writer::start(options.get_filename().to_path_buf(), sync)?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, read })
    }
}

#[async_trait]
impl Store for SqliteStore {
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
        self.writer.claim(request).await
    }

    async fn due_destinations(&self) -> Result<Vec<(String, String)>, StoreError> {
        read::due_destinations(&self.read, now_ms()).await
    }

    async fn live_replicas(&self) -> Result<u32, StoreError> {
        Ok(1)
    }

    async fn retry(&self, request: ManualRetry) -> Result<Option<DeliveryState>, StoreError> {
        self.writer.retry(request).await
    }

    async fn change_circuit(
        &self,
        namespace: &str,
        destination: &str,
        change: CircuitChange,
    ) -> Result<Option<CircuitRow>, StoreError> {
        self.writer
            .change_circuit(namespace, destination, change)
            .await
    }

    async fn prune(&self, before: i64, limit: u32) -> Result<u64, StoreError> {
        self.writer.prune(before, limit).await
    }

    async fn lead(&self, _task: &str, _term_ms: i64) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn flush(&self) {
        self.writer.flush().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        if self.writer.health().is_failing() {
            self.writer.probe().await?;
        }
        Ok(())
    }

    fn health(&self) -> &Health {
        self.writer.health()
    }

    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        read::event(&self.read, id).await
    }

    async fn events(&self, q: &EventQuery) -> Result<Vec<EventListing>, StoreError> {
        read::events(&self.read, q).await
    }

    async fn events_by_ids(&self, ids: &[&str]) -> Result<Vec<StoredEvent>, StoreError> {
        read::events_by_ids(&self.read, ids).await
    }

    async fn attempts(&self, q: &AttemptQuery) -> Result<Vec<AttemptListing>, StoreError> {
        read::attempts(&self.read, q).await
    }

    async fn attempts_of_event(&self, event_id: &str) -> Result<Vec<StoredAttempt>, StoreError> {
        read::attempts_of_event(&self.read, event_id).await
    }

    async fn attempt(&self, id: &str) -> Result<Option<StoredAttempt>, StoreError> {
        read::attempt(&self.read, id).await
    }

    async fn circuits(&self) -> Result<Vec<CircuitRow>, StoreError> {
        read::circuits(&self.read).await
    }

    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError> {
        read::queue_depths(&self.read).await
    }

    async fn counters(&self) -> Result<Vec<(CounterKey, Counters)>, StoreError> {
        read::counters(&self.read).await
    }
}
