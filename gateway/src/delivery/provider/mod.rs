//! Destination types, one module each behind one trait, [`Provider`]: a provider sends one
//! message and says what came of it. Retries, the circuit breaker, dead-lettering, attempt
//! records and status are the same for every type and live outside this module.
//!
//! Adding a type is a module here, its field in [`Providers`] and its line in
//! [`Providers::for_destination`].

pub mod aws;
pub mod egress;
pub mod eventbridge;
pub mod http;
pub mod kafka;
pub mod pubsub;
pub mod rabbitmq;
pub mod s3;
pub mod sqs;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use std::collections::HashSet;

use hookstream_crds::config::{DestinationConfig, ObjectKey, PayloadValue};
use hookstream_crds::v1alpha1::DestinationType;
use hookstream_transform::sandbox::Sandbox;

use crate::pipeline::transform::Payload;
use crate::store::{AttemptDetail, NewEvent};

/// Header (or message attribute) name and value pairs, in sending order.
pub type Headers = Vec<(String, String)>;

/// One message to send.
pub struct Message<'a> {
    /// The event it carries.
    pub event: &'a NewEvent,
    /// What to send.
    pub payload: Payload,
    /// Attempt number, 1-based over the delivery's life.
    pub attempt: u32,
    /// Send time, unix seconds (signed into the message where the type signs).
    pub timestamp: i64,
    /// Gateways the message will have passed through once sent: the event's hops plus one
    /// (sent as `X-Hookstream-Hops`, or the type's equivalent).
    pub hops: u32,
    /// Where JSONata values of the payload are computed.
    pub sandbox: &'a Sandbox,
}

impl Message<'_> {
    /// The text `value` yields for this message's payload (a key, a group, a routing key);
    /// `None` when it yields nothing. An error is in words, for the attempt record.
    pub async fn value(&self, value: &PayloadValue) -> Result<Option<String>, String> {
        crate::pipeline::value::evaluate(value, &self.payload, self.event, self.sandbox).await
    }
}

/// What came of sending a message.
#[derive(Debug, Default)]
pub struct Sent {
    /// The destination took it.
    pub success: bool,
    /// The failure cannot go away by retrying (no such queue, access denied, too large): the
    /// delivery is dead-lettered at once.
    pub permanent: bool,
    /// Why it failed, in words, without secrets.
    pub error: Option<String>,
    /// What was sent beside the body, secret values redacted.
    pub request_headers: Headers,
    /// What the transport returned.
    pub detail: AttemptDetail,
    /// A delay the destination asked for before the next attempt.
    pub retry_after: Option<Duration>,
    /// Time taken.
    pub latency: Duration,
}

/// A destination type.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Sends `message` to `destination`, waiting at most the destination's timeout.
    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent;

    /// Drops the clients and connections kept for destinations not in `live` (deleted ones),
    /// so that a tenant who creates and deletes Destinations leaves nothing open.
    fn retain(&self, _live: &HashSet<ObjectKey>) {}
}

/// The provider of every destination type this gateway delivers to; connections and clients
/// are shared by every destination of a type.
pub struct Providers {
    http: http::HttpProvider,
    kafka: kafka::KafkaProvider,
    pubsub: pubsub::PubsubProvider,
    rabbitmq: rabbitmq::RabbitmqProvider,
    websocket: websocket::WebsocketProvider,
    sqs: sqs::SqsProvider,
    s3: s3::S3Provider,
    eventbridge: eventbridge::EventbridgeProvider,
}

/// A provider could not be set up at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the {kind} destination provider: {message}")]
pub struct ProviderError {
    /// Destination type.
    pub kind: &'static str,
    /// Why.
    pub message: String,
}

impl Providers {
    /// Sets up every provider; each connects only where `egress` allows; WebSocket
    /// deliveries go to the subscribers `hub` holds.
    pub fn new(
        egress: Arc<egress::Egress>,
        hub: Arc<websocket::Hub>,
    ) -> Result<Providers, ProviderError> {
        Ok(Providers {
            http: http::HttpProvider::new(egress.clone())?,
            kafka: kafka::KafkaProvider::new(egress.clone()),
            pubsub: pubsub::PubsubProvider::new(egress.clone()),
            rabbitmq: rabbitmq::RabbitmqProvider::new(egress.clone())?,
            websocket: websocket::WebsocketProvider::new(hub),
            sqs: sqs::SqsProvider::new(egress.clone())?,
            s3: s3::S3Provider::new(egress.clone())?,
            eventbridge: eventbridge::EventbridgeProvider::new(egress)?,
        })
    }

    /// Drops what every provider keeps for destinations not in `live`.
    pub fn retain(&self, live: &HashSet<ObjectKey>) {
        let all: [&dyn Provider; 6] = [
            &self.sqs,
            &self.s3,
            &self.eventbridge,
            &self.pubsub,
            &self.kafka,
            &self.rabbitmq,
        ];
        for provider in all {
            provider.retain(live);
        }
    }

    /// The provider of `destination`'s type.
    pub fn for_destination(&self, destination: &DestinationConfig) -> &dyn Provider {
        match destination.kind {
            DestinationType::Http => &self.http,
            DestinationType::Sqs => &self.sqs,
            DestinationType::S3 => &self.s3,
            DestinationType::Eventbridge => &self.eventbridge,
            DestinationType::Pubsub => &self.pubsub,
            DestinationType::Kafka => &self.kafka,
            DestinationType::Rabbitmq => &self.rabbitmq,
            DestinationType::Websocket => &self.websocket,
        }
    }
}
