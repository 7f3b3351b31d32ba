//! The `kafka` destination type: each delivery becomes one record on a Kafka topic, sent with
//! the native protocol through librdkafka's idempotent producer (`acks=all`), and succeeds
//! once the brokers acknowledged it.
//!
//! The record's value is the payload body and its key the Destination's `key` (default: the
//! event id). Its headers are `hookstream-event-id`, `hookstream-source-id`
//! (`namespace/name` of the Source), `hookstream-hops` and, when the payload has one,
//! `content-type`.
//!
//! Each Destination has its own producer, kept while its settings stay the same and rebuilt
//! when they change. librdkafka retries within an attempt on its own; an attempt ends with
//! the delivery report or after the Destination's timeout (`message.timeout.ms`).
//!
//! Egress: every connection a producer makes, to a bootstrap server or to a broker the cluster
//! advertises, is checked against the egress policy at the moment librdkafka connects, with the
//! exact address it resolved (the connect hook of `vendor/rdkafka`): a name whose answer changes
//! after a check, or a broker advertised later, reaches no denied address. A refused connection
//! fails the attempt permanently. Before that, so that a denied Destination fails at once and
//! in clear words rather than when its record times out, every address the bootstrap servers
//! resolve to is checked before each attempt, and the advertised brokers before a new producer
//! sends its first record (and again after any failure).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hookstream_crds::config::{DestinationConfig, KafkaConfig, ObjectKey};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::egress::Egress;
use super::{Headers, Message, Provider, Sent};
use crate::store::AttemptDetail;

/// Record header with the event's id.
pub const EVENT_ID_HEADER: &str = "hookstream-event-id";
/// Record header with the Source, `namespace/name`.
pub const SOURCE_ID_HEADER: &str = "hookstream-source-id";
/// Record header with the number of gateways the event has passed through.
pub const HOPS_HEADER: &str = "hookstream-hops";
/// Shown instead of a SASL user name or password that appears in a librdkafka message.
const REDACTED: &str = "[redacted]";
/// Time given to librdkafka beyond the destination's timeout to report a record it gave up
/// on, before the attempt stops waiting for the report.
const REPORT_GRACE: Duration = Duration::from_secs(5);
/// Longest wait for an answer to one request to a broker (librdkafka's default).
const MAX_REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Delivers to Kafka topics with one producer per Destination.
pub struct KafkaProvider {
    egress: Arc<Egress>,
    producers: Mutex<HashMap<ObjectKey, Arc<Cached>>>,
}

/// A Destination's producer and the settings it was made with.
struct Cached {
    config: KafkaConfig,
    producer: FutureProducer<Context>,
    /// What the producer's client reported.
    diagnostics: Arc<Diagnostics>,
    /// The advertised brokers passed the egress check and the topic exists.
    verified: std::sync::atomic::AtomicBool,
}

/// Why an attempt failed: the words for the record and whether retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    permanent: bool,
    error: String,
}

impl Failure {
    fn retry(error: String) -> Failure {
        Failure {
            permanent: false,
            error,
        }
    }

    fn permanent(error: String) -> Failure {
        Failure {
            permanent: true,
            error,
        }
    }
}

impl KafkaProvider {
    /// A provider whose producers connect only where `egress` allows.
    pub fn new(egress: Arc<Egress>) -> KafkaProvider {
        KafkaProvider {
            egress,
            producers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Arc<Cached>>> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Destination's producer: the cached one while its settings are unchanged, else a
    /// new one.
    fn producer(&self, key: &ObjectKey, config: &KafkaConfig) -> Result<Arc<Cached>, Failure> {
        let mut producers = self.lock();
        if let Some(cached) = producers.get(key) {
            if cached.config == *config {
                return Ok(cached.clone());
            }
        }
        let diagnostics = Arc::new(Diagnostics::new(config));
        let producer = build_producer(key, config, diagnostics.clone(), self.egress.clone())?;
        let cached = Arc::new(Cached {
            config: config.clone(),
            producer,
            diagnostics,
            verified: std::sync::atomic::AtomicBool::new(false),
        });
        producers.insert(key.clone(), cached.clone());
        Ok(cached)
    }

    /// Drops the Destination's producer when it is `cached` (it cannot send any more).
    fn forget(&self, key: &ObjectKey, cached: &Arc<Cached>) {
        let mut producers = self.lock();
        if producers.get(key).is_some_and(|c| Arc::ptr_eq(c, cached)) {
            producers.remove(key);
        }
    }

    /// Checks every address each `host:port` in `servers` resolves to.
    async fn check_servers(&self, servers: &[String]) -> Result<(), Failure> {
        for server in servers {
            let addresses: Vec<SocketAddr> = match tokio::net::lookup_host(server.as_str()).await {
                Ok(addresses) => addresses.collect(),
                Err(e) => {
                    return Err(Failure::retry(format!(
                        "cannot resolve Kafka broker {server}: {e}"
                    )))
                }
            };
            for address in addresses {
                self.egress
                    .check(address)
                    .map_err(|e| Failure::permanent(format!("Kafka broker {server}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Before a producer's first record: the topic exists and every broker the cluster
    /// advertises is allowed by the egress policy.
    async fn verify(&self, cached: &Cached, timeout: Duration) -> Result<(), Failure> {
        if cached.verified.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let started = Instant::now();
        let producer = cached.producer.clone();
        let topic = cached.config.topic.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Timeout::After(timeout))?;
            let brokers: Vec<String> = metadata
                .brokers()
                .iter()
                .map(|b| format!("{}:{}", b.host(), b.port()))
                .collect();
            let topic_error = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .and_then(|t| t.error())
                .map(RDKafkaErrorCode::from);
            Ok::<_, KafkaError>((brokers, topic_error))
        })
        .await;
        let (brokers, topic_error) = match fetched {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return Err(classify(&e, cached, started)),
            Err(e) => {
                return Err(Failure::retry(format!(
                    "reading Kafka metadata failed: {e}"
                )))
            }
        };
        self.check_servers(&brokers).await?;
        if let Some(code) = topic_error {
            return Err(topic_failure(&cached.config.topic, code));
        }
        cached
            .verified
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

#[async_trait]
impl Provider for KafkaProvider {
    fn retain(&self, live: &std::collections::HashSet<ObjectKey>) {
        let gone: Vec<Arc<Cached>> = {
            let mut producers = self.lock();
            let keys: Vec<ObjectKey> = producers
                .keys()
                .filter(|k| !live.contains(k))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| producers.remove(k)).collect()
        };
        // Destroying a producer waits for librdkafka's threads: not on the runtime's.
        if !gone.is_empty() {
            tokio::task::spawn_blocking(move || drop(gone));
        }
    }

    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let Some(config) = &destination.kafka else {
            return Sent {
                permanent: true,
                error: Some("destination has no kafka settings".to_owned()),
                ..Sent::default()
            };
        };
        let started = Instant::now();
        let key = match record_key(&message, config).await {
            Ok(key) => key,
            Err(e) => return failed(Failure::permanent(e), Vec::new(), started),
        };
        let headers = record_headers(&message);
        let timeout = Duration::from_millis(destination.timeout_ms());
        if let Err(f) = self.check_servers(&config.bootstrap_servers).await {
            return failed(f, headers, started);
        }
        let cached = match self.producer(&destination.key, config) {
            Ok(cached) => cached,
            Err(f) => return failed(f, headers, started),
        };
        if let Err(f) = self.verify(&cached, timeout).await {
            return failed(f, headers, started);
        }
        match send(&cached, &key, &headers, &message.payload.body, timeout).await {
            Ok((partition, offset)) => Sent {
                success: true,
                request_headers: headers,
                detail: AttemptDetail::Kafka {
                    topic: config.topic.clone(),
                    partition,
                    offset,
                },
                latency: started.elapsed(),
                ..Sent::default()
            },
            Err(f) => {
                cached
                    .verified
                    .store(false, std::sync::atomic::Ordering::Release);
                if cached.producer.client().fatal_error().is_some() {
                    self.forget(&destination.key, &cached);
                }
                failed(f, headers, started)
            }
        }
    }
}

/// The record key: the Destination's `key` for the message's payload, else the event id.
async fn record_key(message: &Message<'_>, config: &KafkaConfig) -> Result<String, String> {
    let Some(value) = &config.key else {
        return Ok(message.event.id.clone());
    };
    let key = message
        .value(value)
        .await
        .map_err(|e| format!("computing the Kafka record key failed: {e}"))?;
    Ok(key.unwrap_or_else(|| message.event.id.clone()))
}

/// A failed attempt's result.
fn failed(failure: Failure, headers: Headers, started: Instant) -> Sent {
    Sent {
        success: false,
        permanent: failure.permanent,
        error: Some(failure.error),
        request_headers: headers,
        latency: started.elapsed(),
        ..Sent::default()
    }
}

/// The headers every record carries.
fn record_headers(message: &Message<'_>) -> Headers {
    let event = message.event;
    let mut headers = vec![
        (EVENT_ID_HEADER.to_owned(), event.id.clone()),
        (
            SOURCE_ID_HEADER.to_owned(),
            format!("{}/{}", event.namespace, event.source),
        ),
        (HOPS_HEADER.to_owned(), message.hops.to_string()),
    ];
    if let Some(content_type) = &message.payload.content_type {
        headers.push(("content-type".to_owned(), content_type.clone()));
    }
    headers
}

/// Sends one record and waits for its delivery report: partition and offset, or why not.
async fn send(
    cached: &Cached,
    key: &str,
    headers: &Headers,
    body: &[u8],
    timeout: Duration,
) -> Result<(i32, i64), Failure> {
    let started = Instant::now();
    let mut owned = OwnedHeaders::new_with_capacity(headers.len());
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    let record = FutureRecord::to(&cached.config.topic)
        .key(key)
        .payload(body)
        .headers(owned);
    // The queue wait is part of the attempt; librdkafka's message timeout bounds the rest.
    let report = tokio::time::timeout(
        timeout + REPORT_GRACE,
        cached.producer.send(record, Timeout::After(timeout)),
    )
    .await;
    match report {
        Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
        Ok(Err((e, _))) => Err(classify(&e, cached, started)),
        Err(_) => Err(Failure::retry(format!(
            "no delivery report from Kafka within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// What a librdkafka error means for the attempt. A timeout or lost connection is explained
/// by the last error the client reported since the attempt began (a refused connection,
/// failed authentication, which is permanent).
fn classify(error: &KafkaError, cached: &Cached, since: Instant) -> Failure {
    let context = &cached.diagnostics;
    let code = error.rdkafka_error_code();
    if let Some(why) = context.denied_since(since) {
        return Failure::permanent(why);
    }
    let recent = context.last_error_since(Some(since));
    let failure = match (code, recent) {
        (Some(code), _) if is_permanent(code) => {
            if is_topic_error(code) {
                topic_failure(&cached.config.topic, code)
            } else {
                Failure::permanent(format!("Kafka refused the record: {error}"))
            }
        }
        // The brokers refused the credentials: every later try fails the same way.
        (_, Some((recent_code, reason))) if is_permanent(recent_code) => {
            Failure::permanent(format!("{error} ({reason})"))
        }
        (_, Some((_, reason))) if is_unreachable(code) => {
            Failure::retry(format!("{error} ({reason})"))
        }
        // librdkafka reports an error again only once the broker's state changes: a broker
        // still failing the same way (a TLS handshake) is explained by the last report.
        (_, None) if is_unreachable(code) => match context.last_error_since(None) {
            Some((_, reason)) => Failure::retry(format!("{error} (last reported: {reason})")),
            None => Failure::retry(error.to_string()),
        },
        _ => Failure::retry(error.to_string()),
    };
    Failure {
        error: context.redact(&failure.error),
        ..failure
    }
}

/// An error about the topic itself.
fn topic_failure(topic: &str, code: RDKafkaErrorCode) -> Failure {
    let error = match code {
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            format!("Kafka topic {topic} does not exist ({code})")
        }
        RDKafkaErrorCode::TopicAuthorizationFailed => {
            format!("not authorized to write to Kafka topic {topic} ({code})")
        }
        other => format!("Kafka topic {topic}: {other}"),
    };
    Failure {
        permanent: is_permanent(code),
        error,
    }
}

/// Codes about the topic rather than the record.
fn is_topic_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
    )
}

/// Whether retrying cannot help: the topic is missing or forbidden, the record is refused,
/// the credentials are wrong. Everything else (connections, timeouts, leaders and replicas
/// not available yet, throttling) is worth retrying.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidRequiredAcks
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState
    )
}

/// Whether the error is the attempt running out of time or losing its connection, whose
/// cause the client's last reported error tells.
fn is_unreachable(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::TimedOutQueue
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
        )
    )
}

/// The producer of `config`, for the Destination `key`.
fn build_producer(
    key: &ObjectKey,
    config: &KafkaConfig,
    diagnostics: Arc<Diagnostics>,
    egress: Arc<Egress>,
) -> Result<FutureProducer<Context>, Failure> {
    let mut client = ClientConfig::new();
    for (name, value) in producer_settings(config) {
        client.set(name, value);
    }
    if let Some(sasl) = &config.sasl {
        client.set("sasl.mechanism", sasl.mechanism.as_str());
        client.set(
            "sasl.username",
            String::from_utf8_lossy(sasl.username.expose()),
        );
        client.set(
            "sasl.password",
            String::from_utf8_lossy(sasl.password.expose()),
        );
    }
    if let Some(ca) = &config.tls_ca {
        client.set("ssl.ca.pem", String::from_utf8_lossy(ca.expose()));
    }
    client.set_log_level(RDKafkaLogLevel::Warning);
    let context = Context {
        destination: format!("{}/{}", key.namespace, key.name),
        diagnostics,
        egress,
    };
    client
        .create_with_context(context)
        .map_err(|e| Failure::permanent(format!("cannot set up the Kafka producer: {e}")))
}

/// The producer's settings other than secrets.
fn producer_settings(config: &KafkaConfig) -> Vec<(&'static str, String)> {
    let timeout = config.timeout_ms.max(1);
    let protocol = match (config.tls, config.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    let mut settings = vec![
        ("bootstrap.servers", config.bootstrap_servers.join(",")),
        ("client.id", "hookstream".to_owned()),
        ("enable.idempotence", "true".to_owned()),
        ("acks", "all".to_owned()),
        ("security.protocol", protocol.to_owned()),
        ("message.timeout.ms", timeout.to_string()),
        (
            "request.timeout.ms",
            timeout.min(MAX_REQUEST_TIMEOUT_MS).to_string(),
        ),
        // A topic the cluster does not know fails the record within the attempt.
        (
            "topic.metadata.propagation.max.ms",
            timeout.min(MAX_REQUEST_TIMEOUT_MS).to_string(),
        ),
        ("linger.ms", "1".to_owned()),
    ];
    if config.tls && config.tls_ca.is_none() {
        // The system's roots, wherever the distribution keeps them.
        settings.push(("ssl.ca.location", "probe".to_owned()));
    }
    settings
}

/// A producer's hooks: librdkafka's log and errors go to the gateway's log, with the
/// Destination named and SASL credentials redacted; each connection is checked against the
/// egress policy.
struct Context {
    destination: String,
    diagnostics: Arc<Diagnostics>,
    egress: Arc<Egress>,
}

/// The last error a producer's client reported, kept to explain a record that timed out,
/// and the credentials to keep out of every message.
struct Diagnostics {
    secrets: Vec<String>,
    /// The last error, and the last one retrying cannot help with (failed authentication,
    /// which the next "all brokers down" must not hide).
    last_error: Mutex<[Option<Reported>; 2]>,
    /// The last connection the egress policy refused: when, and why.
    denied: Mutex<Option<(Instant, String)>>,
}

/// An error the client reported: when, its code and its words.
type Reported = (Instant, RDKafkaErrorCode, String);

impl Diagnostics {
    fn new(config: &KafkaConfig) -> Diagnostics {
        let secrets = config
            .sasl
            .iter()
            .flat_map(|s| [s.username.expose(), s.password.expose()])
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .filter(|s| !s.is_empty())
            .collect();
        Diagnostics {
            secrets,
            last_error: Mutex::new([None, None]),
            denied: Mutex::new(None),
        }
    }

    /// `text` without the SASL user name and password.
    fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(text.to_owned(), |t, secret| {
            t.replace(secret.as_str(), REDACTED)
        })
    }

    /// Keeps the error the client just reported. "All brokers are down" follows the error
    /// that brought the last one down (a refused connection, a failed TLS handshake), however
    /// long the client took to give up on it: it never replaces that error, which says why.
    /// librdkafka reports a broker's error again only when its state changes, so that error
    /// stays the explanation until another one is reported.
    fn record(&self, code: RDKafkaErrorCode, reason: String) {
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let slot = usize::from(is_permanent(code));
        if code == RDKafkaErrorCode::AllBrokersDown && last[slot].is_some() {
            return;
        }
        last[slot] = Some((Instant::now(), code, reason));
    }

    /// Keeps the refusal of a connection by the egress policy.
    fn record_denied(&self, why: String) {
        *self.denied.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), why));
    }

    /// Why the egress policy refused a connection after `since`, if it did.
    fn denied_since(&self, since: Instant) -> Option<String> {
        let denied = self.denied.lock().unwrap_or_else(|p| p.into_inner());
        denied
            .as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, why)| why.clone())
    }

    /// The error the client reported after `since` (`None`: ever) that explains a failure
    /// best: the last permanent one, else the last one.
    fn last_error_since(&self, since: Option<Instant>) -> Option<(RDKafkaErrorCode, String)> {
        let last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let [retryable, permanent] = &*last;
        permanent
            .iter()
            .chain(retryable)
            .find(|(at, _, _)| since.is_none_or(|since| *at >= since))
            .map(|(_, code, reason)| (*code, reason.clone()))
    }
}

impl ClientContext for Context {
    const ENABLE_CONNECT_FILTER: bool = true;

    fn allow_connect(&self, broker: &str, address: SocketAddr) -> bool {
        let Err(denied) = self.egress.check(address) else {
            return true;
        };
        let broker = self.diagnostics.redact(broker);
        let why = format!("Kafka broker {broker} at {address}: {denied}");
        tracing::warn!(destination = %self.destination, "kafka connection refused: {why}");
        self.diagnostics.record_denied(why);
        false
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let message = self.diagnostics.redact(message);
        let destination = self.destination.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(destination, facility, "kafka client: {message}")
            }
            _ => tracing::debug!(destination, facility, "kafka client: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.diagnostics.redact(reason);
        tracing::debug!(destination = %self.destination, "kafka client error: {error}: {reason}");
        if let Some(code) = error.rdkafka_error_code() {
            self.diagnostics.record(code, reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::config::{KafkaSasl, SecretValue};
    use hookstream_crds::v1alpha1::SaslMechanism;

    fn config() -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: vec!["a:9092".to_owned(), "b:9092".to_owned()],
            topic: "orders".to_owned(),
            key: None,
            tls: false,
            tls_ca: None,
            sasl: None,
            timeout_ms: 5_000,
        }
    }

    fn setting(config: &KafkaConfig, name: &str) -> Option<String> {
        producer_settings(config)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn producer_is_idempotent_and_bounded_by_the_timeout() {
        let c = config();
        assert_eq!(setting(&c, "bootstrap.servers").unwrap(), "a:9092,b:9092");
        assert_eq!(setting(&c, "enable.idempotence").unwrap(), "true");
        assert_eq!(setting(&c, "acks").unwrap(), "all");
        assert_eq!(setting(&c, "message.timeout.ms").unwrap(), "5000");
        assert_eq!(setting(&c, "request.timeout.ms").unwrap(), "5000");
        assert_eq!(setting(&c, "security.protocol").unwrap(), "plaintext");
    }

    #[test]
    fn security_protocol_follows_tls_and_sasl() {
        let sasl = KafkaSasl {
            mechanism: SaslMechanism::ScramSha256,
            username: SecretValue(b"user".to_vec()),
            password: SecretValue(b"pass".to_vec()),
        };
        let mut c = config();
        c.tls = true;
        assert_eq!(setting(&c, "security.protocol").unwrap(), "ssl");
        assert_eq!(setting(&c, "ssl.ca.location").unwrap(), "probe");
        c.sasl = Some(sasl.clone());
        assert_eq!(setting(&c, "security.protocol").unwrap(), "sasl_ssl");
        c.tls = false;
        assert_eq!(setting(&c, "security.protocol").unwrap(), "sasl_plaintext");
        assert!(
            producer_settings(&c)
                .iter()
                .all(|(_, v)| !v.contains("pass")),
            "secrets are set apart from the listed settings"
        );
    }

    #[test]
    fn errors_are_classified() {
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::SaslAuthenticationFailed,
            RDKafkaErrorCode::Authentication,
        ] {
            assert!(is_permanent(code), "{code:?} is permanent");
        }
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::NotEnoughReplicas,
            RDKafkaErrorCode::BrokerNotAvailable,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert!(!is_permanent(code), "{code:?} is worth retrying");
        }
    }

    #[test]
    fn all_brokers_down_never_hides_the_error_that_explains_it() {
        let diagnostics = Diagnostics::new(&config());
        diagnostics.record(
            RDKafkaErrorCode::AllBrokersDown,
            "1/1 brokers are down".into(),
        );
        assert_eq!(
            diagnostics.last_error_since(None).unwrap().1,
            "1/1 brokers are down",
            "with nothing else reported, it is all there is to say"
        );
        let handshake = "SSL handshake failed: certificate verify failed";
        diagnostics.record(RDKafkaErrorCode::BrokerTransportFailure, handshake.into());
        let since = Instant::now();
        diagnostics.record(
            RDKafkaErrorCode::AllBrokersDown,
            "1/1 brokers are down".into(),
        );
        assert_eq!(diagnostics.last_error_since(None).unwrap().1, handshake);
        assert_eq!(
            diagnostics.last_error_since(Some(since)),
            None,
            "nothing new was reported since"
        );
    }

    #[test]
    fn credentials_are_redacted_from_client_messages() {
        let mut c = config();
        c.sasl = Some(KafkaSasl {
            mechanism: SaslMechanism::Plain,
            username: SecretValue(b"alice".to_vec()),
            password: SecretValue(b"s3cret-pw".to_vec()),
        });
        let diagnostics = Diagnostics::new(&c);
        assert_eq!(
            diagnostics.redact("user alice with s3cret-pw failed"),
            "user [redacted] with [redacted] failed"
        );
    }

    /// The shared test broker's PLAINTEXT address (`scripts/kafka-up`).
    fn test_broker() -> String {
        if let Ok(address) = std::env::var("HOOKSTREAM_TEST_KAFKA") {
            if !address.is_empty() {
                return address;
            }
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-up");
        let output = std::process::Command::new(script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/kafka-up runs");
        assert!(output.status.success(), "scripts/kafka-up failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout.lines().last().unwrap_or_default().trim().to_owned()
    }

    /// Sends one record to `topic` through a producer made with `egress` and none of the
    /// checks an attempt makes before it sends.
    async fn send_unchecked(
        bootstrap: &str,
        topic: &str,
        egress: Arc<Egress>,
    ) -> Result<(i32, i64), Failure> {
        let config = KafkaConfig {
            bootstrap_servers: vec![bootstrap.to_owned()],
            topic: topic.to_owned(),
            timeout_ms: 5_000,
            ..config()
        };
        let key = ObjectKey {
            namespace: "team-a".to_owned(),
            name: "out".to_owned(),
        };
        let diagnostics = Arc::new(Diagnostics::new(&config));
        let producer = build_producer(&key, &config, diagnostics.clone(), egress).unwrap();
        let cached = Cached {
            config,
            producer,
            diagnostics,
            verified: std::sync::atomic::AtomicBool::new(true),
        };
        let timeout = Duration::from_millis(cached.config.timeout_ms);
        let sent = send(&cached, "k", &Vec::new(), b"{}", timeout).await;
        tokio::task::spawn_blocking(move || drop(cached))
            .await
            .unwrap();
        sent
    }

    /// Creates `topic` with one partition.
    async fn create_topic(bootstrap: &str, topic: &str) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let created = admin
            .create_topics(
                &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }

    /// What the checks before an attempt cannot see (a DNS answer that changes after them, a
    /// broker advertised later) still reaches no denied address: the connection itself is
    /// refused, and the attempt fails permanently naming the broker and its address.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_connect_hook_refuses_denied_addresses_past_the_checks() {
        let bootstrap = test_broker();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let topic = format!("connect-hook-{}", now.unwrap_or_default().as_nanos());
        create_topic(&bootstrap, &topic).await;
        let loopback = hookstream_crds::egress::parse_net("127.0.0.0/8").unwrap();
        let denying = Egress::new(hookstream_crds::egress::EgressPolicy::new(
            vec![loopback],
            Vec::new(),
        ));
        let failure = send_unchecked(&bootstrap, &topic, denying)
            .await
            .expect_err("a denied broker gets no record");
        assert!(failure.permanent, "{}", failure.error);
        assert!(
            failure.error.contains(&format!("at {bootstrap}"))
                && failure.error.contains("denied by the egress policy")
                && failure.error.contains("127.0.0.0/8"),
            "{}",
            failure.error
        );

        // With loopback allowed, the same record is the topic's first.
        let allowing = Egress::new(hookstream_crds::egress::EgressPolicy::default());
        let sent = send_unchecked(&bootstrap, &topic, allowing).await;
        assert!(
            matches!(sent, Ok((0, 0))),
            "{:?}",
            sent.map_err(|f| f.error)
        );
    }
}
