//! The `sqs` destination type: one `SendMessage` per delivery, the payload as the message
//! body, with the String message attributes `event_id` and `source_id` (the Source's
//! `namespace/name`). FIFO queues get a `MessageGroupId` (the destination's
//! `messageGroupId` computed from the payload, else the Source) and the event id as
//! `MessageDeduplicationId`, so a retried send within SQS's five-minute window is not a
//! second message.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageAttributeValue;
use hookstream_crds::config::{DestinationConfig, SqsConfig};

use super::aws::{self, AwsHttp, Clients, Failure};
use super::egress::Egress;
use super::{Headers, Message, Provider, ProviderError, Sent};
use crate::store::AttemptDetail;

/// Delivers to SQS queues, one SDK client per destination.
pub struct SqsProvider {
    http: AwsHttp,
    clients: Clients<(hookstream_crds::config::AwsConfig, Option<String>), aws_sdk_sqs::Client>,
}

impl SqsProvider {
    /// A provider whose requests go only where `egress` allows.
    pub fn new(egress: Arc<Egress>) -> Result<SqsProvider, ProviderError> {
        Ok(SqsProvider {
            http: AwsHttp::new(egress, "sqs")?,
            clients: Clients::new(),
        })
    }

    async fn client(
        &self,
        destination: &DestinationConfig,
        sqs: &SqsConfig,
    ) -> aws_sdk_sqs::Client {
        let endpoint = endpoint(sqs);
        let settings = (sqs.aws.clone(), endpoint.clone());
        let key = super::aws::key_of(&destination.key);
        self.clients
            .get(&key, &settings, async {
                let shared = self.http.sdk_config(&sqs.aws, endpoint.as_deref()).await;
                let config = aws_sdk_sqs::config::Builder::from(&shared)
                    .http_client(self.http.delivery.clone())
                    .build();
                aws_sdk_sqs::Client::from_conf(config)
            })
            .await
    }
}

/// The endpoint to call: the destination's `endpointUrl`, else the origin of a queue URL
/// that is not on AWS's own domain (an SQS-compatible service addressed by its queue URL
/// alone); `None` lets the SDK pick AWS's endpoint for the region.
fn endpoint(sqs: &SqsConfig) -> Option<String> {
    if let Some(endpoint) = &sqs.aws.endpoint_url {
        return Some(endpoint.clone());
    }
    let url = url::Url::parse(&sqs.queue_url).ok()?;
    let host = url.host_str()?;
    if host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

#[async_trait]
impl Provider for SqsProvider {
    fn retain(&self, live: &std::collections::HashSet<hookstream_crds::config::ObjectKey>) {
        self.clients.retain(live);
    }

    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let started = Instant::now();
        let Some(sqs) = &destination.sqs else {
            return Sent {
                permanent: true,
                error: Some("destination has no sqs settings".to_owned()),
                ..Sent::default()
            };
        };
        let mut sent = match self.send(destination, sqs, &message).await {
            Ok((detail, headers)) => Sent {
                success: true,
                request_headers: headers,
                detail,
                ..Sent::default()
            },
            Err((failure, headers)) => failure.into_sent(headers),
        };
        sent.latency = started.elapsed();
        sent
    }
}

/// A failure and the attributes that were to be sent.
type Failed = (Failure, Headers);

impl SqsProvider {
    async fn send(
        &self,
        destination: &DestinationConfig,
        sqs: &SqsConfig,
        message: &Message<'_>,
    ) -> Result<(AttemptDetail, Headers), Failed> {
        let event = message.event;
        let source_id = aws::source_id(event);
        let mut headers: Headers = vec![
            ("event_id".to_owned(), event.id.clone()),
            ("source_id".to_owned(), source_id.clone()),
        ];
        let body = match std::str::from_utf8(&message.payload.body) {
            Ok(body) => body.to_owned(),
            Err(_) => {
                let error = "the payload is not UTF-8 text, which an SQS message body must be";
                return Err((permanent(error.to_owned()), headers));
            }
        };
        let attributes = string_attribute(&event.id).and_then(|event_id| {
            string_attribute(&source_id).map(|source_id| (event_id, source_id))
        });
        let (event_id_attribute, source_id_attribute) = match attributes {
            Ok(both) => both,
            Err(failure) => return Err((failure, headers)),
        };
        let mut request = self
            .client(destination, sqs)
            .await
            .send_message()
            .queue_url(&sqs.queue_url)
            .message_body(body)
            .message_attributes("event_id", event_id_attribute)
            .message_attributes("source_id", source_id_attribute);
        if sqs.fifo {
            let group = match &sqs.message_group_id {
                Some(value) => match message.value(value).await {
                    Ok(Some(group)) if !group.is_empty() => group,
                    Ok(_) => source_id.clone(),
                    Err(e) => {
                        return Err((permanent(format!("messageGroupId: {e}")), headers));
                    }
                },
                None => source_id.clone(),
            };
            headers.push(("MessageGroupId".to_owned(), group.clone()));
            headers.push(("MessageDeduplicationId".to_owned(), event.id.clone()));
            request = request
                .message_group_id(group)
                .message_deduplication_id(&event.id);
        }
        let call = async {
            request
                .send()
                .await
                .map_err(|e| aws::classify("SQS", &sqs.aws, &e))
        };
        match aws::within(sqs.timeout_ms, "SQS", call).await {
            Ok(output) => Ok((
                AttemptDetail::Sqs {
                    message_id: output.message_id().unwrap_or_default().to_owned(),
                    sequence_number: output.sequence_number().map(str::to_owned),
                },
                headers,
            )),
            Err(failure) => Err((failure, headers)),
        }
    }
}

fn permanent(error: String) -> Failure {
    Failure {
        permanent: true,
        error,
        code: None,
    }
}

/// A String message attribute.
fn string_attribute(value: &str) -> Result<MessageAttributeValue, Failure> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| permanent(format!("cannot build a message attribute: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::config::AwsConfig;

    fn config(queue_url: &str, endpoint_url: Option<&str>) -> SqsConfig {
        SqsConfig {
            aws: AwsConfig {
                region: "us-east-1".into(),
                endpoint_url: endpoint_url.map(str::to_owned),
                credentials: None,
            },
            queue_url: queue_url.into(),
            fifo: false,
            message_group_id: None,
            timeout_ms: 1000,
        }
    }

    #[test]
    fn the_endpoint_is_the_setting_else_a_non_aws_queue_urls_origin() {
        let aws = "https://sqs.us-east-1.amazonaws.com/123456789012/orders";
        assert_eq!(endpoint(&config(aws, None)), None);
        assert_eq!(
            endpoint(&config(aws, Some("https://vpce.example"))).as_deref(),
            Some("https://vpce.example")
        );
        assert_eq!(
            endpoint(&config("http://127.0.0.1:15000/123456789012/q", None)).as_deref(),
            Some("http://127.0.0.1:15000")
        );
    }
}
