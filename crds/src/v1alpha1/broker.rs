//! The settings of the queue, stream and cloud destination types: `spec.sqs`, `spec.s3`,
//! `spec.eventbridge`, `spec.pubsub`, `spec.kafka` and `spec.rabbitmq` of a Destination.
//!
//! Credentials come from the Destination's `credentialsRef: {name}`, a Secret in its
//! namespace with fixed keys: `accessKeyId`, `secretAccessKey` and optional `sessionToken`
//! for the AWS types; `serviceAccountJson` for Pub/Sub; `username` and `password` for Kafka
//! SASL and RabbitMQ (or `url` with a whole `amqp://` / `amqps://` URL). Without
//! `credentialsRef` the AWS and Google types use the provider's default credential chain
//! (IRSA, EKS Pod Identity, GKE Workload Identity, environment variables).
//!
//! Values marked "a JSONata expression or a field" are evaluated against the payload being
//! delivered, with `$event` bound: `customer.id` takes a field, `$event.source_id` the
//! Source, `"fixed-" & type` anything JSONata computes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// Seconds to wait for the broker or service before an attempt counts as failed; the same
/// bounds as `spec.http.timeoutSeconds`.
type TimeoutSeconds = Option<u32>;

/// An AWS SQS queue.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqsDestination {
    /// The queue's URL, like `https://sqs.us-east-1.amazonaws.com/123456789012/orders`.
    /// A URL ending in `.fifo` is a FIFO queue.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "isURL(self) && url(self).getScheme() in ['http', 'https']",
        "message": "sqs.queueUrl must be the queue's http(s) URL, like https://sqs.us-east-1.amazonaws.com/123456789012/orders"
    }]))]
    pub queue_url: String,
    /// AWS region, like `us-east-1`.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// For FIFO queues: the `MessageGroupId`, a JSONata expression or a field of the payload
    /// (default: the Source, so each Source's events stay in order). The
    /// `MessageDeduplicationId` is the event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub message_group_id: Option<String>,
    /// Another endpoint than AWS's (a VPC endpoint, LocalStack, moto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint_url: Option<String>,
    /// Seconds to wait for SQS. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: TimeoutSeconds,
}

/// How an S3 object holds an event.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum S3Format {
    /// The whole event as JSON: `event_id`, `source_id`, `method`, `headers`, `body`,
    /// `received_at` (content type `application/json`).
    Json,
    /// The payload as it would be delivered (its own content type, else
    /// `application/octet-stream`).
    Raw,
}

/// An AWS S3 bucket (or an S3-compatible store).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// AWS region, like `us-east-1`.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// Start of every object key, like `webhooks/`. Default empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub prefix: Option<String>,
    /// Object key pattern. Default `{prefix}{yyyy}/{mm}/{dd}/{event_id}.json`. Placeholders:
    /// `{prefix}`, `{yyyy}`, `{mm}`, `{dd}`, `{hh}` (the event's receive time, UTC),
    /// `{event_id}`, `{namespace}`, `{source}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub key_pattern: Option<String>,
    /// `json` (default): the whole event; `raw`: the payload alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<S3Format>,
    /// Content type of the objects. Default: `application/json` for `json`, the payload's
    /// own for `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub content_type: Option<String>,
    /// Address buckets as `endpoint/bucket` rather than `bucket.endpoint` (most
    /// S3-compatible stores need it). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Another endpoint than AWS's (MinIO, Ceph, a VPC endpoint, moto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint_url: Option<String>,
    /// Seconds to wait for S3. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: TimeoutSeconds,
}

/// An AWS EventBridge event bus.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventbridgeDestination {
    /// The bus: its ARN, its name, or `default` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1600))]
    pub event_bus_arn: Option<String>,
    /// AWS region, like `us-east-1`.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,
    /// The events' `Source`. Default `hookstream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub source: Option<String>,
    /// The events' `DetailType`. Default `WebhookEvent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub detail_type: Option<String>,
    /// The `DetailType` from the payload instead: a JSONata expression or a field; when it
    /// yields nothing, `detailType` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub detail_type_from: Option<String>,
    /// Another endpoint than AWS's (a VPC endpoint, LocalStack, moto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint_url: Option<String>,
    /// Seconds to wait for EventBridge. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: TimeoutSeconds,
}

/// A Google Cloud Pub/Sub topic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PubsubDestination {
    /// Google Cloud project id.
    #[schemars(length(min = 1, max = 128))]
    pub project_id: String,
    /// Topic id within the project.
    #[schemars(length(min = 1, max = 255))]
    pub topic_id: String,
    /// Ordering key: a JSONata expression or a field of the payload. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub ordering_key: Option<String>,
    /// Another endpoint than Google's, as `host:port` (the emulator, like
    /// `PUBSUB_EMULATOR_HOST`; plaintext, no credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub endpoint: Option<String>,
    /// Seconds to wait for Pub/Sub. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: TimeoutSeconds,
}

/// SASL mechanisms for Kafka.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// `PLAIN` (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism as Kafka names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS to the Kafka brokers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// The Secret key with the PEM certificate authority that signed the brokers'
    /// certificates. Default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// A Kafka topic, through the native protocol.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaDestination {
    /// Brokers to bootstrap from, comma-separated `host:port`.
    #[schemars(length(min = 1, max = 2048))]
    pub bootstrap_servers: String,
    /// Topic.
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: String,
    /// Message key: a JSONata expression or a field of the payload. Default: the event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub key: Option<String>,
    /// TLS to the brokers. Default: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// SASL mechanism, with `username` and `password` from `credentialsRef`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// Seconds to wait for the brokers' acknowledgement. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: TimeoutSeconds,
}

/// How a RabbitMQ Destination publishes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RabbitmqMode {
    /// AMQP 0-9-1 with publisher confirms and the mandatory flag (default).
    Amqp,
    /// The management plugin's HTTP API (`POST /api/exchanges/{vhost}/{exchange}/publish`),
    /// successful only when it answers `routed: true`.
    Management,
}

/// A RabbitMQ exchange.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitmqDestination {
    /// The broker: `amqp://host:5672` or `amqps://…` for `amqp`, the management API's
    /// `http(s)://host:15672` for `management`. Credentials go in `credentialsRef`, which may
    /// instead hold the whole AMQP URL under `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// Virtual host. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub vhost: Option<String>,
    /// Exchange to publish to (empty: the default exchange, where the routing key names a
    /// queue).
    #[schemars(length(max = 255))]
    pub exchange: String,
    /// Routing key. Default empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub routing_key: Option<String>,
    /// The routing key from the payload instead: a JSONata expression or a field; when it
    /// yields nothing, `routingKey` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub routing_key_from: Option<String>,
    /// `amqp` (default) or `management`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RabbitmqMode>,
    /// Seconds to wait for the broker's confirm. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: TimeoutSeconds,
}
