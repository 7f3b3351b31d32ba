//! The compiled routing config: what the gateway runs.
//!
//! Every value here is validated and resolved (durations in milliseconds, CIDRs parsed,
//! Secret values looked up), so the gateway never re-checks a manifest. The operator stores
//! this config, serialized as JSON, in the gateway config Secret; standalone gateways build it
//! from the manifests folder. Secret values are kept as [`SecretValue`], whose `Debug` output
//! is redacted so that they cannot reach a log by accident.
//!
//! The values the operator and the gateway must agree on are defined here too: the config
//! Secret's key ([`CONFIG_KEY`]) and the ingest and publish paths ([`INGEST_ROUTE`],
//! [`PUBLISH_ROUTE`], [`ingest_path`], [`publish_path`]).

use std::fmt;

use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::broker::{
    AwsConfig, AwsCredentials, EventbridgeConfig, KafkaConfig, KafkaSasl, PayloadValue,
    PubsubConfig, RabbitmqConfig, S3Config, SqsConfig,
};
use crate::v1alpha1::{
    Backoff, DedupStrategy, DestinationType, Filter, SchemaAction, SignatureEncoding,
    SigningAlgorithm, SigningScheme, VerificationType,
};

/// Key of the compiled config (JSON) in the gateway config Secret: the operator writes the
/// config there and the gateway reads it from there.
pub const CONFIG_KEY: &str = "config.json";

/// The gateway's ingest route, as an axum path pattern; [`ingest_path`] fills it in.
pub const INGEST_ROUTE: &str = "/v1/ingest/{namespace}/{source}";
/// The gateway's topic publish route, as an axum path pattern; [`publish_path`] fills it in.
pub const PUBLISH_ROUTE: &str = "/v1/topics/{namespace}/{topic}/publish";

/// The path a Source receives webhooks on: [`INGEST_ROUTE`] for one Source,
/// `/v1/ingest/{namespace}/{name}`.
pub fn ingest_path(namespace: &str, name: &str) -> String {
    format!("/v1/ingest/{namespace}/{name}")
}

/// The path events are published to a Topic on: [`PUBLISH_ROUTE`] for one Topic,
/// `/v1/topics/{namespace}/{name}/publish`.
pub fn publish_path(namespace: &str, name: &str) -> String {
    format!("/v1/topics/{namespace}/{name}/publish")
}

/// Everything the gateway routes: only objects that compiled without error.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct GatewayConfig {
    /// Ingest endpoints.
    pub sources: Vec<SourceConfig>,
    /// Delivery targets.
    pub destinations: Vec<DestinationConfig>,
    /// Routes from a Source to a Destination.
    pub connections: Vec<ConnectionConfig>,
    /// Publish endpoints with their subscriptions.
    pub topics: Vec<TopicConfig>,
}

/// The namespace and name of an object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `NAMESPACE/NAME`, as flags name objects.
impl std::str::FromStr for ObjectKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ObjectKey::new(ns, name))
            }
            _ => Err(format!("{text:?} is not of the form NAMESPACE/NAME")),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Bytes read from a Secret. Serialized as base64; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(pub Vec<u8>);

impl SecretValue {
    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(SecretValue)
            .map_err(serde::de::Error::custom)
    }
}

/// A compiled Source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// Namespace and name; the ingest path is [`ingest_path`] of them.
    pub key: ObjectKey,
    /// Signature check, if any.
    pub verification: Option<VerificationConfig>,
    /// Deduplication, if any.
    pub dedup: Option<DedupConfig>,
    /// Client address filter, if any.
    pub ip_filter: Option<IpFilterConfig>,
    /// Body validation, if any.
    pub schema: Option<SchemaConfig>,
    /// Body size limit set by the Source (the gateway's own limit still applies).
    pub max_body_bytes: Option<u64>,
    /// Request rate limit, if any.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Store credential headers (`Authorization`, `Cookie`, API-key headers) as received
    /// instead of `[redacted]`.
    #[serde(default)]
    pub keep_credential_headers: bool,
}

/// A compiled rate limit.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained requests per second, at least 1.
    pub per_second: u32,
    /// Burst size, at least 1.
    pub burst: u32,
}

/// A compiled signature check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VerificationConfig {
    /// Scheme.
    pub scheme: VerificationType,
    /// Keys: a signature made with any of them is accepted. For `standard-webhooks` these are
    /// the decoded key bytes (without `whsec_`).
    pub secrets: Vec<SecretValue>,
    /// Header carrying the signature (lowercase).
    pub header: String,
    /// Accepted encoding of an HMAC signature; `None` accepts hex and base64.
    pub encoding: Option<SignatureEncoding>,
    /// Required prefix of an HMAC signature; `None` accepts an optional `sha256=`/`sha1=`.
    pub prefix: Option<String>,
    /// Largest accepted age or skew of a signed timestamp, in seconds.
    pub tolerance_seconds: u64,
}

/// Compiled deduplication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DedupConfig {
    /// Strategy.
    pub strategy: DedupStrategy,
    /// Header name (lowercase) or body path, for the field strategies.
    pub field: Option<String>,
    /// Window in seconds.
    pub window_seconds: u64,
}

/// Compiled client address filter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct IpFilterConfig {
    /// When not empty, only these networks may send.
    pub allow: Vec<IpNet>,
    /// These networks may never send.
    pub deny: Vec<IpNet>,
}

/// Compiled body validation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SchemaConfig {
    /// Reject or warn.
    pub action: SchemaAction,
    /// The JSON Schema, known to compile.
    pub json_schema: serde_json::Value,
}

/// A compiled Destination.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DestinationConfig {
    /// Namespace and name.
    pub key: ObjectKey,
    /// Provider type.
    pub kind: DestinationType,
    /// HTTP settings, for `http`.
    pub http: Option<HttpConfig>,
    /// WebSocket settings, for `websocket`.
    #[serde(default)]
    pub websocket: Option<WebsocketConfig>,
    /// SQS settings, for `sqs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<SqsConfig>,
    /// S3 settings, for `s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// EventBridge settings, for `eventbridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventbridge: Option<EventbridgeConfig>,
    /// Pub/Sub settings, for `pubsub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsub: Option<PubsubConfig>,
    /// Kafka settings, for `kafka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
    /// RabbitMQ settings, for `rabbitmq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<RabbitmqConfig>,
    /// Outbound signing.
    pub signing: Option<SigningConfig>,
    /// Retry policy with defaults applied.
    pub retry: RetryConfig,
    /// Circuit breaker with defaults applied.
    pub circuit: CircuitConfig,
    /// JSONata applied to every delivery after the route's transform (the Destination's own
    /// or its template's).
    #[serde(default)]
    pub payload_transform: Option<String>,
    /// A template's credential, bound as `$credential` in the payload transform.
    #[serde(default)]
    pub credential: Option<SecretValue>,
    /// Most deliveries in flight at once, across the gateway.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Most deliveries per second, across the gateway.
    #[serde(default)]
    pub rate_limit: Option<u32>,
}

/// Time limit of an attempt of a type without one of its own (websocket).
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

impl DestinationConfig {
    /// The time limit of one attempt, from the settings of the Destination's type.
    pub fn timeout_ms(&self) -> u64 {
        let of_type = match self.kind {
            DestinationType::Http => self.http.as_ref().map(|c| c.timeout_ms),
            DestinationType::Sqs => self.sqs.as_ref().map(|c| c.timeout_ms),
            DestinationType::S3 => self.s3.as_ref().map(|c| c.timeout_ms),
            DestinationType::Eventbridge => self.eventbridge.as_ref().map(|c| c.timeout_ms),
            DestinationType::Pubsub => self.pubsub.as_ref().map(|c| c.timeout_ms),
            DestinationType::Kafka => self.kafka.as_ref().map(|c| c.timeout_ms),
            DestinationType::Rabbitmq => self.rabbitmq.as_ref().map(|c| c.timeout_ms),
            DestinationType::Websocket => None,
        };
        of_type.unwrap_or(DEFAULT_TIMEOUT_MS)
    }
}

/// Deliveries in flight at once to a Destination that sets no `concurrency`.
pub const DEFAULT_CONCURRENCY: u32 = 32;

fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}

/// Compiled WebSocket destination settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WebsocketConfig {
    /// The channel clients subscribe to: `deliveries:<namespace>/<channel name>`.
    pub channel: String,
}

/// Compiled HTTP destination settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpConfig {
    /// Target URL.
    pub url: String,
    /// Method, uppercase.
    pub method: String,
    /// Static headers.
    pub headers: Vec<(String, String)>,
    /// Headers whose values came from Secrets.
    pub secret_headers: Vec<(String, SecretValue)>,
    /// Response timeout in milliseconds.
    pub timeout_ms: u64,
}

/// Compiled outbound signing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SigningConfig {
    /// Scheme.
    pub scheme: SigningScheme,
    /// Signing keys, the primary first; one signature is sent per key. For
    /// `standard-webhooks` these are the decoded key bytes (without `whsec_`).
    pub secrets: Vec<SecretValue>,
    /// HMAC hash (`hmac` scheme).
    pub algorithm: SigningAlgorithm,
    /// Header name (`hmac` scheme).
    pub header: String,
}

/// A retry policy with defaults applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Attempts after the first.
    pub max_retries: u32,
    /// Backoff kind.
    pub backoff: Backoff,
    /// Intervals in milliseconds, never empty.
    pub intervals_ms: Vec<u64>,
}

impl RetryConfig {
    /// How long to wait before retry number `retry` (1 for the first retry).
    pub fn delay_ms(&self, retry: u32) -> u64 {
        let first = self.intervals_ms.first().copied().unwrap_or(0);
        match self.backoff {
            Backoff::Fixed => first,
            Backoff::Linear => first.saturating_mul(u64::from(retry.max(1))),
            Backoff::Exponential => {
                let index =
                    (retry.max(1) as usize - 1).min(self.intervals_ms.len().saturating_sub(1));
                self.intervals_ms.get(index).copied().unwrap_or(first)
            }
        }
    }
}

/// A circuit breaker policy with defaults applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CircuitConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// Milliseconds before a probe is sent.
    pub cooldown_ms: u64,
}

/// A compiled Connection.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ConnectionConfig {
    /// Namespace and name.
    pub key: ObjectKey,
    /// Source name (same namespace).
    pub source: String,
    /// Destination name (same namespace).
    pub destination: String,
    /// Validated filters.
    pub filters: Vec<Filter>,
    /// JSONata source, known to compile.
    pub transform: Option<String>,
    /// No new events are routed; deliveries already queued still go out.
    #[serde(default)]
    pub paused: bool,
}

/// A compiled Topic.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TopicConfig {
    /// Namespace and name.
    pub key: ObjectKey,
    /// Subscribers.
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// A compiled Topic subscription.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SubscriptionConfig {
    /// Destination name (same namespace).
    pub destination: String,
    /// Validated filters.
    pub filters: Vec<Filter>,
    /// JSONata source, known to compile.
    pub transform: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(backoff: Backoff, intervals: &[u64]) -> RetryConfig {
        RetryConfig {
            max_retries: 5,
            backoff,
            intervals_ms: intervals.to_vec(),
        }
    }

    #[test]
    fn exponential_takes_the_next_interval_and_repeats_the_last() {
        let p = policy(Backoff::Exponential, &[30, 300, 1800]);
        assert_eq!(
            [1, 2, 3, 4, 5].map(|k| p.delay_ms(k)),
            [30, 300, 1800, 1800, 1800]
        );
    }

    #[test]
    fn linear_multiplies_the_first_interval() {
        let p = policy(Backoff::Linear, &[100, 999]);
        assert_eq!([1, 2, 3].map(|k| p.delay_ms(k)), [100, 200, 300]);
    }

    #[test]
    fn fixed_always_waits_the_first_interval() {
        let p = policy(Backoff::Fixed, &[250, 999]);
        assert_eq!([1, 2, 7].map(|k| p.delay_ms(k)), [250, 250, 250]);
    }

    #[test]
    fn paths_fill_in_their_routes() {
        assert_eq!(ingest_path("shop", "orders"), "/v1/ingest/shop/orders");
        assert_eq!(
            ingest_path("shop", "orders"),
            INGEST_ROUTE
                .replace("{namespace}", "shop")
                .replace("{source}", "orders")
        );
        assert_eq!(
            publish_path("shop", "orders"),
            "/v1/topics/shop/orders/publish"
        );
        assert_eq!(
            publish_path("shop", "orders"),
            PUBLISH_ROUTE
                .replace("{namespace}", "shop")
                .replace("{topic}", "orders")
        );
    }

    #[test]
    fn secret_values_never_print() {
        let s = SecretValue(b"hunter2".to_vec());
        assert!(!format!("{s:?}").contains("hunter2"));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<SecretValue>(&json).unwrap(), s);
    }
}
