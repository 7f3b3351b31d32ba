//! Storage: events, deliveries (the durable job queue), attempts, dedup keys and circuits.
//!
//! All writes go through one [`writer`] task that group-commits: requests queue up while a
//! transaction is being committed and the next transaction takes all of them, so ingest
//! throughput is bounded by the number of commits per second times the batch size, not by
//! one commit per event. Reads use a separate pool (SQLite WAL lets them run beside the
//! writer). SQL lives only in this module.

pub mod model;
pub mod read;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, SqlitePool};

pub use model::*;
pub use writer::Writer;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one this gateway can open.
    #[error("unsupported database URL {0:?}: use sqlite://PATH")]
    UnsupportedUrl(String),
    /// The database refused an operation.
    #[error("database operation failed")]
    Database(#[from] sqlx::Error),
    /// Migrations could not run.
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The writer task has stopped (the gateway is shutting down).
    #[error("the database writer has stopped")]
    WriterGone,
}

impl StoreError {
    /// A short label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            StoreError::UnsupportedUrl(_) => "config",
            StoreError::Database(_) => "database",
            StoreError::Migrate(_) => "migrate",
            StoreError::WriterGone => "shutdown",
        }
    }
}

/// An open database: the writer handle and the read pool.
#[derive(Clone)]
pub struct Store {
    /// Group-committing writer.
    pub writer: Writer,
    /// Pool for queries.
    pub read: SqlitePool,
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

/// Opens (creating if needed) the database at `url`, runs migrations, returns inflight
/// deliveries of a previous run to the queue, and starts the writer task.
pub async fn open(url: &str, sync: SqliteSync) -> Result<Store, StoreError> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    };
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
    let mut write_conn = options.clone().connect().await?;
    sqlx::migrate!("./migrations").run(&mut write_conn).await?;
    writer::recover(&mut write_conn).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options.read_only(true))
        .await?;
    Ok(Store {
        writer: Writer::start(write_conn).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?,
        read,
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
