//! What the store keeps, as the rest of the gateway sees it: the states (enums that map to
//! the database and refuse values they do not know), the rows written and read, and the
//! requests that change them. Backend-neutral: no SQL here.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A value read from the database that is not one of its type's values: the database was
/// written by an incompatible version, or by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} in the database")]
pub struct UnknownValue {
    /// The type that was read.
    pub kind: &'static str,
    /// The text found.
    pub value: String,
}

/// A state with a fixed set of values, stored as text.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored (and API) form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;

            fn from_str(text: &str) -> Result<Self, UnknownValue> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { kind: stringify!($name), value: text.to_owned() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// Where a delivery (one event to one destination) stands.
    DeliveryState {
        /// Waiting for its due time (first attempt or a scheduled retry).
        Pending = "pending",
        /// Claimed by a worker until its lease ends.
        Inflight = "inflight",
        /// Delivered.
        Succeeded = "succeeded",
        /// Retries exhausted: dead-lettered, kept and retryable.
        Dead = "dead",
        /// Dropped because its route no longer exists; retryable.
        Cancelled = "cancelled",
    }
}

stored_enum! {
    /// An event's status, derived from its deliveries.
    EventStatus {
        /// Stored; no route matched.
        Received = "received",
        /// At least one delivery is still pending.
        Processing = "processing",
        /// Every delivery succeeded.
        Delivered = "delivered",
        /// At least one delivery was dead-lettered or cancelled.
        Failed = "failed",
    }
}

stored_enum! {
    /// How one attempt went.
    AttemptOutcome {
        /// The destination took the delivery.
        Success = "success",
        /// It did not (or the payload could not be made).
        Failed = "failed",
    }
}

stored_enum! {
    /// A destination's circuit breaker.
    CircuitState {
        /// Deliveries flow.
        Closed = "closed",
        /// Deliveries wait.
        Open = "open",
        /// One probe is out.
        HalfOpen = "half_open",
    }
}

stored_enum! {
    /// Which kind of route produced a delivery.
    RouteKind {
        /// A Connection.
        Connection = "connection",
        /// A Topic subscription (the route is named `topic#index`).
        Subscription = "subscription",
    }
}

stored_enum! {
    /// The kind of object a row of running totals counts for.
    ObjectKind {
        /// A Source: events received.
        Source = "source",
        /// A Destination: attempts and dead letters.
        Destination = "destination",
    }
}

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

/// Whose totals a [`Counters`] row holds: kind, namespace, name.
pub type CounterKey = (ObjectKind, String, String);

/// An event to store, as received.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// `evt_` id.
    pub id: String,
    /// Source namespace.
    pub namespace: String,
    /// Source name (`topic:NAME` for a publish).
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

/// What a destination's transport returned for one attempt, beside what every attempt has.
/// Stored as JSON tagged by `type`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttemptDetail {
    /// Nothing was sent (the payload could not be made) or the transport returns nothing.
    #[default]
    None,
    /// An HTTP response.
    Http {
        /// Response status, when a response came.
        status_code: Option<u16>,
        /// Response headers.
        #[serde(default)]
        response_headers: Vec<(String, String)>,
        /// Start of the response body.
        response_body: Option<String>,
        /// The body was longer than what was kept (the first few KiB).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        response_body_truncated: bool,
    },
    /// A message sent to WebSocket subscribers.
    Websocket {
        /// The channel.
        channel: String,
        /// Clients whose connection took the message.
        clients: u32,
    },
    /// A message SQS took.
    Sqs {
        /// `MessageId`.
        message_id: String,
        /// `SequenceNumber`, for FIFO queues.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
    },
    /// An object S3 stored.
    S3 {
        /// Bucket.
        bucket: String,
        /// Object key.
        key: String,
        /// `ETag`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etag: Option<String>,
        /// Version id, in versioned buckets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version_id: Option<String>,
    },
    /// An entry EventBridge took (or refused, with its error code in the attempt's error).
    Eventbridge {
        /// `EventId` of the entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entry_id: Option<String>,
        /// `ErrorCode` of a failed entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_code: Option<String>,
    },
    /// A message Pub/Sub took.
    Pubsub {
        /// Server-assigned message id.
        message_id: String,
    },
    /// A record the Kafka brokers acknowledged.
    Kafka {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
    /// A message RabbitMQ confirmed.
    Rabbitmq {
        /// Exchange.
        exchange: String,
        /// Routing key used.
        routing_key: String,
    },
}

impl AttemptDetail {
    /// The HTTP status, for transports that have one.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            AttemptDetail::Http { status_code, .. } => *status_code,
            _ => None,
        }
    }
}

/// One delivery attempt's record.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    /// `da_` id.
    pub id: String,
    /// Attempt number, 1-based over the delivery's life.
    pub attempt_number: u32,
    /// Success or failure.
    pub outcome: AttemptOutcome,
    /// Why it failed.
    pub error: Option<String>,
    /// Headers (or message attributes) sent, secret ones redacted.
    pub request_headers: Vec<(String, String)>,
    /// What the transport returned.
    pub detail: AttemptDetail,
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

impl Outcome {
    /// The delivery's state after this outcome, and its new due time when that changes.
    pub fn state(&self) -> (DeliveryState, Option<i64>) {
        match *self {
            Outcome::Succeeded => (DeliveryState::Succeeded, None),
            Outcome::Retry { due_at } => (DeliveryState::Pending, Some(due_at)),
            Outcome::Dead => (DeliveryState::Dead, None),
            Outcome::Release => (DeliveryState::Pending, None),
            Outcome::Cancelled => (DeliveryState::Cancelled, None),
        }
    }
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
    /// State.
    pub state: CircuitState,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// When it opened, unix ms.
    pub opened_at: Option<i64>,
    /// Last failure, unix ms.
    pub last_failure_at: Option<i64>,
    /// When the half-open probe went out, unix ms.
    pub probe_at: Option<i64>,
}

/// A change of a destination's circuit, made atomically in the store so that every replica
/// sharing it sees one circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitChange {
    /// An attempt failed: one more failure in a row; the circuit opens at the threshold, or
    /// at once when the attempt was the probe.
    Failure {
        /// Failures in a row that open the circuit.
        threshold: u32,
        /// The attempt was the half-open probe.
        was_probe: bool,
        /// When, unix ms.
        now: i64,
    },
    /// Closed: a success after failures, a successful probe, or a reset.
    Close,
    /// Half-open for one probe, when the circuit is open and cooled down, or a probe went
    /// out longer than `probe_timeout_ms` ago (its replica died). Only one caller wins.
    TryProbe {
        /// The destination's cooldown.
        cooldown_ms: i64,
        /// How long a probe may take.
        probe_timeout_ms: i64,
        /// Now, unix ms.
        now: i64,
    },
    /// The probe was not attempted after all: open again, ready for another probe.
    ReleaseProbe,
}

/// A claim of one destination's due deliveries.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// Destination namespace.
    pub namespace: String,
    /// Destination name.
    pub destination: String,
    /// Most deliveries to take (the destination's free slots).
    pub limit: u32,
    /// Lease end, unix ms.
    pub lease_until: i64,
}

/// A request to retry deliveries by hand.
#[derive(Clone, Debug)]
pub enum ManualRetry {
    /// Put one delivery back in the queue, due now, with a fresh retry budget.
    Delivery {
        /// The delivery id.
        delivery_id: String,
    },
    /// Create new deliveries for an event (re-run through the routes).
    Event {
        /// The event.
        event_id: String,
        /// New deliveries.
        deliveries: Vec<NewDelivery>,
    },
}

/// A stored event.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Position in the log (cursor key).
    pub seq: i64,
    /// The event as received.
    pub event: NewEvent,
    /// Status derived from its deliveries.
    pub status: EventStatus,
}

/// A stored attempt.
#[derive(Clone, Debug)]
pub struct StoredAttempt {
    /// Position (cursor key).
    pub seq: i64,
    /// Delivery it belongs to.
    pub delivery_id: String,
    /// Event.
    pub event_id: String,
    /// Namespace.
    pub namespace: String,
    /// Destination name.
    pub destination: String,
    /// Route kind.
    pub route_kind: RouteKind,
    /// Route name.
    pub route: String,
    /// The attempt.
    pub record: AttemptRecord,
}

/// An event as lists show it: what the `events` table holds beside the request itself
/// (no body, no headers).
#[derive(Clone, Debug)]
pub struct EventListing {
    /// Position in the log (cursor key).
    pub seq: i64,
    /// `evt_` id.
    pub id: String,
    /// Source namespace.
    pub namespace: String,
    /// Source name (`topic:NAME` for a publish).
    pub source: String,
    /// HTTP method.
    pub method: String,
    /// Content-Type header.
    pub content_type: Option<String>,
    /// Receive time, unix ms.
    pub received_at: i64,
    /// Status derived from its deliveries.
    pub status: EventStatus,
}

impl StoredEvent {
    /// The event as lists show it.
    pub fn listing(&self) -> EventListing {
        let e = &self.event;
        EventListing {
            seq: self.seq,
            id: e.id.clone(),
            namespace: e.namespace.clone(),
            source: e.source.clone(),
            method: e.method.clone(),
            content_type: e.content_type.clone(),
            received_at: e.received_at,
            status: self.status,
        }
    }
}

/// An attempt as lists show it: no request headers, no response headers or body.
#[derive(Clone, Debug)]
pub struct AttemptListing {
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
    pub route_kind: RouteKind,
    /// Route name.
    pub route: String,
    /// Attempt number, 1-based over the delivery's life.
    pub attempt_number: u32,
    /// Success or failure.
    pub outcome: AttemptOutcome,
    /// Why it failed.
    pub error: Option<String>,
    /// The HTTP status, for transports that have one.
    pub status_code: Option<u16>,
    /// Duration of the attempt.
    pub latency_ms: i64,
    /// When it was made, unix ms.
    pub attempted_at: i64,
    /// When the next retry is due, if one is scheduled.
    pub next_retry_at: Option<i64>,
    /// Whether this attempt dead-lettered the delivery.
    pub is_dlq: bool,
}

impl StoredAttempt {
    /// The attempt as lists show it.
    pub fn listing(&self) -> AttemptListing {
        let r = &self.record;
        AttemptListing {
            seq: self.seq,
            id: r.id.clone(),
            delivery_id: self.delivery_id.clone(),
            event_id: self.event_id.clone(),
            namespace: self.namespace.clone(),
            destination: self.destination.clone(),
            route_kind: self.route_kind,
            route: self.route.clone(),
            attempt_number: r.attempt_number,
            outcome: r.outcome,
            error: r.error.clone(),
            status_code: r.detail.status_code(),
            latency_ms: r.latency_ms,
            attempted_at: r.attempted_at,
            next_retry_at: r.next_retry_at,
            is_dlq: r.is_dlq,
        }
    }
}

/// Most events one search looks at: the newest that match the search's other filters, from
/// its cursor on. A search costs at most this many rows, whatever the table holds.
pub const SEARCH_WINDOW: u32 = 500;

/// How much of each body a search looks at, from its start.
pub const SEARCH_BODY_BYTES: u32 = 16 * 1024;

/// Filters for listing events; newest first by receive time.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Only these namespaces (the caller's scope); `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
    /// Source namespace.
    pub namespace: Option<String>,
    /// Source name.
    pub source: Option<String>,
    /// Status.
    pub status: Option<EventStatus>,
    /// Received at or after, unix ms.
    pub after: Option<i64>,
    /// Received before, unix ms.
    pub before: Option<i64>,
    /// Event id prefix or body text, looked for in at most [`SEARCH_WINDOW`] events (the
    /// newest matching the other filters, from the cursor on) and in the first
    /// [`SEARCH_BODY_BYTES`] of each body.
    pub search: Option<String>,
    /// Only events after this (received_at, seq) position in newest-first order (the
    /// cursor; SQLite needs only its `seq`).
    pub after_position: Option<(i64, i64)>,
    /// Page size.
    pub limit: u32,
}

/// Filters for listing attempts; newest first by attempt time.
#[derive(Clone, Debug, Default)]
pub struct AttemptQuery {
    /// Only these namespaces (the caller's scope); `None`: every namespace.
    pub namespaces: Option<Vec<String>>,
    /// Event.
    pub event_id: Option<String>,
    /// Destination namespace.
    pub namespace: Option<String>,
    /// Destination name.
    pub destination: Option<String>,
    /// Outcome.
    pub outcome: Option<AttemptOutcome>,
    /// Only attempts that dead-lettered their delivery.
    pub dlq_only: bool,
    /// Only attempts after this (attempted_at, seq) position in newest-first order (the
    /// cursor).
    pub after_position: Option<(i64, i64)>,
    /// Page size.
    pub limit: u32,
}

/// Waiting deliveries (pending or in flight) of one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueDepth {
    /// Destination namespace.
    pub namespace: String,
    /// Destination name.
    pub destination: String,
    /// Deliveries waiting or in flight.
    pub depth: i64,
    /// When the oldest of them was created, unix ms.
    pub oldest_created_at: Option<i64>,
}

/// An event shared between the writer, ingest's hand-off and workers.
pub type SharedEvent = Arc<NewEvent>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_unknown_text_is_an_error() {
        for s in DeliveryState::ALL {
            assert_eq!(s.as_str().parse::<DeliveryState>(), Ok(*s));
        }
        for s in CircuitState::ALL {
            assert_eq!(s.as_str().parse::<CircuitState>(), Ok(*s));
        }
        let err = "opened".parse::<CircuitState>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown CircuitState \"opened\" in the database"
        );
        assert!("".parse::<EventStatus>().is_err());
        assert!("Connection".parse::<RouteKind>().is_err(), "case matters");
    }

    #[test]
    fn attempt_detail_is_tagged_json() {
        let d = AttemptDetail::Http {
            status_code: Some(503),
            response_headers: vec![("retry-after".into(), "1".into())],
            response_body: Some("busy".into()),
            response_body_truncated: false,
        };
        let text = serde_json::to_string(&d).unwrap();
        assert!(
            text.starts_with(r#"{"type":"http","status_code":503"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<AttemptDetail>(&text).unwrap(), d);
        assert!(serde_json::from_str::<AttemptDetail>(r#"{"type":"carrier-pigeon"}"#).is_err());
    }
}
