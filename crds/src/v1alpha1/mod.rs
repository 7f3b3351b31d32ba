//! The `hookstream.io/v1alpha1` kinds.
// The CustomResource derive expands each `printcolumn(type_ = ...)` into attributes that
// clippy reads as duplicates.
#![allow(clippy::duplicated_attributes)]

mod alert_rule;
mod broker;
mod common;
mod connection;
mod destination;
mod source;
mod topic;

pub use alert_rule::{
    AlertChannel, AlertRule, AlertRuleSpec, AlertRuleStatus, AlertRuleType, WebhookChannel,
};
pub use broker::{
    EventbridgeDestination, KafkaDestination, KafkaTls, PubsubDestination, RabbitmqDestination,
    RabbitmqMode, S3Destination, S3Format, SaslMechanism, SqsDestination,
};
pub use common::{
    condition, set_condition, Filter, FilterOp, SecretKeyRef, Transform, CONDITION_ACCEPTED,
    CONDITION_READY, CONDITION_RESOLVED_REFS,
};
pub use connection::{Connection, ConnectionSpec, ConnectionStatus};
pub use destination::{
    Backoff, CircuitBreakerPolicy, CircuitState, CircuitStatus, CredentialsRef, DeliveryCounts,
    Destination, DestinationSpec, DestinationStatus, DestinationTemplate, DestinationType,
    HeaderFromSecret, HttpDestination, RetryPolicy, Signing, SigningAlgorithm, SigningScheme,
    WebsocketDestination,
};
pub use source::{
    Dedup, DedupStrategy, IpFilter, RateLimit, SchemaAction, SchemaValidation, SignatureEncoding,
    Source, SourceSpec, SourceStatus, SourceTemplate, Verification, VerificationType,
};
pub use topic::{Subscription, Topic, TopicSpec, TopicStatus};
