//! The bodies of the gateway's HTTP answers (ingest, publish and the management API under
//! `/v1/`), as typed structs that the gateway serializes and a client can deserialize. Times
//! are RFC 3339 UTC strings; ids carry their prefix (`evt_`, `dlv_`, `da_`, `req_`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every error: `{"error": "...", "status": N, "request_id": "req_..."}`, plus the schema
/// errors of a rejected ingest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// The HTTP status.
    pub status: u16,
    /// This request's id, also in the gateway's log.
    pub request_id: String,
    /// Why the body failed the Source's JSON Schema (`path`, `message` each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_errors: Option<Value>,
}

/// `ANY /v1/ingest/{namespace}/{source}` accepted the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ingested {
    /// The stored event, or the earlier one for a duplicate.
    pub event_id: String,
    /// `namespace/name` of the Source.
    pub source_id: String,
    /// The request repeated an earlier one within the dedup window; nothing was stored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    /// Schema errors of a Source that validates with `warn` (the event was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_errors: Option<Value>,
}

/// `POST /v1/topics/{namespace}/{topic}/publish` stored the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The stored event.
    pub event_id: String,
    /// `namespace/name` of the Topic.
    pub topic: String,
    /// When it was received.
    pub received_at: String,
}

/// Where a list stands: `cursor` fetches the next page while `has_more` is true.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pagination {
    /// Page size asked for.
    pub limit: u32,
    /// Whether more items follow.
    pub has_more: bool,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventList {
    /// Newest first.
    pub events: Vec<EventSummary>,
    /// The cursor of the next page, when there is one.
    pub cursor: Option<String>,
    /// Whether more events follow.
    pub has_more: bool,
    /// The same, grouped.
    pub pagination: Pagination,
}

/// An event in a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventSummary {
    /// `evt_` id.
    pub id: String,
    /// `namespace/name` of the Source (`namespace/topic:NAME` for a publish).
    pub source_id: String,
    /// Name of the Source.
    pub source_name: String,
    /// Namespace of the Source.
    pub namespace: String,
    /// Request method.
    pub method: String,
    /// Request content type.
    pub content_type: Option<String>,
    /// `received`, `processing`, `delivered` or `failed`.
    pub status: String,
    /// When it was received.
    pub received_at: String,
}

/// `GET /v1/events/{id}`: the event, its request and its attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventDetail {
    /// What lists show.
    #[serde(flatten)]
    pub summary: EventSummary,
    /// Request path.
    pub path: String,
    /// Query parameters (repeated names as lists).
    pub query: Value,
    /// Request headers; credentials redacted.
    pub headers: Value,
    /// The body: JSON when it parses, else a string. Absent when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A body that is not UTF-8, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    /// Client address.
    pub source_ip: String,
    /// Schema errors of a Source that validates with `warn`.
    pub validation_errors: Option<Value>,
    /// Every attempt, oldest first.
    pub delivery_attempts: Vec<AttemptSummary>,
}

/// `POST /v1/events/{id}/retry`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRetry {
    /// New deliveries, one per route the event matches now.
    pub retried: Vec<RetriedDelivery>,
    /// Why nothing was retried, when nothing was.
    pub errors: Vec<String>,
}

/// A delivery queued by a retry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetriedDelivery {
    /// `namespace/name` of the Destination.
    pub destination_id: String,
    /// Route name.
    pub route: String,
    /// `dlv_` id.
    pub delivery_id: String,
    /// `queued`.
    pub status: String,
}

/// `GET /v1/delivery-attempts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptList {
    /// Newest first.
    pub delivery_attempts: Vec<AttemptSummary>,
    /// The cursor of the next page, when there is one.
    pub cursor: Option<String>,
    /// Whether more attempts follow.
    pub has_more: bool,
    /// The same, grouped.
    pub pagination: Pagination,
}

/// A delivery attempt in a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptSummary {
    /// `da_` id.
    pub id: String,
    /// Event delivered.
    pub event_id: String,
    /// `dlv_` id of the delivery (one event to one destination) it belongs to.
    pub delivery_id: String,
    /// `namespace/name` of the Connection, for Connection routes.
    pub connection_id: Option<String>,
    /// `connection` or `subscription`.
    pub route_kind: String,
    /// Route name (`topic#index` for a subscription).
    pub route: String,
    /// `namespace/name` of the Destination.
    pub destination_id: String,
    /// Name of the Destination.
    pub destination_name: String,
    /// `success` or `failed`.
    pub status: String,
    /// Response status, for HTTP destinations that answered.
    pub status_code: Option<u16>,
    /// 1-based over the delivery's life.
    pub attempt_number: u32,
    /// Duration of the attempt.
    pub latency_ms: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// 1 when this attempt dead-lettered the delivery, else 0.
    pub is_dlq: u8,
    /// When it was made.
    pub attempted_at: String,
    /// When the next retry is due, if one is scheduled.
    pub next_retry_at: Option<String>,
    /// Same as `attempted_at`.
    pub created_at: String,
}

/// `GET /v1/delivery-attempts/{id}`: the attempt with what was sent and what came back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptDetail {
    /// What lists show.
    #[serde(flatten)]
    pub summary: AttemptSummary,
    /// Headers sent; secret values redacted.
    pub request_headers: Value,
    /// Headers received, for HTTP destinations that answered.
    pub response_headers: Option<Value>,
    /// Start of the response body (the first 4 KiB).
    pub response_body: Option<String>,
    /// True when the response body was longer than `response_body` (the rest was not read).
    #[serde(default)]
    pub response_body_truncated: bool,
    /// What a queue, stream or cloud destination returned, tagged by `type`: `sqs`
    /// (`message_id`, `sequence_number`), `s3` (`bucket`, `key`, `etag`, `version_id`),
    /// `eventbridge` (`entry_id`, `error_code`), `pubsub` (`message_id`), `kafka` (`topic`,
    /// `partition`, `offset`), `rabbitmq` (`exchange`, `routing_key`), `websocket`
    /// (`channel`, `clients`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_result: Option<Value>,
}

/// `POST /v1/delivery-attempts/{id}/retry`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRetry {
    /// The retried delivery.
    pub delivery_attempt: RetriedAttempt,
}

/// The delivery of an attempt, queued again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetriedAttempt {
    /// The attempt named in the request.
    pub id: String,
    /// Its event.
    pub event_id: String,
    /// Its delivery, now due.
    pub delivery_id: String,
    /// `namespace/name` of the Destination.
    pub destination_id: String,
    /// The delivery's state now (`pending`).
    pub status: String,
}

/// `GET /v1/destinations/{namespace}/{name}/circuit` and its reset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    /// `namespace/name` of the Destination.
    pub destination_id: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Failures in a row.
    pub failure_count: u32,
    /// Last failure.
    pub last_failure_at: Option<String>,
    /// When it opened.
    pub opened_at: Option<String>,
}

/// `GET /v1/sources/templates`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceTemplates {
    /// Every Source template.
    pub templates: Vec<SourceTemplate>,
}

/// A Source template and what it sets, in manifest terms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceTemplate {
    /// As written in `spec.template`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// The verification type as the reference names it (`hmac_sha256`, `stripe`, ...).
    pub verification_type: Option<String>,
    /// The provider's documentation.
    pub docs_url: Option<String>,
    /// What it sets.
    pub sets: SourceTemplateSets,
}

/// What a Source template sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceTemplateSets {
    /// `spec.verification` fields.
    pub verification: Option<Value>,
    /// `spec.dedup` fields.
    pub dedup: Option<Value>,
}

/// `GET /v1/destinations/templates`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationTemplates {
    /// Every Destination template.
    pub templates: Vec<DestinationTemplate>,
}

/// A Destination template and what it sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DestinationTemplate {
    /// As written in `spec.template`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Destination type (`http`).
    #[serde(rename = "type")]
    pub kind: String,
    /// What it does.
    pub description: String,
    /// The service's documentation.
    pub docs_url: String,
    /// The reference's config template.
    pub config_template: Value,
    /// What it sets, in manifest terms.
    pub sets: Value,
}
