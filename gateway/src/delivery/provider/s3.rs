//! The `s3` destination type: one `PutObject` per delivery, at the key the destination's
//! `keyPattern` gives for the event. Format `json` stores the whole event
//! (`{"event_id", "source_id", "method", "headers", "body", "received_at"}`, the body being the
//! payload this route delivers, parsed when it is JSON); `raw` stores the payload's bytes with
//! its content type. The object carries the metadata `event-id` and `source-id`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use hookstream_crds::config::{AwsConfig, DestinationConfig, S3Config};
use hookstream_crds::v1alpha1::S3Format;
use serde_json::{Map, Value};

use super::aws::{self, AwsHttp, Clients};
use super::egress::Egress;
use super::{Headers, Message, Provider, ProviderError, Sent};
use crate::clock::rfc3339;
use crate::store::{AttemptDetail, NewEvent};

/// Content type of `json` objects.
const JSON: &str = "application/json";
/// Content type of `raw` objects whose payload has none.
const OCTET_STREAM: &str = "application/octet-stream";

/// Delivers to S3 buckets, one SDK client per destination.
pub struct S3Provider {
    http: AwsHttp,
    clients: Clients<(AwsConfig, bool), aws_sdk_s3::Client>,
}

impl S3Provider {
    /// A provider whose requests go only where `egress` allows.
    pub fn new(egress: Arc<Egress>) -> Result<S3Provider, ProviderError> {
        Ok(S3Provider {
            http: AwsHttp::new(egress, "s3")?,
            clients: Clients::new(),
        })
    }

    async fn client(&self, destination: &DestinationConfig, s3: &S3Config) -> aws_sdk_s3::Client {
        let settings = (s3.aws.clone(), s3.force_path_style);
        let key = super::aws::key_of(&destination.key);
        self.clients
            .get(&key, &settings, async {
                let shared = self.http.sdk_config(&s3.aws, None).await;
                let config = aws_sdk_s3::config::Builder::from(&shared)
                    .http_client(self.http.delivery.clone())
                    .force_path_style(s3.force_path_style)
                    .build();
                aws_sdk_s3::Client::from_conf(config)
            })
            .await
    }
}

#[async_trait]
impl Provider for S3Provider {
    fn retain(&self, live: &std::collections::HashSet<hookstream_crds::config::ObjectKey>) {
        self.clients.retain(live);
    }

    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let started = Instant::now();
        let Some(s3) = &destination.s3 else {
            return Sent {
                permanent: true,
                error: Some("destination has no s3 settings".to_owned()),
                ..Sent::default()
            };
        };
        let event = message.event;
        let key = object_key(&s3.key_pattern, &s3.prefix, event);
        let (body, content_type) = object(s3, &message);
        let source_id = aws::source_id(event);
        let headers: Headers = vec![
            ("Content-Type".to_owned(), content_type.clone()),
            ("x-amz-meta-event-id".to_owned(), event.id.clone()),
            ("x-amz-meta-source-id".to_owned(), source_id.clone()),
        ];
        let request = self
            .client(destination, s3)
            .await
            .put_object()
            .bucket(&s3.bucket)
            .key(&key)
            .content_type(content_type)
            .metadata("event-id", &event.id)
            .metadata("source-id", source_id)
            .body(ByteStream::from(body));
        let call = async {
            request
                .send()
                .await
                .map_err(|e| aws::classify("S3", &s3.aws, &e))
        };
        let mut sent = match aws::within(s3.timeout_ms, "S3", call).await {
            Ok(output) => Sent {
                success: true,
                request_headers: headers,
                detail: AttemptDetail::S3 {
                    bucket: s3.bucket.clone(),
                    key,
                    etag: output.e_tag().map(str::to_owned),
                    version_id: output.version_id().map(str::to_owned),
                },
                ..Sent::default()
            },
            Err(failure) => failure.into_sent(headers),
        };
        sent.latency = started.elapsed();
        sent
    }
}

/// The object's bytes and content type.
fn object(s3: &S3Config, message: &Message<'_>) -> (Bytes, String) {
    let (body, by_format) = match s3.format {
        S3Format::Json => (
            Bytes::from(event_json(message.event, &message.payload.body).to_string()),
            JSON.to_owned(),
        ),
        S3Format::Raw => (
            message.payload.body.clone(),
            message
                .payload
                .content_type
                .clone()
                .unwrap_or_else(|| OCTET_STREAM.to_owned()),
        ),
    };
    (body, s3.content_type.clone().unwrap_or(by_format))
}

/// The whole event as a JSON object, with `body` (parsed when it is JSON, else text) in
/// place of the event's own.
pub fn event_json(event: &NewEvent, body: &[u8]) -> Value {
    let mut headers = Map::new();
    for (name, value) in &event.headers {
        match headers.get_mut(name) {
            Some(Value::String(seen)) => {
                seen.push_str(", ");
                seen.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    let body = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    serde_json::json!({
        "event_id": event.id,
        "source_id": aws::source_id(event),
        "method": event.method,
        "headers": headers,
        "body": body,
        "received_at": rfc3339(event.received_at),
    })
}

/// The object key `pattern` gives for `event`: `{prefix}`, `{yyyy}`, `{mm}`, `{dd}`, `{hh}`
/// (the event's receive time, UTC), `{event_id}`, `{namespace}` and `{source}` replaced.
pub fn object_key(pattern: &str, prefix: &str, event: &NewEvent) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(event.received_at).unwrap_or_default();
    let mut key = String::with_capacity(pattern.len() + prefix.len() + 40);
    let mut rest = pattern;
    while let Some(start) = rest.find('{') {
        key.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            // An unclosed brace (the compiler rejects these): kept as written.
            key.push_str(&rest[start..]);
            return key;
        };
        let name = &rest[start + 1..start + end];
        match name {
            "prefix" => key.push_str(prefix),
            "yyyy" => key.push_str(&format!("{:04}", at.year())),
            "mm" => key.push_str(&format!("{:02}", at.month())),
            "dd" => key.push_str(&format!("{:02}", at.day())),
            "hh" => key.push_str(&format!("{:02}", at.hour())),
            "event_id" => key.push_str(&event.id),
            "namespace" => key.push_str(&event.namespace),
            "source" => key.push_str(&event.source),
            other => {
                key.push('{');
                key.push_str(other);
                key.push('}');
            }
        }
        rest = &rest[start + end + 1..];
    }
    key.push_str(rest);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(received_at: i64) -> NewEvent {
        NewEvent {
            id: "evt_1".into(),
            namespace: "shop".into(),
            source: "orders".into(),
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-a".into(), "1".into()),
                ("x-a".into(), "2".into()),
            ],
            body: Bytes::from_static(b"{\"a\":1}"),
            content_type: Some("application/json".into()),
            source_ip: "127.0.0.1".into(),
            received_at,
            validation_errors: None,
        }
    }

    #[test]
    fn keys_fill_every_placeholder_from_the_event_in_utc() {
        // 2024-03-05T07:08:09.123Z
        let e = event(1_709_622_489_123);
        assert_eq!(
            object_key("{prefix}{yyyy}/{mm}/{dd}/{event_id}.json", "hooks/", &e),
            "hooks/2024/03/05/evt_1.json"
        );
        assert_eq!(
            object_key(
                "{namespace}/{source}/{yyyy}-{mm}-{dd}T{hh}/{event_id}",
                "",
                &e
            ),
            "shop/orders/2024-03-05T07/evt_1"
        );
        assert_eq!(
            object_key("{prefix}{event_id}{unknown}", "p-", &e),
            "p-evt_1{unknown}"
        );
        // Just before midnight UTC stays on that day, whatever the local zone.
        let late = event(1_735_689_599_999); // 2024-12-31T23:59:59.999Z
        assert_eq!(
            object_key("{yyyy}/{mm}/{dd}/{hh}/{event_id}", "", &late),
            "2024/12/31/23/evt_1"
        );
    }

    #[test]
    fn the_json_format_holds_the_whole_event() {
        let e = event(1_709_622_489_123);
        let v = event_json(&e, b"{\"a\":1}");
        assert_eq!(v["event_id"], "evt_1");
        assert_eq!(v["source_id"], "shop/orders");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["headers"]["x-a"], "1, 2");
        assert_eq!(v["body"]["a"], 1);
        assert_eq!(v["received_at"], "2024-03-05T07:08:09.123Z");
        assert_eq!(event_json(&e, b"plain")["body"], "plain");
    }
}
