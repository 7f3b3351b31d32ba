//! Row decoding shared by both backends. Each decoder is written once, as a macro that the
//! SQLite and PostgreSQL read modules expand for their own row type: the columns and their
//! meaning are the same in both schemas (`is_dlq` decodes as a boolean from SQLite's integer
//! too, and listings select `status_code` as a 64-bit integer in both).

/// Defines `count`, `event_from`, `attempt_from`, `event_listing_from`,
/// `attempt_listing_from` and `circuit_from` for rows of type `$row`.
macro_rules! row_decoders {
    ($row:ty) => {
        use $crate::store::model::{
            AttemptListing, AttemptRecord, CircuitRow, EventListing, NewEvent, StoredAttempt,
            StoredEvent,
        };
        use $crate::store::{detail_from, headers_from, StoreError};

        pub(super) fn count(r: &$row, column: &str) -> Result<u32, StoreError> {
            Ok(u32::try_from(r.try_get::<i64, _>(column)?).unwrap_or(0))
        }

        pub(super) fn event_from(r: &$row) -> Result<StoredEvent, StoreError> {
            Ok(StoredEvent {
                seq: r.try_get("seq")?,
                status: r.try_get::<&str, _>("status")?.parse()?,
                event: NewEvent {
                    id: r.try_get("id")?,
                    namespace: r.try_get("namespace")?,
                    source: r.try_get("source")?,
                    method: r.try_get("method")?,
                    path: r.try_get("path")?,
                    query: r.try_get("query")?,
                    headers: headers_from(r.try_get("headers")?),
                    body: r.try_get::<Vec<u8>, _>("body")?.into(),
                    content_type: r.try_get("content_type")?,
                    source_ip: r.try_get("source_ip")?,
                    received_at: r.try_get("received_at")?,
                    validation_errors: r
                        .try_get::<Option<&str>, _>("validation_errors")?
                        .and_then(|t| serde_json::from_str(t).ok()),
                },
            })
        }

        pub(super) fn attempt_from(r: &$row) -> Result<StoredAttempt, StoreError> {
            Ok(StoredAttempt {
                seq: r.try_get("seq")?,
                delivery_id: r.try_get("delivery_id")?,
                event_id: r.try_get("event_id")?,
                namespace: r.try_get("namespace")?,
                destination: r.try_get("destination")?,
                route_kind: r.try_get::<&str, _>("route_kind")?.parse()?,
                route: r.try_get("route")?,
                record: AttemptRecord {
                    id: r.try_get("id")?,
                    attempt_number: count(r, "attempt_number")?,
                    outcome: r.try_get::<&str, _>("status")?.parse()?,
                    error: r.try_get("error")?,
                    request_headers: headers_from(r.try_get("request_headers")?),
                    detail: detail_from(r.try_get("detail")?)?,
                    latency_ms: r.try_get("latency_ms")?,
                    attempted_at: r.try_get("attempted_at")?,
                    next_retry_at: r.try_get("next_retry_at")?,
                    is_dlq: r.try_get("is_dlq")?,
                },
            })
        }

        pub(super) fn event_listing_from(r: &$row) -> Result<EventListing, StoreError> {
            Ok(EventListing {
                seq: r.try_get("seq")?,
                id: r.try_get("id")?,
                namespace: r.try_get("namespace")?,
                source: r.try_get("source")?,
                method: r.try_get("method")?,
                content_type: r.try_get("content_type")?,
                received_at: r.try_get("received_at")?,
                status: r.try_get::<&str, _>("status")?.parse()?,
            })
        }

        pub(super) fn attempt_listing_from(r: &$row) -> Result<AttemptListing, StoreError> {
            Ok(AttemptListing {
                seq: r.try_get("seq")?,
                id: r.try_get("id")?,
                delivery_id: r.try_get("delivery_id")?,
                event_id: r.try_get("event_id")?,
                namespace: r.try_get("namespace")?,
                destination: r.try_get("destination")?,
                route_kind: r.try_get::<&str, _>("route_kind")?.parse()?,
                route: r.try_get("route")?,
                attempt_number: count(r, "attempt_number")?,
                outcome: r.try_get::<&str, _>("status")?.parse()?,
                error: r.try_get("error")?,
                status_code: r
                    .try_get::<Option<i64>, _>("status_code")?
                    .and_then(|c| u16::try_from(c).ok()),
                latency_ms: r.try_get("latency_ms")?,
                attempted_at: r.try_get("attempted_at")?,
                next_retry_at: r.try_get("next_retry_at")?,
                is_dlq: r.try_get("is_dlq")?,
            })
        }

        pub(super) fn circuit_from(r: &$row) -> Result<CircuitRow, StoreError> {
            Ok(CircuitRow {
                namespace: r.try_get("namespace")?,
                destination: r.try_get("destination")?,
                state: r.try_get::<&str, _>("state")?.parse()?,
                consecutive_failures: count(r, "consecutive_failures")?,
                opened_at: r.try_get("opened_at")?,
                last_failure_at: r.try_get("last_failure_at")?,
                probe_at: r.try_get("probe_at")?,
            })
        }
    };
}

pub(super) use row_decoders;
