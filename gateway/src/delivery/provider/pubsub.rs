//! The `pubsub` destination type: each delivery is one Google Cloud Pub/Sub message published
//! to the Destination's topic (the payload as `data`, the attributes `event_id` and
//! `source_id`, the ordering key when configured), and the attempt records the message id the
//! server assigned.
//!
//! The gRPC connection is hookstream's own tonic channel over a connector that resolves the
//! endpoint's host itself, checks every address against the egress policy and connects only to
//! an allowed one; TLS (for Google's endpoint) runs on top of that connection and verifies the
//! certificate against the host name. An `endpoint` (the emulator) is plaintext without
//! credentials. Otherwise each request carries a token: from the service account key of the
//! Destination's Secret (a self-signed JWT, made locally), else from the default credential
//! chain (GKE Workload Identity, `GOOGLE_APPLICATION_CREDENTIALS`), whose token requests are
//! the gateway's own identity, not a delivery, and are not subject to the egress policy.
//!
//! One channel per Destination, kept while its settings stay the same.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use gcloud_auth::credentials::CredentialsFile;
use gcloud_auth::token_source::TokenSource;
use gcloud_googleapis::pubsub::v1::publisher_client::PublisherClient;
use gcloud_googleapis::pubsub::v1::{PublishRequest, PubsubMessage};
use hookstream_crds::config::{DestinationConfig, ObjectKey, PubsubConfig};
use hookstream_crds::egress::EgressDenied;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Code;

use super::egress::Egress;
use super::{Headers, Message, Provider, Sent};
use crate::store::AttemptDetail;

/// Google's Pub/Sub endpoint.
const GOOGLE_HOST: &str = "pubsub.googleapis.com";
/// The audience of self-signed service account tokens.
const AUDIENCE: &str = "https://pubsub.googleapis.com/";
/// The OAuth scope asked of the default credential chain.
const SCOPES: [&str; 1] = ["https://www.googleapis.com/auth/pubsub"];
/// Longest wait for a TCP connection, within the attempt's own time limit.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes to Pub/Sub topics, one cached channel per Destination.
pub struct PubsubProvider {
    egress: Arc<Egress>,
    clients: DashMap<ObjectKey, Arc<Client>>,
}

/// A Destination's connection, and the settings it was made for.
struct Client {
    config: PubsubConfig,
    publisher: PublisherClient<Channel>,
    tokens: Option<Box<dyn TokenSource>>,
    /// The egress policy's last refusal on this channel's connector, read when a publish
    /// fails (the refusal reaches the caller only as a transport error).
    denied: Arc<Mutex<Option<EgressDenied>>>,
}

impl PubsubProvider {
    /// A provider whose connections go only where `egress` allows.
    pub fn new(egress: Arc<Egress>) -> PubsubProvider {
        PubsubProvider {
            egress,
            clients: DashMap::new(),
        }
    }

    /// The cached client of `key`, or a new one when there is none or its settings changed.
    async fn client(&self, key: &ObjectKey, config: &PubsubConfig) -> Result<Arc<Client>, Failure> {
        if let Some(client) = self.clients.get(key) {
            if client.config == *config {
                return Ok(client.clone());
            }
        }
        let client = Arc::new(Client::new(self.egress.clone(), config).await?);
        self.clients.insert(key.clone(), client.clone());
        Ok(client)
    }
}

#[async_trait]
impl Provider for PubsubProvider {
    fn retain(&self, live: &std::collections::HashSet<ObjectKey>) {
        self.clients.retain(|key, _| live.contains(key));
    }

    async fn deliver(&self, destination: &DestinationConfig, message: Message<'_>) -> Sent {
        let started = Instant::now();
        let Some(config) = &destination.pubsub else {
            return failed(
                true,
                "destination has no pubsub settings".to_owned(),
                started,
            );
        };
        let attributes: Headers = vec![
            ("event_id".to_owned(), message.event.id.clone()),
            (
                "source_id".to_owned(),
                format!("{}/{}", message.event.namespace, message.event.source),
            ),
        ];
        let ordering_key = match &config.ordering_key {
            Some(value) => match message.value(value).await {
                Ok(key) => key.unwrap_or_default(),
                Err(e) => {
                    let error = format!("computing the ordering key failed: {e}");
                    return Sent {
                        request_headers: attributes,
                        ..failed(true, error, started)
                    };
                }
            },
            None => String::new(),
        };
        let pubsub_message = PubsubMessage {
            data: message.payload.body.to_vec(),
            attributes: attributes.iter().cloned().collect(),
            ordering_key,
            ..PubsubMessage::default()
        };
        let limit = Duration::from_millis(destination.timeout_ms());
        let published = tokio::time::timeout(
            limit,
            self.publish(&destination.key, config, pubsub_message),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure {
                permanent: false,
                error: format!("Pub/Sub did not answer within {} ms", limit.as_millis()),
            })
        });
        let mut sent = match published {
            Ok(message_id) => Sent {
                success: true,
                detail: AttemptDetail::Pubsub { message_id },
                ..Sent::default()
            },
            Err(f) => failed(f.permanent, f.error, started),
        };
        sent.request_headers = attributes;
        sent.latency = started.elapsed();
        sent
    }
}

/// Why a publish failed, and whether retrying can help.
#[derive(Debug)]
struct Failure {
    permanent: bool,
    error: String,
}

impl PubsubProvider {
    /// Publishes one message on the Destination's channel; the server's message id.
    async fn publish(
        &self,
        key: &ObjectKey,
        config: &PubsubConfig,
        message: PubsubMessage,
    ) -> Result<String, Failure> {
        let client = self.client(key, config).await?;
        let mut request = tonic::Request::new(PublishRequest {
            topic: format!("projects/{}/topics/{}", config.project_id, config.topic_id),
            messages: vec![message],
        });
        if let Some(tokens) = &client.tokens {
            let token = tokens.token().await.map_err(|e| Failure {
                permanent: false,
                error: format!("getting a Google access token failed: {}", token_error(&e)),
            })?;
            let value = token.value().parse().map_err(|_| Failure {
                permanent: false,
                error: "the Google access token is not a valid header value".to_owned(),
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        let response = client
            .publisher
            .clone()
            .publish(request)
            .await
            .map_err(|status| client.failure(&status))?;
        response
            .into_inner()
            .message_ids
            .into_iter()
            .next()
            .ok_or_else(|| Failure {
                permanent: false,
                error: "Pub/Sub answered without a message id".to_owned(),
            })
    }
}

impl Client {
    /// A lazily connecting channel to the configured endpoint (or Google's) and, for
    /// Google's, the token source of the configured credentials.
    async fn new(egress: Arc<Egress>, config: &PubsubConfig) -> Result<Client, Failure> {
        let invalid = |error: String| Failure {
            permanent: true,
            error,
        };
        let denied = Arc::new(Mutex::new(None));
        let (host, port, uri, tls) = match &config.endpoint {
            Some(endpoint) => {
                let (host, port) = split_host_port(endpoint).map_err(invalid)?;
                (host, port, format!("http://{endpoint}"), false)
            }
            None => (
                GOOGLE_HOST.to_owned(),
                443,
                format!("https://{GOOGLE_HOST}"),
                true,
            ),
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| invalid(format!("invalid Pub/Sub endpoint: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false);
        if tls {
            let tls_config = ClientTlsConfig::new()
                .with_webpki_roots()
                .domain_name(GOOGLE_HOST);
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|e| invalid(format!("setting up TLS to Pub/Sub failed: {e}")))?;
        }
        let connector = CheckedConnector {
            egress,
            host,
            port,
            denied: denied.clone(),
        };
        let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_| {
            let connector = connector.clone();
            async move { connector.connect().await }
        }));
        let tokens = match &config.endpoint {
            Some(_) => None,
            None => Some(token_source(config).await?),
        };
        Ok(Client {
            config: config.clone(),
            publisher: PublisherClient::new(channel),
            tokens,
            denied,
        })
    }

    /// A failed publish: the egress policy's refusal when the connector refused, else the
    /// server's (or the transport's) status, classified.
    fn failure(&self, status: &tonic::Status) -> Failure {
        let refused = self.denied.lock().ok().and_then(|mut d| d.take());
        if let Some(denied) = refused {
            return Failure {
                permanent: true,
                error: denied.to_string(),
            };
        }
        Failure {
            permanent: is_permanent(status.code()),
            error: describe(status),
        }
    }
}

/// The token source of the Destination's service account key, or of the default credential
/// chain. Errors name what failed without the key's text; an unusable key is permanent (the
/// same key fails the same way), missing default credentials are not (the environment may
/// still provide them).
async fn token_source(config: &PubsubConfig) -> Result<Box<dyn TokenSource>, Failure> {
    let Some(json) = &config.service_account_json else {
        let no_credentials = |e: gcloud_auth::error::Error| {
            Failure {
            permanent: false,
            error: format!(
                "no Google credentials from the default chain (Workload Identity, GOOGLE_APPLICATION_CREDENTIALS): {}",
                token_error(&e)
            ),
        }
        };
        let project = gcloud_auth::project::project()
            .await
            .map_err(no_credentials)?;
        let auth = gcloud_auth::project::Config::default()
            .with_audience(AUDIENCE)
            .with_scopes(&SCOPES);
        return gcloud_auth::project::create_token_source_from_project(&project, auth)
            .await
            .map_err(no_credentials);
    };
    let unusable = |what: &str| Failure {
        permanent: true,
        error: format!("the service account key in serviceAccountJson {what}"),
    };
    let text = std::str::from_utf8(json.expose()).map_err(|_| unusable("is not UTF-8 text"))?;
    let credentials = CredentialsFile::new_from_str(text)
        .await
        .map_err(|_| unusable("is not a service account key JSON"))?;
    let auth = gcloud_auth::project::Config::default().with_audience(AUDIENCE);
    gcloud_auth::project::create_token_source_from_credentials(&credentials, &auth)
        .await
        .map_err(|e| match e {
            gcloud_auth::error::Error::JwtError(_)
            | gcloud_auth::error::Error::NoPrivateKeyFound => {
                unusable("has a private_key that cannot sign tokens")
            }
            _ => unusable("cannot make tokens"),
        })
}

/// A credential error in words that cannot hold key material: the kind of failure only.
fn token_error(e: &gcloud_auth::error::Error) -> &'static str {
    use gcloud_auth::error::Error as E;
    match e {
        E::HttpError(_) => "the token service could not be reached",
        E::CredentialsIOError(_) | E::NoCredentialsFileFound | E::NoHomeDirectoryFound => {
            "no credentials found"
        }
        E::JwtError(_) | E::NoPrivateKeyFound => "the private key cannot sign tokens",
        E::JsonError(_) => "the credentials are not valid JSON",
        E::UnsupportedAccountType(_) => "the credentials are of an unsupported type",
        _ => "the token service refused",
    }
}

/// Connects to the endpoint's host after checking each of its addresses against the egress
/// policy; records a refusal for [`Client::failure`].
#[derive(Clone)]
struct CheckedConnector {
    egress: Arc<Egress>,
    host: String,
    port: u16,
    denied: Arc<Mutex<Option<EgressDenied>>>,
}

impl CheckedConnector {
    /// A TCP connection to the first allowed address that accepts one.
    async fn connect(&self) -> Result<TokioIo<TcpStream>, std::io::Error> {
        let resolved = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        let (allowed, refusal) = match self.egress.allowed(resolved) {
            Ok(allowed) => (allowed, None),
            Err(refusal) => (Vec::new(), refusal),
        };
        let mut last_error = None;
        for address in allowed {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {
                    last_error = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {address} timed out"),
                    ))
                }
            }
        }
        if let (None, Some(denied)) = (&last_error, refusal) {
            let error = std::io::Error::new(std::io::ErrorKind::PermissionDenied, denied.clone());
            if let Ok(mut slot) = self.denied.lock() {
                *slot = Some(denied);
            }
            return Err(error);
        }
        Err(last_error.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} has no address", self.host),
            )
        }))
    }
}

/// `host:port` (IPv6 in brackets) as its parts.
fn split_host_port(endpoint: &str) -> Result<(String, u16), String> {
    let invalid = || format!("Pub/Sub endpoint {endpoint:?} is not host:port");
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(invalid)?;
    let port = port.parse().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid());
    }
    Ok((host.to_owned(), port))
}

/// Whether retrying cannot help: no such topic, access denied, a rejected message.
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::NotFound
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::AlreadyExists
    )
}

/// The gRPC code as Google writes it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `Pub/Sub answered NOT_FOUND: Topic not found`, with the transport's innermost cause when
/// the status is a connection failure.
fn describe(status: &tonic::Status) -> String {
    let mut cause = None;
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    let message = match (status.message(), cause) {
        ("", Some(cause)) => cause,
        (message, Some(cause)) if cause != message => format!("{message}: {cause}"),
        (message, _) => message.to_owned(),
    };
    format!("Pub/Sub answered {}: {message}", code_name(status.code()))
}

/// A failure before or without an answer.
fn failed(permanent: bool, error: String, started: Instant) -> Sent {
    Sent {
        permanent,
        error: Some(error),
        latency: started.elapsed(),
        ..Sent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split_into_host_and_port() {
        assert_eq!(
            split_host_port("127.0.0.1:8085").unwrap(),
            ("127.0.0.1".to_owned(), 8085)
        );
        assert_eq!(
            split_host_port("[::1]:8085").unwrap(),
            ("::1".to_owned(), 8085)
        );
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port(":1").is_err());
    }

    #[test]
    fn missing_topics_and_refusals_are_permanent_outages_are_not() {
        for code in [
            Code::NotFound,
            Code::PermissionDenied,
            Code::InvalidArgument,
        ] {
            assert!(is_permanent(code), "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Aborted,
        ] {
            assert!(!is_permanent(code), "{code:?}");
        }
    }

    #[test]
    fn status_text_names_the_code() {
        let status = tonic::Status::not_found("Topic not found");
        assert_eq!(
            describe(&status),
            "Pub/Sub answered NOT_FOUND: Topic not found"
        );
    }

    #[tokio::test]
    async fn a_key_that_is_not_json_is_refused_without_its_text() {
        let config = PubsubConfig {
            project_id: "p".into(),
            topic_id: "t".into(),
            ordering_key: None,
            endpoint: None,
            service_account_json: Some(hookstream_crds::config::SecretValue(
                b"s3cr3t-not-json".to_vec(),
            )),
            timeout_ms: 1000,
        };
        let failure = token_source(&config).await.unwrap_err();
        assert!(failure.permanent);
        assert!(failure.error.contains("serviceAccountJson"), "{failure:?}");
        assert!(!failure.error.contains("s3cr3t"), "{failure:?}");
    }
}
