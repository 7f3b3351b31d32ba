//! What the AWS destination types (`sqs`, `s3`, `eventbridge`) share: the SDK configuration
//! of a destination (region, endpoint, credentials), the HTTP client the SDK sends with, the
//! cache of built clients, and how an SDK error becomes an attempt's outcome.
//!
//! The SDK's requests to the destination go through [`EgressClient`]: host names are resolved
//! by the egress policy's resolver and literal addresses are checked before sending, so an
//! endpoint or queue URL cannot reach what the policy denies. Credentials come from the
//! Destination's Secret when it names one, else from the SDK's default credential chain
//! (environment, IRSA web identity, EKS Pod Identity, instance metadata); the chain's own
//! requests are the gateway's infrastructure, not a delivery, and use a client without the
//! policy (the metadata endpoints are link-local addresses the policy usually denies).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::{ConnectorError, SdkError};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use hookstream_crds::config::{AwsConfig, ObjectKey};
use http_body_util::BodyExt as _;

use super::egress::{self, Egress};
use super::{ProviderError, Sent};

/// Name of the credentials provider made from a Destination's Secret.
const SECRET_PROVIDER: &str = "hookstream-destination-secret";
/// Error codes that say "try again later" whatever the HTTP status.
const RETRYABLE_CODES: [&str; 14] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
    "ExpiredToken",
    "RequestExpired",
];

/// The two HTTP clients of the AWS types: deliveries go through the egress policy, the
/// default credential chain does not.
#[derive(Clone, Debug)]
pub struct AwsHttp {
    /// For requests to the destination's service.
    pub delivery: SharedHttpClient,
    /// For the default credential chain (STS, the container and instance metadata).
    pub credentials: SharedHttpClient,
}

impl AwsHttp {
    /// Builds both clients; deliveries connect only where `egress` allows.
    pub fn new(egress: Arc<Egress>, kind: &'static str) -> Result<AwsHttp, ProviderError> {
        let checked = reqwest_client(reqwest::Client::builder().dns_resolver(egress.resolver()))
            .map_err(|message| ProviderError { kind, message })?;
        let unchecked = reqwest_client(reqwest::Client::builder())
            .map_err(|message| ProviderError { kind, message })?;
        Ok(AwsHttp {
            delivery: SharedHttpClient::new(EgressClient {
                client: checked,
                egress: Some(egress),
            }),
            credentials: SharedHttpClient::new(EgressClient {
                client: unchecked,
                egress: None,
            }),
        })
    }

    /// The shared SDK configuration of one destination: its region, endpoint and
    /// credentials, the SDK's own retries off (hookstream retries).
    pub async fn sdk_config(&self, aws: &AwsConfig, endpoint: Option<&str>) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(aws.region.clone()))
            .http_client(self.credentials.clone())
            .retry_config(RetryConfig::disabled());
        if let Some(credentials) = &aws.credentials {
            let text = |v: &[u8]| String::from_utf8_lossy(v).trim().to_owned();
            loader = loader.credentials_provider(Credentials::new(
                text(credentials.access_key_id.expose()),
                text(credentials.secret_access_key.expose()),
                credentials.session_token.as_ref().map(|t| text(t.expose())),
                None,
                SECRET_PROVIDER,
            ));
        }
        if let Some(endpoint) = endpoint.or(aws.endpoint_url.as_deref()) {
            loader = loader.endpoint_url(endpoint);
        }
        loader.load().await
    }
}

fn reqwest_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    builder
        .no_proxy()
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// An SDK HTTP client over reqwest; with an egress policy, literal addresses in the request
/// URL are checked before sending and host names are resolved by the policy's resolver.
#[derive(Clone, Debug)]
struct EgressClient {
    client: reqwest::Client,
    egress: Option<Arc<Egress>>,
}

impl HttpClient for EgressClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for EgressClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let this = self.clone();
        HttpConnectorFuture::new(async move { this.send(request).await })
    }
}

impl EgressClient {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        let request = request
            .try_into_http1x()
            .map_err(|e| ConnectorError::user(Box::new(e)))?;
        let (parts, body) = request.into_parts();
        let url = url::Url::parse(&parts.uri.to_string())
            .map_err(|e| ConnectorError::user(Box::new(e)))?;
        if let Some(egress) = &self.egress {
            egress
                .check_url(&url)
                .await
                .map_err(|denied| ConnectorError::other(Box::new(denied), None))?;
        }
        let body = match body.bytes() {
            Some(bytes) => bytes::Bytes::copy_from_slice(bytes),
            None => body
                .collect()
                .await
                .map_err(ConnectorError::user)?
                .to_bytes(),
        };
        let response = self
            .client
            .request(parts.method, url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(connector_error)?;
        let mut answer = http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let bytes = response.bytes().await.map_err(connector_error)?;
        let answer = answer
            .body(SdkBody::from(bytes))
            .map_err(|e| ConnectorError::other(Box::new(e), None))?;
        HttpResponse::try_from(answer).map_err(|e| ConnectorError::other(Box::new(e), None))
    }
}

fn connector_error(e: reqwest::Error) -> ConnectorError {
    if e.is_timeout() {
        ConnectorError::timeout(Box::new(e))
    } else {
        ConnectorError::io(Box::new(e))
    }
}

/// The cache key of a destination's client.
pub fn key_of(key: &ObjectKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// Built SDK clients by destination key, each with the settings it was built from: a
/// destination's client is reused until its settings change.
pub struct Clients<S, C> {
    built: Mutex<HashMap<String, (S, C)>>,
}

impl<S: PartialEq + Clone, C: Clone> Clients<S, C> {
    /// No clients yet.
    pub fn new() -> Self {
        Clients {
            built: Mutex::new(HashMap::new()),
        }
    }

    /// The client of destination `key` for `settings`, built by `build` when there is none
    /// or the destination's settings changed.
    pub async fn get<F>(&self, key: &str, settings: &S, build: F) -> C
    where
        F: Future<Output = C>,
    {
        if let Some(client) = self.cached(key, settings) {
            return client;
        }
        let client = build.await;
        self.lock()
            .insert(key.to_owned(), (settings.clone(), client.clone()));
        client
    }

    /// Drops the clients of destinations not in `live`.
    pub fn retain(&self, live: &std::collections::HashSet<ObjectKey>) {
        let live: std::collections::HashSet<String> = live.iter().map(key_of).collect();
        self.lock().retain(|key, _| live.contains(key));
    }

    fn cached(&self, key: &str, settings: &S) -> Option<C> {
        match self.lock().get(key) {
            Some((built_for, client)) if built_for == settings => Some(client.clone()),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (S, C)>> {
        self.built.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: PartialEq + Clone, C: Clone> Default for Clients<S, C> {
    fn default() -> Self {
        Self::new()
    }
}

/// A failed call, classified: `permanent` when retrying cannot help.
#[derive(Debug)]
pub struct Failure {
    /// The failure cannot go away by retrying.
    pub permanent: bool,
    /// What went wrong, in words, secrets removed.
    pub error: String,
    /// The service's error code, when it answered with one.
    pub code: Option<String>,
}

impl Failure {
    /// A failure of this attempt as a [`Sent`].
    pub fn into_sent(self, request_headers: super::Headers) -> Sent {
        Sent {
            permanent: self.permanent,
            error: Some(self.error),
            request_headers,
            ..Sent::default()
        }
    }
}

/// How an SDK error ends an attempt: throttling, server errors, timeouts and connection
/// failures are retried; the service's other refusals (no such queue or bucket, access
/// denied, too large, invalid request) and an egress denial are permanent. Secret values of
/// `aws` are removed from the text.
pub fn classify<E>(service: &str, aws: &AwsConfig, error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (permanent, text, code) = match error {
        SdkError::ServiceError(context) => {
            let err = context.err();
            let status = context.raw().status().as_u16();
            let code = err.code().map(str::to_owned);
            let message = err.message().unwrap_or("no message");
            let retryable = status >= 500
                || status == 429
                || code
                    .as_deref()
                    .is_some_and(|c| RETRYABLE_CODES.contains(&c));
            let text = match &code {
                Some(code) => format!("{service} refused (HTTP {status}): {code}: {message}"),
                None => format!("{service} refused (HTTP {status}): {message}"),
            };
            (!retryable, text, code)
        }
        SdkError::TimeoutError(_) => (false, format!("{service} did not answer in time"), None),
        SdkError::DispatchFailure(failure) => {
            if let Some(denied) = egress::denial(error) {
                (true, denied.to_string(), None)
            } else {
                let text = format!(
                    "cannot reach {service}: {}",
                    DisplayErrorContext(
                        failure
                            .as_connector_error()
                            .map_or(error as &(dyn std::error::Error + 'static), |c| c
                                as &(dyn std::error::Error + 'static))
                    )
                );
                (false, text, None)
            }
        }
        SdkError::ResponseError(_) => (
            false,
            format!(
                "{service} answered unreadably: {}",
                DisplayErrorContext(error)
            ),
            None,
        ),
        other => {
            let text = format!("{service} request failed: {}", DisplayErrorContext(other));
            // Missing credentials (the default chain found none, or its endpoint is down)
            // can be fixed without changing the delivery; a request the SDK cannot build
            // cannot.
            let credentials = text.contains("credential") || text.contains("identity");
            (!credentials, text, None)
        }
    };
    Failure {
        permanent,
        error: redact(aws, text),
        code,
    }
}

/// `text` without the values of `aws`'s credentials.
pub fn redact(aws: &AwsConfig, text: String) -> String {
    let Some(credentials) = &aws.credentials else {
        return text;
    };
    let mut text = text;
    let secrets = [
        Some(&credentials.access_key_id),
        Some(&credentials.secret_access_key),
        credentials.session_token.as_ref(),
    ];
    for secret in secrets.into_iter().flatten() {
        let value = String::from_utf8_lossy(secret.expose());
        let value = value.trim();
        if value.len() >= 4 {
            text = text.replace(value, super::http::REDACTED);
        }
    }
    text
}

/// `source_id` of an event: the Source's `namespace/name`.
pub fn source_id(event: &crate::store::NewEvent) -> String {
    format!("{}/{}", event.namespace, event.source)
}

/// Runs `call` within the destination's time limit.
pub async fn within<T>(
    timeout_ms: u64,
    service: &str,
    call: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), call).await {
        Ok(result) => result,
        Err(_) => Err(Failure {
            permanent: false,
            error: format!("{service} did not answer within {timeout_ms} ms"),
            code: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookstream_crds::config::{AwsCredentials, SecretValue};

    #[test]
    fn credentials_are_removed_from_error_text() {
        let secret = |v: &str| SecretValue(v.as_bytes().to_vec());
        let aws = AwsConfig {
            region: "us-east-1".into(),
            endpoint_url: None,
            credentials: Some(AwsCredentials {
                access_key_id: secret("AKIAEXAMPLE"),
                secret_access_key: secret("very-secret-key"),
                session_token: None,
            }),
        };
        let text = redact(&aws, "key AKIAEXAMPLE with very-secret-key refused".into());
        assert_eq!(text, "key [redacted] with [redacted] refused");
    }

    #[tokio::test]
    async fn a_client_is_rebuilt_only_when_its_settings_change() {
        let clients: Clients<u32, u32> = Clients::new();
        assert_eq!(clients.get("t/a", &1, async { 10 }).await, 10);
        assert_eq!(clients.get("t/a", &1, async { 11 }).await, 10, "reused");
        assert_eq!(clients.get("t/a", &2, async { 12 }).await, 12, "rebuilt");
        assert_eq!(clients.get("t/b", &2, async { 13 }).await, 13);
    }
}
