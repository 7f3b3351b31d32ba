//! `Destination`: where events are delivered, with retry policy and circuit breaker.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// A delivery target. Each Destination has its own retry policy, circuit breaker and
/// dead-letter queue.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "hookstream.io",
    version = "v1alpha1",
    kind = "Destination",
    namespaced,
    status = "DestinationStatus",
    shortname = "hdst",
    category = "hookstream",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".spec.http.url",
        priority = "1"
    ),
    printcolumn(
        name = "Circuit",
        type_ = "string",
        json_path = ".status.circuit.state"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type != 'http' || has(self.http) || (has(self.template) && self.template in ['pagerduty', 'datadog'])",
        "message": "spec.http is required when spec.type is http: set spec.http.url to the endpoint that receives deliveries"
    },
    {
        "rule": "!has(self.template) || self.type == 'http'",
        "message": "spec.template is for type http"
    },
    {
        "rule": "!has(self.template) || !(self.template in ['pagerduty', 'datadog', 'linear']) || has(self.credentialsRef)",
        "message": "spec.credentialsRef is required for this template: name the Secret key with the routing key or API key"
    },
    {
        "rule": "!has(self.http) || self.type == 'http'",
        "message": "spec.http is only used when spec.type is http"
    },
    {
        "rule": "!has(self.websocket) || self.type == 'websocket'",
        "message": "spec.websocket is only used when spec.type is websocket"
    },
    {
        "rule": "!has(self.template) || !has(self.credentialsRef) || has(self.credentialsRef.key)",
        "message": "spec.credentialsRef.key is required with a template: name the Secret key holding the credential"
    },
    {
        "rule": "self.type != 'sqs' || has(self.sqs)",
        "message": "spec.sqs is required when spec.type is sqs: set spec.sqs.queueUrl and spec.sqs.region"
    },
    {
        "rule": "!has(self.sqs) || self.type == 'sqs'",
        "message": "spec.sqs is only used when spec.type is sqs"
    },
    {
        "rule": "self.type != 's3' || has(self.s3)",
        "message": "spec.s3 is required when spec.type is s3: set spec.s3.bucket and spec.s3.region"
    },
    {
        "rule": "!has(self.s3) || self.type == 's3'",
        "message": "spec.s3 is only used when spec.type is s3"
    },
    {
        "rule": "self.type != 'eventbridge' || has(self.eventbridge)",
        "message": "spec.eventbridge is required when spec.type is eventbridge: set spec.eventbridge.region (the bus defaults to default)"
    },
    {
        "rule": "!has(self.eventbridge) || self.type == 'eventbridge'",
        "message": "spec.eventbridge is only used when spec.type is eventbridge"
    },
    {
        "rule": "self.type != 'pubsub' || has(self.pubsub)",
        "message": "spec.pubsub is required when spec.type is pubsub: set spec.pubsub.projectId and spec.pubsub.topicId"
    },
    {
        "rule": "!has(self.pubsub) || self.type == 'pubsub'",
        "message": "spec.pubsub is only used when spec.type is pubsub"
    },
    {
        "rule": "self.type != 'kafka' || has(self.kafka)",
        "message": "spec.kafka is required when spec.type is kafka: set spec.kafka.bootstrapServers and spec.kafka.topic"
    },
    {
        "rule": "!has(self.kafka) || self.type == 'kafka'",
        "message": "spec.kafka is only used when spec.type is kafka"
    },
    {
        "rule": "self.type != 'rabbitmq' || has(self.rabbitmq)",
        "message": "spec.rabbitmq is required when spec.type is rabbitmq: set spec.rabbitmq.exchange (and spec.rabbitmq.url or a url in credentialsRef)"
    },
    {
        "rule": "!has(self.rabbitmq) || self.type == 'rabbitmq'",
        "message": "spec.rabbitmq is only used when spec.type is rabbitmq"
    }
]))]
pub struct DestinationSpec {
    /// Provider type: `http`, `sqs`, `s3`, `eventbridge`, `pubsub`, `kafka`, `rabbitmq` or
    /// `websocket`. The settings of the chosen type go in the field of the same name.
    #[serde(rename = "type")]
    pub type_: DestinationType,
    /// Service preset for `type: http`: `slack`, `discord`, `pagerduty`, `datadog`, `zapier`
    /// or `linear`. It shapes the payload the service accepts (a JSONata transform that
    /// `transform` overrides), sets its headers, puts the credential from `credentialsRef`
    /// where the service expects it, and, for PagerDuty and Datadog, the intake URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<DestinationTemplate>,
    /// Credentials. With a template: the Secret `name` and `key` holding the service
    /// credential (the PagerDuty routing key, the Datadog API key, the Linear API key). For
    /// the AWS types a Secret with `accessKeyId`, `secretAccessKey` and optional
    /// `sessionToken`; for `pubsub` one with `serviceAccountJson`; for `kafka` (SASL) and
    /// `rabbitmq` one with `username` and `password` (or, for `rabbitmq`, `url`). Without it
    /// the AWS and Google types use the default credential chain (IRSA, EKS Pod Identity, GKE
    /// Workload Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<CredentialsRef>,
    /// A JSONata transform applied to every delivery to this Destination, after the route's
    /// own transform; its input is the routed payload, with `$event`, `$headers`, `$query`,
    /// `$method` and (with a template's credential) `$credential` bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<super::common::Transform>,
    /// Settings for `type: http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpDestination>,
    /// Settings for `type: websocket`: deliveries go to the clients connected to the
    /// gateway's `GET /v1/ws` that subscribed to `deliveries:<namespace>/<channelName>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WebsocketDestination>,
    /// Settings for `type: sqs`: messages to an AWS SQS queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<super::broker::SqsDestination>,
    /// Settings for `type: s3`: one object per event in an S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<super::broker::S3Destination>,
    /// Settings for `type: eventbridge`: events on an AWS EventBridge bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventbridge: Option<super::broker::EventbridgeDestination>,
    /// Settings for `type: pubsub`: messages to a Google Cloud Pub/Sub topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsub: Option<super::broker::PubsubDestination>,
    /// Settings for `type: kafka`: records on a Kafka topic (native protocol, acks=all,
    /// idempotent producer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<super::broker::KafkaDestination>,
    /// Settings for `type: rabbitmq`: messages to a RabbitMQ exchange (AMQP 0-9-1 with
    /// publisher confirms, or the management HTTP API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<super::broker::RabbitmqDestination>,
    /// Outbound signing: each delivery carries `X-Hookstream-Signature: sha256=<hex>`, an
    /// HMAC of `{event id}.{timestamp}.{body}` with this secret, or the Standard Webhooks
    /// headers with `scheme: standard-webhooks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<Signing>,
    /// Retry policy. The first attempt is immediate; `maxRetries` more follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Circuit breaker: after `failureThreshold` consecutive failures deliveries wait (they
    /// are neither attempted nor dropped) until one probe succeeds after `cooldown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
    /// Most deliveries to this Destination in flight at once, across every gateway replica
    /// (default 32). A slow or failing destination fills only its own slots; the others
    /// keep delivering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: Option<u32>,
    /// Most deliveries per second to this Destination, across the gateway. Deliveries over
    /// the rate wait in the queue, in order. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_limit: Option<u32>,
}

/// A Destination's credentials Secret: `key` names the value a template uses; the other
/// types read fixed keys of the Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Name of the Secret, in the Destination's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret, for a template's credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Settings of a `websocket` Destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebsocketDestination {
    /// The channel's name within the namespace (default: the Destination's name). Clients
    /// subscribe to `deliveries:<namespace>/<channelName>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub channel_name: Option<String>,
}

/// Service templates of an http Destination.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DestinationTemplate {
    /// Slack Incoming Webhooks.
    Slack,
    /// Discord channel webhooks.
    Discord,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Datadog HTTP log intake.
    Datadog,
    /// Zapier Catch Hooks.
    Zapier,
    /// Linear, with an API key header.
    Linear,
}

impl DestinationTemplate {
    /// The template as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationTemplate::Slack => "slack",
            DestinationTemplate::Discord => "discord",
            DestinationTemplate::Pagerduty => "pagerduty",
            DestinationTemplate::Datadog => "datadog",
            DestinationTemplate::Zapier => "zapier",
            DestinationTemplate::Linear => "linear",
        }
    }
}

/// Destination provider types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DestinationType {
    /// An HTTP(S) endpoint.
    Http,
    /// An AWS SQS queue.
    Sqs,
    /// An AWS S3 bucket.
    S3,
    /// An AWS EventBridge bus.
    Eventbridge,
    /// A Google Cloud Pub/Sub topic.
    Pubsub,
    /// A Kafka topic.
    Kafka,
    /// A RabbitMQ exchange.
    Rabbitmq,
    /// Clients connected over WebSocket.
    Websocket,
}

impl DestinationType {
    /// The type as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationType::Http => "http",
            DestinationType::Sqs => "sqs",
            DestinationType::S3 => "s3",
            DestinationType::Eventbridge => "eventbridge",
            DestinationType::Pubsub => "pubsub",
            DestinationType::Kafka => "kafka",
            DestinationType::Rabbitmq => "rabbitmq",
            DestinationType::Websocket => "websocket",
        }
    }
}

/// An HTTP endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpDestination {
    /// Absolute `http` or `https` URL that receives the deliveries.
    #[schemars(length(max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",
        "message": "http.url must be an absolute http:// or https:// URL with a host, like https://api.example.com/hooks"
    }]))]
    pub url: String,
    /// HTTP method. Default `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Static headers added to every delivery.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from Secrets, such as an `Authorization` token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_from: Vec<HeaderFromSecret>,
    /// Seconds to wait for the response before the attempt counts as failed. Default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<u32>,
}

/// A header whose value is read from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderFromSecret {
    /// Header name.
    pub name: String,
    /// The Secret key holding the header value.
    pub secret_ref: SecretKeyRef,
}

/// Outbound HMAC signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signing {
    /// `hmac` (default): `X-Hookstream-Signature: sha256=<hex>` over
    /// `{event id}.{timestamp}.{body}`. `standard-webhooks`: `webhook-id` (the event id),
    /// `webhook-timestamp` and `webhook-signature: v1,<base64>`, so receivers verify with the
    /// Standard Webhooks libraries; the secret is then a `whsec_` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<SigningScheme>,
    /// The Secret key holding the signing secret.
    pub secret_ref: SecretKeyRef,
    /// More keys to sign with at the same time, for rotation without downtime: each
    /// delivery carries one signature per key (comma-separated `sha256=` entries, or
    /// space-separated `v1,` entries), so receivers holding either key can verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub secret_refs: Vec<SecretKeyRef>,
    /// HMAC hash of the `hmac` scheme: `sha256` (default) or `sha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<SigningAlgorithm>,
    /// Header carrying the signature of the `hmac` scheme. Default `X-Hookstream-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// Outbound signature schemes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SigningScheme {
    /// hookstream's HMAC header.
    Hmac,
    /// Standard Webhooks (standardwebhooks.com).
    StandardWebhooks,
}

/// HMAC hashes for outbound signing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SigningAlgorithm {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA1.
    Sha1,
}

/// When and how often failed deliveries are retried.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts after the first one, 0 to 20. Default 5. After the last one fails the
    /// delivery is dead-lettered: kept, visible and retryable through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 20))]
    pub max_retries: Option<u32>,
    /// `exponential` (retry k waits `intervals[k-1]`, the last interval repeating),
    /// `linear` (retry k waits `intervals[0] * k`) or `fixed` (always `intervals[0]`).
    /// Default `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Waits between attempts, like `[30s, 5m, 30m, 2h, 24h]` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20), inner(length(max = 32)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(i, i.matches('^([0-9]+(ms|s|m|h|d))+$'))",
        "message": "retry.intervals entries must be durations with units, like 500ms, 30s, 5m, 2h or 1d"
    }]))]
    pub intervals: Option<Vec<String>>,
}

/// Backoff kinds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Each retry takes the next interval of the list.
    Exponential,
    /// The first interval times the retry number.
    Linear,
    /// Always the first interval.
    Fixed,
}

/// Circuit breaker settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerPolicy {
    /// Consecutive failed attempts that open the circuit. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<u32>,
    /// How long an open circuit waits before one probe delivery is tried. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches('^([0-9]+(ms|s|m|h|d))+$')",
        "message": "circuitBreaker.cooldown must be a duration with units, like 30s, 5m or 1h"
    }]))]
    pub cooldown: Option<String>,
}

/// Observed state of a Destination.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// The generation of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The generation the gateway serves: this one when it is valid, the last valid one
    /// while an edit is broken (`Ready` then stays `True` with reason
    /// `LastValidGeneration`), absent when no version is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Ready`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::v1alpha1::common::conditions")]
    pub conditions: Vec<Condition>,
    /// Circuit breaker state (written by the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<CircuitStatus>,
    /// Delivery counters (written by the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<DeliveryCounts>,
    /// When the last delivery attempt finished (written by the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
}

/// Circuit breaker state as reported in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitStatus {
    /// `Closed`, `Open` or `HalfOpen`.
    pub state: CircuitState,
    /// Failed attempts in a row.
    pub consecutive_failures: u32,
}

/// Circuit breaker states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// Deliveries wait for the cooldown.
    Open,
    /// One probe delivery is in flight.
    HalfOpen,
}

/// Delivery counters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounts {
    /// Deliveries that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (each retry counts).
    pub failed: u64,
    /// Deliveries that exhausted their retries.
    pub dead_lettered: u64,
}
