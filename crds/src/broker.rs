//! The compiled settings of the queue, stream and cloud destination types (see
//! [`crate::config::DestinationConfig`]): checked, defaulted, credentials resolved.

use serde::{Deserialize, Serialize};

use crate::config::SecretValue;
use crate::v1alpha1::{RabbitmqMode, S3Format, SaslMechanism};

/// A value computed per delivery from the payload: a field path (looked up directly) or a
/// JSONata expression (evaluated in the transform sandbox with `$event` bound).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum PayloadValue {
    /// A dotted path of plain names, like `customer.id`.
    Field(Vec<String>),
    /// Any other JSONata expression.
    Jsonata(String),
}

impl PayloadValue {
    /// A dotted path of plain names becomes a field, anything else an expression (the caller
    /// checks that it compiles).
    pub fn parse(text: &str) -> PayloadValue {
        let text = text.trim();
        let plain = |part: &str| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !text.is_empty() && text.split('.').all(plain) {
            PayloadValue::Field(text.split('.').map(str::to_owned).collect())
        } else {
            PayloadValue::Jsonata(text.to_owned())
        }
    }
}

/// Static AWS credentials from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AwsCredentials {
    /// `accessKeyId`.
    pub access_key_id: SecretValue,
    /// `secretAccessKey`.
    pub secret_access_key: SecretValue,
    /// `sessionToken`, for temporary credentials.
    #[serde(default)]
    pub session_token: Option<SecretValue>,
}

/// Where and as whom to call an AWS API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AwsConfig {
    /// Region.
    pub region: String,
    /// Another endpoint than AWS's.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Static credentials; `None`: the default credential chain.
    #[serde(default)]
    pub credentials: Option<AwsCredentials>,
}

/// An SQS queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SqsConfig {
    /// Region, endpoint, credentials.
    pub aws: AwsConfig,
    /// Queue URL.
    pub queue_url: String,
    /// The queue is FIFO (its URL ends in `.fifo`).
    pub fifo: bool,
    /// FIFO `MessageGroupId`; `None`: the Source (`namespace/name`).
    #[serde(default)]
    pub message_group_id: Option<PayloadValue>,
    /// Time limit of one attempt.
    pub timeout_ms: u64,
}

/// An S3 bucket.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// Region, endpoint, credentials.
    pub aws: AwsConfig,
    /// Bucket.
    pub bucket: String,
    /// Key prefix (`{prefix}`).
    pub prefix: String,
    /// Key pattern with placeholders.
    pub key_pattern: String,
    /// Whole event or payload alone.
    pub format: S3Format,
    /// Content type set on objects; `None`: by format.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Path-style addressing.
    pub force_path_style: bool,
    /// Time limit of one attempt.
    pub timeout_ms: u64,
}

/// An EventBridge bus.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EventbridgeConfig {
    /// Region, endpoint, credentials.
    pub aws: AwsConfig,
    /// Bus ARN or name (`default`).
    pub event_bus: String,
    /// `Source` of the entries.
    pub source: String,
    /// `DetailType` of the entries.
    pub detail_type: String,
    /// `DetailType` from the payload, when it yields a string.
    #[serde(default)]
    pub detail_type_from: Option<PayloadValue>,
    /// Time limit of one attempt.
    pub timeout_ms: u64,
}

/// A Pub/Sub topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PubsubConfig {
    /// Project id.
    pub project_id: String,
    /// Topic id.
    pub topic_id: String,
    /// Ordering key.
    #[serde(default)]
    pub ordering_key: Option<PayloadValue>,
    /// Emulator or other endpoint, `host:port` (plaintext, no credentials).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Service account key JSON; `None`: the default credential chain.
    #[serde(default)]
    pub service_account_json: Option<SecretValue>,
    /// Time limit of one attempt.
    pub timeout_ms: u64,
}

/// SASL credentials for Kafka.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KafkaSasl {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// `username`.
    pub username: SecretValue,
    /// `password`.
    pub password: SecretValue,
}

/// A Kafka topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port` of each bootstrap broker.
    pub bootstrap_servers: Vec<String>,
    /// Topic.
    pub topic: String,
    /// Record key; `None`: the event id.
    #[serde(default)]
    pub key: Option<PayloadValue>,
    /// TLS to the brokers.
    pub tls: bool,
    /// PEM CA for TLS; `None`: the system's roots.
    #[serde(default)]
    pub tls_ca: Option<SecretValue>,
    /// SASL.
    #[serde(default)]
    pub sasl: Option<KafkaSasl>,
    /// Time limit of one attempt.
    pub timeout_ms: u64,
}

/// A RabbitMQ exchange.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RabbitmqConfig {
    /// AMQP or the management API.
    pub mode: RabbitmqMode,
    /// The broker URL with its credentials (`amqp(s)://user:pass@host:port/vhost` or
    /// `http(s)://user:pass@host:port`): secret as a whole.
    pub url: SecretValue,
    /// Virtual host.
    pub vhost: String,
    /// Exchange (empty: the default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Routing key from the payload, when it yields a string.
    #[serde(default)]
    pub routing_key_from: Option<PayloadValue>,
    /// Time limit of one attempt.
    pub timeout_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_fields_and_the_rest_is_jsonata() {
        assert_eq!(
            PayloadValue::parse(" customer.id "),
            PayloadValue::Field(vec!["customer".into(), "id".into()])
        );
        for expression in [
            "$event.source_id",
            "a.b[0]",
            "\"fixed\"",
            "a & b",
            "1a",
            "a..b",
        ] {
            assert!(
                matches!(PayloadValue::parse(expression), PayloadValue::Jsonata(_)),
                "{expression}"
            );
        }
    }
}
