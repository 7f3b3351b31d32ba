//! The `eventbridge` destination type: one `PutEvents` entry per delivery, with the
//! destination's `Source`, its `DetailType` (from the payload with `detailTypeFrom` when that
//! yields text), the bus, and the payload as `Detail` (JSON text as it is; any other payload
//! as a JSON string). `PutEvents` answers 200 even when it refused the entry: a failed entry
//! is a failed attempt, retried when its error code says EventBridge was throttling or
//! unavailable.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use hookstream_crds::config::{AwsConfig, DestinationConfig, EventbridgeConfig};

use super::aws::{self, AwsHttp, Clients, Failure};
use super::egress::Egress;
use super::{Headers, Message, Provider, ProviderError, Sent};
use crate::store::AttemptDetail;

/// Entry error codes worth retrying.
const RETRYABLE_ENTRY_CODES: [&str; 3] = [
    "ThrottlingException",
    "InternalFailure",
    "ServiceUnavailable",
];

/// Delivers to EventBridge buses, one SDK client per destination.
pub struct EventbridgeProvider {
    http: AwsHttp,
    clients: Clients<AwsConfig, aws_sdk_eventbridge::Client>,
}

impl EventbridgeProvider {
    /// A provider whose requests go only where `egress` allows.
    pub fn new(egress: Arc<Egress>) -> Result<EventbridgeProvider, ProviderError> {
        Ok(EventbridgeProvider {
            http: AwsHttp::new(egress, "eventbridge")?,
            clients: Clients::new(),
        })
    }

    async fn client(
        &self,
        destination: &DestinationConfig,
        config: &EventbridgeConfig,
    ) -> aws_sdk_eventbridge::Client {
        let key = super::aws::key_of(&destination.key);
        self.clients
            .get(&key, &config.aws, async {
                let shared = self.http.sdk_config(&config.aws, None).await;
                let built = aws_sdk_eventbridge::config::Builder::from(&shared)
                    .http_client(self.http.delivery.clone())
                    .build();
                aws_sdk_eventbridge::Client::from_conf(built)
            })
            .await
    }
}

/// The `Detail` of an entry: the payload when it is JSON text, else the payload as a JSON
/// string.
pub fn detail(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) if serde_json::from_str::<serde_json::Value>(text).is_ok() => text.to_owned(),
        _ => serde_json::Value::String(String::from_utf8_lossy(payload).into_owned()).to_string(),
    }
}

#[async_trait]
impl Provider for EventbridgeProvider {
    fn retain(&self, live: &std::collections::HashSet<hookstream_crds::config::ObjectKey>) {
        self.clients.retain(live);
    }

    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let started = Instant::now();
        let Some(config) = &destination.eventbridge else {
            return Sent {
                permanent: true,
                error: Some("destination has no eventbridge settings".to_owned()),
                ..Sent::default()
            };
        };
        let mut sent = self.send(destination, config, &message).await;
        sent.latency = started.elapsed();
        sent
    }
}

impl EventbridgeProvider {
    async fn send(
        &self,
        destination: &DestinationConfig,
        config: &EventbridgeConfig,
        message: &Message<'_>,
    ) -> Sent {
        let detail_type = match &config.detail_type_from {
            Some(value) => match message.value(value).await {
                Ok(Some(text)) if !text.is_empty() => text,
                Ok(_) => config.detail_type.clone(),
                Err(e) => {
                    return Sent {
                        permanent: true,
                        error: Some(format!("detailTypeFrom: {e}")),
                        ..Sent::default()
                    };
                }
            },
            None => config.detail_type.clone(),
        };
        let headers: Headers = vec![
            ("Source".to_owned(), config.source.clone()),
            ("DetailType".to_owned(), detail_type.clone()),
            ("EventBusName".to_owned(), config.event_bus.clone()),
        ];
        let entry = PutEventsRequestEntry::builder()
            .source(&config.source)
            .detail_type(detail_type)
            .detail(detail(&message.payload.body))
            .event_bus_name(&config.event_bus)
            .build();
        let request = self
            .client(destination, config)
            .await
            .put_events()
            .entries(entry);
        let call = async {
            request
                .send()
                .await
                .map_err(|e| aws::classify("EventBridge", &config.aws, &e))
        };
        let output = match aws::within(config.timeout_ms, "EventBridge", call).await {
            Ok(output) => output,
            Err(failure) => return failure.into_sent(headers),
        };
        let first = output.entries().first();
        let entry_id = first.and_then(|e| e.event_id()).map(str::to_owned);
        let error_code = first.and_then(|e| e.error_code()).map(str::to_owned);
        let detail = AttemptDetail::Eventbridge {
            entry_id,
            error_code: error_code.clone(),
        };
        if output.failed_entry_count() == 0 && error_code.is_none() {
            return Sent {
                success: true,
                request_headers: headers,
                detail,
                ..Sent::default()
            };
        }
        let failure = entry_failure(error_code.as_deref(), first.and_then(|e| e.error_message()));
        Sent {
            permanent: failure.permanent,
            error: Some(aws::redact(&config.aws, failure.error)),
            request_headers: headers,
            detail,
            ..Sent::default()
        }
    }
}

/// A refused entry: retried when its code says EventBridge was throttling or unavailable.
fn entry_failure(code: Option<&str>, message: Option<&str>) -> Failure {
    let code_text = code.unwrap_or("no error code");
    Failure {
        permanent: !code.is_some_and(|c| RETRYABLE_ENTRY_CODES.contains(&c)),
        error: format!(
            "EventBridge refused the entry: {code_text}: {}",
            message.unwrap_or("no message")
        ),
        code: code.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payloads_are_the_detail_and_others_become_json_strings() {
        assert_eq!(detail(br#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(detail(b"plain \"text\""), r#""plain \"text\"""#);
        assert_eq!(detail(&[0xff, b'a']), "\"\u{fffd}a\"");
    }

    #[test]
    fn throttled_entries_are_retried_and_other_refusals_are_not() {
        assert!(!entry_failure(Some("ThrottlingException"), None).permanent);
        assert!(!entry_failure(Some("InternalFailure"), None).permanent);
        let bad = entry_failure(Some("MalformedDetail"), Some("Detail is malformed."));
        assert!(bad.permanent);
        assert_eq!(
            bad.error,
            "EventBridge refused the entry: MalformedDetail: Detail is malformed."
        );
    }
}
