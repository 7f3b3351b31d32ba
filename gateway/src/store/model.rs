//! Rows as the rest of the gateway sees them.

use bytes::Bytes;
use serde::Serialize;

/// Delivery states in the `deliveries` table.
pub mod state {
    /// Waiting for its due time (first attempt or a scheduled retry).
    pub const PENDING: &str = "pending";
    /// Claimed by a worker until its lease ends.
    pub const INFLIGHT: &str = "inflight";
    /// Delivered.
    pub const SUCCEEDED: &str = "succeeded";
    /// Retries exhausted: dead-lettered, kept and retryable.
    pub const DEAD: &str = "dead";
    /// Dropped because its route no longer exists; retryable.
    pub const CANCELLED: &str = "cancelled";
}

/// `kind` of a Source's row in the `counters` table.
pub const COUNTER_SOURCE: &str = "source";
/// `kind` of a Destination's row in the `counters` table.
pub const COUNTER_DESTINATION: &str = "destination";

/// Running totals of one Source or Destination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events received (Sources).
    pub received: i64,
    /// Attempts that succeeded (Destinations).
    pub succeeded: i64,
    /// Attempts that failed (Destinations).
    pub failed: i64,
    /// Deliveries dead-lettered (Destinations).
    pub dead_lettered: i64,
    /// Latest event or attempt, unix ms.
    pub last_at: Option<i64>,
}

/// Event statuses.
pub mod event_status {
    /// Stored; no route matched.
    pub const RECEIVED: &str = "received";
    /// At least one delivery is still pending.
    pub const PROCESSING: &str = "processing";
    /// Every delivery succeeded.
    pub const DELIVERED: &str = "delivered";
    /// At least one delivery was dead-lettered or cancelled.
    pub const FAILED: &str = "failed";
}

/// An event to store.
#[derive(Clone, Debug)]
pub struct NewEvent {
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
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Bytes,
    /// Content-Type header.
    pub content_type: Option<String>,
    /// Client address.
    pub source_ip: String,
    /// Receive time, unix ms.
    pub received_at: i64,
    /// Schema errors when the Source validates with `warn`.
    pub validation_errors: Option<serde_json::Value>,
}

/// Which route produced a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// A Connection.
    Connection,
    /// A Topic subscription (`route` is `topic#index`).
    Subscription,
}

impl RouteKind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Connection => "connection",
            RouteKind::Subscription => "subscription",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> RouteKind {
        if text == "subscription" {
            RouteKind::Subscription
        } else {
            RouteKind::Connection
        }
    }
}

/// A delivery to create with an event.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// `dlv_` id.
    pub id: String,
    /// Destination name (same namespace as the event).
    pub destination: String,
    /// Route kind.
    pub route_kind: RouteKind,
    /// Route name.
    pub route: String,
    /// When set, the delivery is created already claimed until this time (unix ms) and
    /// handed straight to a worker; otherwise it waits in the queue.
    pub lease_until: Option<i64>,
}

/// A dedup key to claim with an event.
#[derive(Clone, Debug)]
pub struct DedupClaim {
    /// The key (already hashed or extracted).
    pub key: String,
    /// When the key is forgotten, unix ms.
    pub expires_at: i64,
}

/// What happened to an insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The event and its deliveries are committed.
    Stored,
    /// The dedup key was taken by this earlier event; nothing was stored.
    Duplicate {
        /// The earlier event.
        event_id: String,
    },
}

/// A claimed delivery.
#[derive(Clone, Debug)]
pub struct Job {
    /// Delivery id.
    pub delivery_id: String,
    /// Event id.
    pub event_id: String,
    /// Namespace of event, route and destination.
    pub namespace: String,
    /// Destination name.
    pub destination: String,
    /// Route kind.
    pub route_kind: RouteKind,
    /// Route name.
    pub route: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts made since the last manual retry (drives the backoff).
    pub round_attempts: u32,
}

/// One delivery attempt's record.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptRecord {
    /// `da_` id.
    pub id: String,
    /// Attempt number, 1-based over the delivery's life.
    pub attempt_number: u32,
    /// `success` or `failed`.
    pub status: &'static str,
    /// Response status, when a response came.
    pub status_code: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// Headers sent (secret ones redacted).
    pub request_headers: Vec<(String, String)>,
    /// Headers received.
    pub response_headers: Option<Vec<(String, String)>>,
    /// Start of the response body.
    pub response_body: Option<String>,
    /// Duration of the attempt.
    pub latency_ms: i64,
    /// When it was made, unix ms.
    pub attempted_at: i64,
    /// When the next retry is due, if one is scheduled.
    pub next_retry_at: Option<i64>,
    /// Whether this attempt dead-lettered the delivery.
    pub is_dlq: bool,
}

/// The new state of a delivery after a worker is done with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Succeeded,
    /// Failed; try again at this time (unix ms).
    Retry {
        /// Due time.
        due_at: i64,
    },
    /// Failed for the last time.
    Dead,
    /// Not attempted (circuit open, shutting down): back to the queue in its old place.
    Release,
    /// The route is gone; not attempted.
    Cancelled,
}

/// A finished piece of delivery work.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The delivery.
    pub job: Job,
    /// The attempt made, if one was.
    pub attempt: Option<AttemptRecord>,
    /// New state.
    pub outcome: Outcome,
    /// Error text kept on the delivery.
    pub error: Option<String>,
}

/// Persisted circuit state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitRow {
    /// Namespace.
    pub namespace: String,
    /// Destination.
    pub destination: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// When it opened, unix ms.
    pub opened_at: Option<i64>,
    /// Last failure, unix ms.
    pub last_failure_at: Option<i64>,
}
