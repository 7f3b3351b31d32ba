//! Storage: events, deliveries (the durable job queue), attempts, dedup keys, circuits and
//! running totals, behind one interface, [`Store`], with a module per backend. Nothing
//! outside this module holds a database pool or writes SQL.
//!
//! Every backend keeps the same promises: an insert returns only once the event, its
//! deliveries and its dedup key are durable; a claim leases deliveries so each goes to one
//! worker until its lease runs out; completions recorded after a lease was lost (the delivery
//! was retried by hand meanwhile) change nothing.

mod circuit_sql;
pub mod model;
pub mod postgres;
mod rows;
pub mod sqlite;
mod unwritten;

use std::sync::Arc;

use async_trait::async_trait;

pub use model::*;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one this gateway can open.
    #[error("unsupported database URL (scheme {scheme:?}): use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl {
        /// The URL's scheme, the only part shown (the rest may hold a password).
        scheme: String,
    },
    /// The database refused an operation.
    #[error("database operation failed")]
    Database(#[from] sqlx::Error),
    /// SQLite refused an operation of the writer.
    #[error("database operation failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A write failed; the cause, as the database gave it.
    #[error("database write failed: {0}")]
    WriteFailed(String),
    /// The store could not start a thread or open a file.
    #[error("database I/O failed")]
    Io(#[source] std::io::Error),
    /// Migrations could not run.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not one its type knows.
    #[error(transparent)]
    Unknown(#[from] UnknownValue),
    /// The writer task has stopped (the gateway is shutting down).
    #[error("the database writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// A short label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            StoreError::UnsupportedUrl { .. } => "config",
            StoreError::Database(_) | StoreError::Sqlite(_) | StoreError::WriteFailed(_) => {
                "database"
            }
            StoreError::Io(_) => "io",
            StoreError::Migrate(_) => "migrate",
            StoreError::Unknown(_) => "corrupt",
            StoreError::WriterGone => "shutdown",
        }
    }
}

/// Whether writes go through: set by every commit, read by readiness and metrics.
#[derive(Debug, Default)]
pub struct Health {
    failing: std::sync::atomic::AtomicBool,
    failures: std::sync::atomic::AtomicU64,
}

impl Health {
    /// A commit went through.
    pub fn succeeded(&self) {
        self.failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// A commit failed.
    pub fn failed(&self) {
        self.failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the last commit failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits that failed since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// An error and its causes in one line, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The gateway's storage. Cheap to share: `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores an event with its deliveries (and claims its dedup key) in one transaction.
    /// Returns once the transaction is durable.
    async fn insert(
        &self,
        event: SharedEvent,
        deliveries: Vec<NewDelivery>,
        dedup: Option<DedupClaim>,
    ) -> Result<InsertOutcome, StoreError>;

    /// Records finished delivery work. May return before the write is durable: if the process
    /// dies first, the deliveries' leases run out and they are attempted again.
    async fn complete(&self, completions: Vec<Completion>) -> Result<(), StoreError>;

    /// Claims up to `request.limit` due deliveries of one destination, oldest first, leasing
    /// them until `request.lease_until`. Due: pending with their due time passed, or claimed
    /// by a holder whose lease ran out (or, with replicas, whose heartbeat stopped).
    async fn claim(&self, request: ClaimRequest) -> Result<Vec<Job>, StoreError>;

    /// Destinations (namespace, name) with deliveries due now.
    async fn due_destinations(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Gateway replicas sharing this store and alive (1 for an embedded store).
    async fn live_replicas(&self) -> Result<u32, StoreError>;

    /// Retries by hand. `None` when the delivery or event does not exist, else the
    /// delivery's state afterwards (`Inflight` when it is being attempted and was left alone).
    async fn retry(&self, request: ManualRetry) -> Result<Option<DeliveryState>, StoreError>;

    /// Changes a destination's circuit. Returns the circuit after the change, or `None`
    /// when the change did not apply (a probe someone else took, nothing to release).
    async fn change_circuit(
        &self,
        namespace: &str,
        destination: &str,
        change: CircuitChange,
    ) -> Result<Option<CircuitRow>, StoreError>;

    /// Deletes up to `limit` finished events received before `before` (unix ms) with their
    /// deliveries and attempts, and expired dedup keys. Returns the events deleted.
    async fn prune(&self, before: i64, limit: u32) -> Result<u64, StoreError>;

    /// Whether this replica runs the once-per-gateway `task` (retention) now. The first to
    /// ask takes a term of `term_ms` and keeps it as long as it asks again before the end;
    /// another takes over after that. An embedded store has one replica: always.
    async fn lead(&self, task: &str, term_ms: i64) -> Result<bool, StoreError>;

    /// Waits until every write queued so far is committed. Used at shutdown.
    async fn flush(&self);

    /// Whether the database answers and, after a failed commit, takes writes again (it
    /// tries one).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether writes go through.
    fn health(&self) -> &Health;

    /// One event by id.
    async fn event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// Events matching `q`, newest first, at most `q.limit + 1` (the extra row tells whether
    /// there are more). Bodies and headers are not read. Newest is by receipt time; SQLite
    /// lists by `seq`, the number each event's id got as it was accepted, which differs from
    /// it only among events accepted moments apart, or where the clock was set back.
    async fn events(&self, q: &EventQuery) -> Result<Vec<EventListing>, StoreError>;

    /// Events by id, in no particular order; missing ids are left out.
    async fn events_by_ids(&self, ids: &[&str]) -> Result<Vec<StoredEvent>, StoreError>;

    /// Attempts matching `q`, newest first, at most `q.limit + 1`. Headers and response
    /// bodies are not read.
    async fn attempts(&self, q: &AttemptQuery) -> Result<Vec<AttemptListing>, StoreError>;

    /// Every attempt of one event, oldest first.
    async fn attempts_of_event(&self, event_id: &str) -> Result<Vec<StoredAttempt>, StoreError>;

    /// One attempt by id.
    async fn attempt(&self, id: &str) -> Result<Option<StoredAttempt>, StoreError>;

    /// Every persisted circuit.
    async fn circuits(&self) -> Result<Vec<CircuitRow>, StoreError>;

    /// Waiting deliveries per destination, for the queue depth gauge.
    async fn queue_depths(&self) -> Result<Vec<QueueDepth>, StoreError>;

    /// Running totals of every Source and Destination that has any.
    async fn counters(&self) -> Result<Vec<(CounterKey, Counters)>, StoreError>;
}

/// A store shared by every part of the gateway.
pub type SharedStore = Arc<dyn Store>;

/// Backend settings that only some backends use.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// When a SQLite commit counts as done.
    pub sqlite_sync: sqlite::SqliteSync,
}

/// Opens the database at `url` (creating a SQLite file if needed, connecting to
/// PostgreSQL), runs migrations and returns the store.
pub async fn open(url: &str, options: Options) -> Result<SharedStore, StoreError> {
    match scheme(url) {
        "sqlite" => Ok(Arc::new(
            sqlite::SqliteStore::open(url, options.sqlite_sync).await?,
        )),
        "postgres" => Ok(Arc::new(postgres::PgStore::open(url).await?)),
        other => Err(StoreError::UnsupportedUrl {
            scheme: other.to_owned(),
        }),
    }
}

/// The scheme of a database URL, lowercase (`postgresql` counts as `postgres`); empty when
/// the text has none. Only the scheme is ever shown: the rest may hold a password.
fn scheme(url: &str) -> &str {
    let Some((s, _)) = url.split_once("://") else {
        // `sqlite:PATH` is the one form without `//`.
        return if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            ""
        };
    };
    if s.eq_ignore_ascii_case("sqlite") {
        "sqlite"
    } else if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") {
        "postgres"
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+') {
        s
    } else {
        ""
    }
}

/// Headers as stored: a JSON list of `[name, value]` pairs (order and repeats kept).
fn headers_json(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".to_owned())
}

/// Headers from their stored form; unreadable text reads as none.
fn headers_from(text: &str) -> Vec<(String, String)> {
    serde_json::from_str(text).unwrap_or_default()
}

/// An attempt's transport detail from its stored form.
fn detail_from(text: Option<&str>) -> Result<AttemptDetail, StoreError> {
    match text {
        None => Ok(AttemptDetail::None),
        Some(t) => serde_json::from_str(t).map_err(|_| {
            StoreError::Unknown(UnknownValue {
                kind: "AttemptDetail",
                value: t.chars().take(80).collect(),
            })
        }),
    }
}

/// An attempt's transport detail in its stored form (`None` for no detail).
fn detail_json(detail: &AttemptDetail) -> Option<String> {
    match detail {
        AttemptDetail::None => None,
        d => serde_json::to_string(d).ok(),
    }
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised_without_exposing_the_rest() {
        assert_eq!(scheme("sqlite://x.db"), "sqlite");
        assert_eq!(scheme("postgres://u:p@h/db"), "postgres");
        assert_eq!(scheme("postgresql://u:p@h/db"), "postgres");
        assert_eq!(scheme("mysql://u:secret@h/db"), "mysql");
        assert_eq!(scheme("u:secret@h/db"), "");
        let e = StoreError::UnsupportedUrl {
            scheme: scheme("mysql://u:secret@h/db").to_owned(),
        };
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
