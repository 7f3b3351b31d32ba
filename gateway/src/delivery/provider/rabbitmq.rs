//! The `rabbitmq` destination type: each delivery becomes one message published to an
//! exchange, with the payload as its body.
//!
//! Two modes:
//! - `amqp` (default): AMQP 0-9-1 on one connection and channel per Destination, kept open and
//!   reused (opened again when the broker closed them or the Destination's settings changed).
//!   The channel is in publisher-confirm mode and every message is published with the
//!   `mandatory` flag, so the broker answers each one: a confirm is a success, a returned
//!   message (no queue bound for the routing key) a permanent failure, a nack a retryable one.
//! - `management`: the management plugin's `POST /api/exchanges/{vhost}/{exchange}/publish`,
//!   successful only when the broker answers `"routed": true`.
//!
//! Every message carries `content_type` (the payload's, else `application/json`),
//! `delivery_mode` 2 (persistent), `message_id` = the event id, and the headers
//! `hookstream-event-id` and `hookstream-source-id` (`namespace/name` of the Source). The
//! routing key is `routingKeyFrom` computed on the payload when it yields text, else
//! `routingKey`.
//!
//! Connections go only where the egress policy allows: for AMQP the broker's host is resolved
//! here, every address is checked, and the TCP connection is opened to the checked addresses
//! only (TLS for `amqps` still verifies the certificate against the URL's host name); the
//! management client resolves through the policy's resolver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use dashmap::DashMap;
use hookstream_crds::config::{DestinationConfig, ObjectKey, RabbitmqConfig};
use hookstream_crds::v1alpha1::RabbitmqMode;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::tcp::{AsyncTcpStream, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::egress::{self, Egress};
use super::http::RESPONSE_BODY_LIMIT;
use super::{Headers, Message, Provider, ProviderError, Sent};
use crate::store::AttemptDetail;

/// Content type of a payload that has none.
const DEFAULT_CONTENT_TYPE: &str = "application/json";
/// Header with the event id.
pub const EVENT_ID_HEADER: &str = "hookstream-event-id";
/// Header with the Source, `namespace/name`.
pub const SOURCE_ID_HEADER: &str = "hookstream-source-id";
/// Longest AMQP short string (exchange names, routing keys, property values).
const SHORT_STRING_MAX: usize = 255;
/// The management API's name of the default exchange.
const MANAGEMENT_DEFAULT_EXCHANGE: &str = "amq.default";

/// Publishes to RabbitMQ: one AMQP connection per Destination, and one HTTP client for the
/// management API.
pub struct RabbitmqProvider {
    egress: Arc<Egress>,
    http: reqwest::Client,
    links: DashMap<ObjectKey, Arc<Slot>>,
}

/// A Destination's connection, opened on first use; the lock makes concurrent deliveries
/// wait for one connection attempt instead of each opening its own.
#[derive(Default)]
struct Slot {
    link: Mutex<Option<Link>>,
}

/// An open connection and its publishing channel.
struct Link {
    /// Hash of the broker URL and vhost it was opened with.
    fingerprint: [u8; 32],
    connection: Connection,
    channel: Channel,
}

/// Why an attempt failed.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    /// Retrying cannot help.
    permanent: bool,
    /// In words, without secrets.
    error: String,
}

impl Failure {
    fn permanent(error: impl Into<String>) -> Failure {
        Failure {
            permanent: true,
            error: error.into(),
        }
    }

    fn retryable(error: impl Into<String>) -> Failure {
        Failure {
            permanent: false,
            error: error.into(),
        }
    }
}

/// One message, ready to publish.
struct Outgoing {
    exchange: String,
    routing_key: String,
    content_type: String,
    event_id: String,
    source_id: String,
    timestamp: i64,
    body: bytes::Bytes,
}

impl Outgoing {
    /// What the attempt record shows as sent beside the body.
    fn shown(&self) -> Headers {
        vec![
            ("content_type".to_owned(), self.content_type.clone()),
            ("delivery_mode".to_owned(), "2".to_owned()),
            ("message_id".to_owned(), self.event_id.clone()),
            (EVENT_ID_HEADER.to_owned(), self.event_id.clone()),
            (SOURCE_ID_HEADER.to_owned(), self.source_id.clone()),
        ]
    }

    /// The exchange, named for an error message.
    fn exchange_name(&self) -> String {
        if self.exchange.is_empty() {
            "\"\" (the default exchange)".to_owned()
        } else {
            format!("{:?}", self.exchange)
        }
    }

    /// The permanent failure of a message no queue took.
    fn unroutable(&self, how: &str) -> Failure {
        Failure::permanent(format!(
            "no queue is bound for routing key {:?} on exchange {} ({how})",
            self.routing_key,
            self.exchange_name()
        ))
    }
}

impl RabbitmqProvider {
    /// Builds the management API client; AMQP connections are opened on first use.
    pub fn new(egress: Arc<Egress>) -> Result<RabbitmqProvider, ProviderError> {
        let http = reqwest::Client::builder()
            .dns_resolver(egress.resolver())
            .no_proxy()
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("hookstream/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError {
                kind: "rabbitmq",
                message: e.to_string(),
            })?;
        Ok(RabbitmqProvider {
            egress,
            http,
            links: DashMap::new(),
        })
    }
}

#[async_trait]
impl Provider for RabbitmqProvider {
    fn retain(&self, live: &std::collections::HashSet<ObjectKey>) {
        let gone: Vec<ObjectKey> = self
            .links
            .iter()
            .map(|entry| entry.key().clone())
            .filter(|key| !live.contains(key))
            .collect();
        for key in gone {
            if let Some((_, slot)) = self.links.remove(&key) {
                // The connection is closed politely, so the broker lets it go at once.
                tokio::spawn(async move {
                    if let Some(link) = slot.link.lock().await.take() {
                        close(link).await;
                    }
                });
            }
        }
    }

    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let started = Instant::now();
        let Some(config) = &destination.rabbitmq else {
            return Sent {
                permanent: true,
                error: Some("destination has no rabbitmq settings".to_owned()),
                ..Sent::default()
            };
        };
        let outgoing = match outgoing(config, &message).await {
            Ok(outgoing) => outgoing,
            Err(failure) => return failed(failure, Headers::new(), started),
        };
        let shown = outgoing.shown();
        let limit = Duration::from_millis(destination.timeout_ms());
        let publish = async {
            match config.mode {
                RabbitmqMode::Amqp => self.publish_amqp(&destination.key, config, &outgoing).await,
                RabbitmqMode::Management => self.publish_management(config, &outgoing).await,
            }
        };
        let result = match tokio::time::timeout(limit, publish).await {
            Ok(result) => result,
            Err(_) => {
                // A broker that stopped answering without closing the connection: the next
                // attempt opens a new one rather than waiting on this one again.
                self.forget(&destination.key);
                Err(Failure::retryable(format!(
                    "no answer from the broker within {} ms",
                    limit.as_millis()
                )))
            }
        };
        match result {
            Ok(()) => Sent {
                success: true,
                request_headers: shown,
                detail: AttemptDetail::Rabbitmq {
                    exchange: outgoing.exchange,
                    routing_key: outgoing.routing_key,
                },
                latency: started.elapsed(),
                ..Sent::default()
            },
            Err(failure) => failed(failure, shown, started),
        }
    }
}

/// The `Sent` of a failed attempt.
fn failed(failure: Failure, shown: Headers, started: Instant) -> Sent {
    Sent {
        permanent: failure.permanent,
        error: Some(failure.error),
        request_headers: shown,
        latency: started.elapsed(),
        ..Sent::default()
    }
}

/// The message `message` becomes, with its routing key computed.
async fn outgoing(config: &RabbitmqConfig, message: &Message<'_>) -> Result<Outgoing, Failure> {
    let routing_key = match &config.routing_key_from {
        Some(value) => match message.value(value).await {
            Ok(Some(key)) => key,
            Ok(None) => config.routing_key.clone(),
            Err(e) => return Err(Failure::permanent(format!("routing key: {e}"))),
        },
        None => config.routing_key.clone(),
    };
    if routing_key.len() > SHORT_STRING_MAX {
        return Err(Failure::permanent(format!(
            "the routing key is {} bytes long; AMQP allows at most {SHORT_STRING_MAX}",
            routing_key.len()
        )));
    }
    let event = message.event;
    Ok(Outgoing {
        exchange: config.exchange.clone(),
        routing_key,
        content_type: message
            .payload
            .content_type
            .clone()
            .filter(|c| !c.is_empty() && c.len() <= SHORT_STRING_MAX)
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
        event_id: event.id.clone(),
        source_id: format!("{}/{}", event.namespace, event.source),
        timestamp: message.timestamp,
        body: message.payload.body.clone(),
    })
}

// ---- AMQP ------------------------------------------------------------------------------------

impl RabbitmqProvider {
    /// Publishes on the Destination's channel and waits for the broker's confirm.
    async fn publish_amqp(
        &self,
        key: &ObjectKey,
        config: &RabbitmqConfig,
        message: &Outgoing,
    ) -> Result<(), Failure> {
        let channel = self.channel(key, config).await?;
        let confirm = channel
            .basic_publish(
                ShortString::from(message.exchange.clone()),
                ShortString::from(message.routing_key.clone()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                properties(message),
            )
            .await
            .map_err(|e| classify(&e, message))?;
        match confirm.await.map_err(|e| classify(&e, message))? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(message
                .unroutable(&format!(
                    "the broker returned the message: {} {}",
                    returned.reply_code,
                    returned.reply_text.as_str()
                ))),
            Confirmation::Nack(None) => Err(Failure::retryable(
                "the broker did not take the message (basic.nack)",
            )),
            Confirmation::NotRequested => Err(Failure::retryable(
                "the channel is not in confirm mode; the message may not have been stored",
            )),
        }
    }

    /// The Destination's open channel: the cached one, a new channel on the cached
    /// connection when the broker closed the channel, or a new connection.
    async fn channel(&self, key: &ObjectKey, config: &RabbitmqConfig) -> Result<Channel, Failure> {
        let fingerprint = fingerprint(config);
        let slot = self.links.entry(key.clone()).or_default().clone();
        let mut guard = slot.link.lock().await;
        if let Some(link) = guard.as_mut() {
            if link.fingerprint == fingerprint && link.connection.status().connected() {
                if link.channel.status().connected() {
                    return Ok(link.channel.clone());
                }
                if let Ok(channel) = open_channel(&link.connection).await {
                    link.channel = channel.clone();
                    return Ok(channel);
                }
            }
        }
        if let Some(old) = guard.take() {
            tokio::spawn(close(old));
        }
        let link = self.connect(config, fingerprint).await?;
        let channel = link.channel.clone();
        *guard = Some(link);
        Ok(channel)
    }

    /// Closes the Destination's connection, if no delivery is opening it right now.
    fn forget(&self, key: &ObjectKey) {
        let Some(slot) = self.links.get(key).map(|slot| slot.clone()) else {
            return;
        };
        let Ok(mut guard) = slot.link.try_lock() else {
            return;
        };
        if let Some(old) = guard.take() {
            tokio::spawn(close(old));
        }
    }

    /// Opens a connection to the broker's allowed addresses and a confirm-mode channel.
    async fn connect(
        &self,
        config: &RabbitmqConfig,
        fingerprint: [u8; 32],
    ) -> Result<Link, Failure> {
        let uri = amqp_uri(config)?;
        let host = uri.authority.host.clone();
        let addresses = self.allowed_addresses(&host, uri.authority.port).await?;
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| Failure::retryable(format!("cannot start the AMQP client: {e}")))?;
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from("hookstream gateway"));
        let connect = async move |uri: AMQPUri, runtime| {
            let stream = AsyncTcpStream::connect(&runtime, addresses.clone()).await?;
            match uri.scheme {
                AMQPScheme::AMQP => Ok(stream),
                // The certificate is checked against the URL's host name (sent as SNI).
                AMQPScheme::AMQPS => Ok(stream
                    .into_tls(&host, OwnedTLSConfig::default().as_ref())
                    .await?),
            }
        };
        let connection = Connection::connector(uri, runtime, connect, properties)
            .await
            .map_err(|e| connect_failure(&e))?;
        let channel = open_channel(&connection)
            .await
            .map_err(|e| connect_failure(&e))?;
        Ok(Link {
            fingerprint,
            connection,
            channel,
        })
    }

    /// The broker's addresses that the egress policy allows; none is a permanent failure
    /// when the policy refused them.
    async fn allowed_addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Failure::retryable(format!("cannot resolve {host}: {e}")))?
            .collect();
        self.egress
            .allowed(resolved)
            .map_err(|denied| match denied {
                Some(denied) => Failure::permanent(denied.to_string()),
                None => Failure::retryable(format!("{host} resolves to no address")),
            })
    }
}

/// Closes a connection that is no longer used (it may already be broken).
async fn close(link: Link) {
    let _ = link
        .connection
        .close(200, ShortString::from("closed by hookstream"))
        .await;
}

/// A channel in publisher-confirm mode.
async fn open_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// The broker URL with the Destination's vhost: the one in the URL's path when it has one,
/// else `spec.rabbitmq.vhost`.
fn amqp_uri(config: &RabbitmqConfig) -> Result<AMQPUri, Failure> {
    let text = std::str::from_utf8(config.url.expose())
        .map_err(|_| Failure::permanent("the broker URL is not text"))?;
    // Never quote the URL or the parser's words about it: it holds a password.
    let mut uri: AMQPUri = text
        .trim()
        .parse()
        .map_err(|_| Failure::permanent("the broker URL is not a valid amqp:// or amqps:// URL"))?;
    let path_names_vhost = url::Url::parse(text.trim())
        .map(|u| !matches!(u.path(), "" | "/"))
        .unwrap_or(false);
    if !path_names_vhost {
        uri.vhost = config.vhost.clone();
    }
    Ok(uri)
}

/// Identifies the broker settings a connection was opened with.
fn fingerprint(config: &RabbitmqConfig) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(config.url.expose());
    hash.update([0]);
    hash.update(config.vhost.as_bytes());
    hash.finalize().into()
}

/// The properties and headers of `message`.
fn properties(message: &Outgoing) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(EVENT_ID_HEADER),
        AMQPValue::LongString(LongString::from(message.event_id.clone())),
    );
    headers.insert(
        ShortString::from(SOURCE_ID_HEADER),
        AMQPValue::LongString(LongString::from(message.source_id.clone())),
    );
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from(message.content_type.clone()))
        .with_delivery_mode(2)
        .with_headers(headers)
        .with_timestamp(u64::try_from(message.timestamp).unwrap_or_default());
    if message.event_id.len() <= SHORT_STRING_MAX {
        properties.with_message_id(ShortString::from(message.event_id.clone()))
    } else {
        properties
    }
}

/// AMQP reply codes that retrying cannot change: content too large, no route, invalid path,
/// access refused, not found, precondition failed (a message over the broker's size limit),
/// frame/syntax/command errors, channel errors, not allowed (no such vhost or no access to
/// it), not implemented.
const PERMANENT_CODES: [u16; 13] = [
    311, 312, 402, 403, 404, 406, 501, 502, 503, 504, 505, 530, 540,
];

/// A failure while publishing or waiting for the confirm.
fn classify(error: &lapin::Error, message: &Outgoing) -> Failure {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let code = amqp.get_id();
            let text = amqp.get_message().as_str();
            let failure = match code {
                404 if text.contains("exchange") => format!(
                    "exchange {} does not exist: {code} {text}",
                    message.exchange_name()
                ),
                312 => return message.unroutable(&format!("{code} {text}")),
                _ => format!("the broker closed the channel: {code} {text}"),
            };
            Failure {
                permanent: PERMANENT_CODES.contains(&code),
                error: failure,
            }
        }
        _ => connection_failure(error),
    }
}

/// A failure while connecting (a refused login is 403 ACCESS_REFUSED, an unknown or
/// forbidden vhost 530 NOT_ALLOWED) or opening the channel.
fn connect_failure(error: &lapin::Error) -> Failure {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let code = amqp.get_id();
            Failure {
                permanent: PERMANENT_CODES.contains(&code),
                error: format!(
                    "the broker refused the connection: {code} {}",
                    amqp.get_message().as_str()
                ),
            }
        }
        _ => connection_failure(error),
    }
}

/// Failures of the connection itself (refused, reset, timed out, heartbeats missed): the
/// broker may come back, so they are retried, except a refusal by the egress policy.
fn connection_failure(error: &lapin::Error) -> Failure {
    if let ErrorKind::IOError(io) = error.kind() {
        if let Some(denied) = egress::denial(io.as_ref()) {
            return Failure::permanent(denied.to_string());
        }
        return Failure::retryable(format!("cannot reach the broker: {io}"));
    }
    Failure::retryable(format!("the connection to the broker failed: {error}"))
}

// ---- management API ----------------------------------------------------------------------

impl RabbitmqProvider {
    /// Publishes through the management API; only `"routed": true` is a success.
    async fn publish_management(
        &self,
        config: &RabbitmqConfig,
        message: &Outgoing,
    ) -> Result<(), Failure> {
        let (endpoint, username, password) = management_endpoint(config, message)?;
        if let Err(denied) = self.egress.check_url(&endpoint).await {
            return Err(Failure::permanent(denied.to_string()));
        }
        let mut request = self.http.post(endpoint).json(&management_body(message));
        if let Some(username) = username {
            request = request.basic_auth(username, password);
        }
        let response = request.send().await.map_err(|e| request_failure(&e))?;
        let status = response.status();
        let body = response_text(response).await;
        if status.is_success() {
            let routed = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("routed").and_then(serde_json::Value::as_bool));
            return match routed {
                Some(true) => Ok(()),
                Some(false) => Err(message.unroutable("the management API answered routed: false")),
                None => Err(Failure::retryable(format!(
                    "the management API answered {status} without \"routed\": {body}"
                ))),
            };
        }
        Err(management_failure(status, &body, config, message))
    }
}

/// The publish endpoint, and the credentials taken out of the URL.
fn management_endpoint(
    config: &RabbitmqConfig,
    message: &Outgoing,
) -> Result<(url::Url, Option<String>, Option<String>), Failure> {
    let text = std::str::from_utf8(config.url.expose())
        .map_err(|_| Failure::permanent("the management API URL is not text"))?;
    let mut url = url::Url::parse(text.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
        .ok_or_else(|| Failure::permanent("the management API URL is not a valid http(s) URL"))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let username = Some(decode(url.username())).filter(|u| !u.is_empty());
    let password = url.password().map(decode);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    let exchange = if message.exchange.is_empty() {
        MANAGEMENT_DEFAULT_EXCHANGE
    } else {
        &message.exchange
    };
    url.path_segments_mut()
        .map_err(|()| Failure::permanent("the management API URL is not a valid http(s) URL"))?
        .pop_if_empty()
        .extend(["api", "exchanges", &config.vhost, exchange, "publish"]);
    Ok((url, username, password))
}

/// The JSON the management API publishes: the body as a string when it is UTF-8 text, else
/// base64.
fn management_body(message: &Outgoing) -> serde_json::Value {
    let (payload, encoding) = match std::str::from_utf8(&message.body) {
        Ok(text) => (text.to_owned(), "string"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&message.body),
            "base64",
        ),
    };
    serde_json::json!({
        "properties": {
            "content_type": message.content_type,
            "delivery_mode": 2,
            "message_id": message.event_id,
            "timestamp": message.timestamp,
            "headers": {
                EVENT_ID_HEADER: message.event_id,
                SOURCE_ID_HEADER: message.source_id,
            },
        },
        "routing_key": message.routing_key,
        "payload": payload,
        "payload_encoding": encoding,
    })
}

/// The start of a response body, as text.
async fn response_text(response: reqwest::Response) -> String {
    let bytes = response.bytes().await.unwrap_or_default();
    let kept = &bytes[..bytes.len().min(RESPONSE_BODY_LIMIT)];
    String::from_utf8_lossy(kept).trim().to_owned()
}

/// A request that got no response.
fn request_failure(error: &reqwest::Error) -> Failure {
    if let Some(denied) = egress::denial(error) {
        return Failure::permanent(denied.to_string());
    }
    // Without the URL: it may have held credentials before they were taken out.
    let error_text = {
        let mut chain = vec![];
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = cause {
            chain.push(e.to_string());
            cause = e.source();
        }
        chain.join(": ")
    };
    if error.is_timeout() {
        return Failure::retryable("no answer from the management API in time".to_owned());
    }
    Failure::retryable(format!("cannot reach the management API: {error_text}"))
}

/// An error status of the management API.
fn management_failure(
    status: reqwest::StatusCode,
    body: &str,
    config: &RabbitmqConfig,
    message: &Outgoing,
) -> Failure {
    let reason = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str().map(str::to_owned)))
        .unwrap_or_else(|| body.to_owned());
    // The broker's own refusal, passed on by the API as a 400 (like "404 NOT_FOUND - no
    // exchange 'x' in vhost '/'").
    if reason.contains("NOT_FOUND - no exchange") {
        return Failure::permanent(format!(
            "exchange {} does not exist ({status}): {reason}",
            message.exchange_name()
        ));
    }
    let code = status.as_u16();
    match code {
        401 => Failure::permanent(format!(
            "the management API refused the credentials ({status}): {reason}"
        )),
        403 => Failure::permanent(format!(
            "the user may not publish to exchange {} in vhost {:?} ({status}): {reason}",
            message.exchange_name(),
            config.vhost
        )),
        404 => Failure::permanent(format!(
            "exchange {} or vhost {:?} does not exist ({status}): {reason}",
            message.exchange_name(),
            config.vhost
        )),
        408 | 429 => Failure::retryable(format!("the management API answered {status}: {reason}")),
        400..=499 => Failure::permanent(format!(
            "the management API rejected the message ({status}): {reason}"
        )),
        _ => Failure::retryable(format!("the management API answered {status}: {reason}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::config::SecretValue;

    fn config(url: &str, vhost: &str) -> RabbitmqConfig {
        RabbitmqConfig {
            mode: RabbitmqMode::Management,
            url: SecretValue(url.as_bytes().to_vec()),
            vhost: vhost.to_owned(),
            exchange: String::new(),
            routing_key: "rk".to_owned(),
            routing_key_from: None,
            timeout_ms: 1000,
        }
    }

    fn outgoing(exchange: &str, body: &[u8]) -> Outgoing {
        Outgoing {
            exchange: exchange.to_owned(),
            routing_key: "orders.created".to_owned(),
            content_type: "application/json".to_owned(),
            event_id: "evt_1".to_owned(),
            source_id: "shop/orders".to_owned(),
            timestamp: 1_700_000_000,
            body: bytes::Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn the_management_endpoint_encodes_vhost_and_exchange_and_takes_out_credentials() {
        let with_path = config("http://us%40r:p%3Ass@rabbit:15672/base/", "/");
        let (url, user, pass) = management_endpoint(&with_path, &outgoing("ex 1", b"")).unwrap();
        assert_eq!(
            url.as_str(),
            "http://rabbit:15672/base/api/exchanges/%2F/ex%201/publish"
        );
        assert_eq!(user.as_deref(), Some("us@r"));
        assert_eq!(pass.as_deref(), Some("p:ss"));
        let (url, user, _) =
            management_endpoint(&config("http://rabbit:15672", "v"), &outgoing("", b"")).unwrap();
        assert_eq!(
            url.as_str(),
            "http://rabbit:15672/api/exchanges/v/amq.default/publish"
        );
        assert_eq!(user, None);
    }

    #[test]
    fn binary_bodies_go_as_base64() {
        let text = management_body(&outgoing("x", b"{\"a\":1}"));
        assert_eq!(text["payload_encoding"], "string");
        assert_eq!(text["payload"], "{\"a\":1}");
        assert_eq!(
            text["properties"]["headers"][SOURCE_ID_HEADER],
            "shop/orders"
        );
        let binary = management_body(&outgoing("x", &[0xff, 0x00]));
        assert_eq!(binary["payload_encoding"], "base64");
        assert_eq!(binary["payload"], "/wA=");
    }

    #[test]
    fn the_vhost_comes_from_the_url_path_or_the_setting() {
        let plain = amqp_uri(&config("amqp://h:5672", "orders")).unwrap();
        assert_eq!(plain.vhost, "orders");
        let slash = amqp_uri(&config("amqp://h:5672/", "/")).unwrap();
        assert_eq!(slash.vhost, "/");
        let in_path = amqp_uri(&config("amqp://u:p@h:5672/prod", "/")).unwrap();
        assert_eq!(in_path.vhost, "prod");
        assert_eq!(in_path.authority.userinfo.username, "u");
        let bad = amqp_uri(&config("amqp://u:secret@h:notaport", "/")).unwrap_err();
        assert!(bad.permanent && !bad.error.contains("secret"), "{bad:?}");
    }

    #[test]
    fn management_statuses_are_classified() {
        let config = config("http://h", "/");
        let message = outgoing("ex", b"");
        let status = |code| reqwest::StatusCode::from_u16(code).unwrap();
        let body = r#"{"error":"Object Not Found","reason":"Not Found"}"#;
        let not_found = management_failure(status(404), body, &config, &message);
        assert!(not_found.permanent);
        assert!(not_found.error.contains("\"ex\""), "{}", not_found.error);
        assert!(management_failure(status(401), "", &config, &message).permanent);
        assert!(!management_failure(status(503), "", &config, &message).permanent);
        assert!(!management_failure(status(429), "", &config, &message).permanent);
    }
}
