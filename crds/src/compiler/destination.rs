//! Destinations: the delivery targets. This module owns a Destination's checks and
//! defaults, one step each: the HTTP settings (URL, timeout, method, static and
//! Secret-sourced headers), outbound signing, the retry policy, the circuit breaker, the
//! template's credential and the payload transform.

use crate::config::{
    CircuitConfig, DestinationConfig, HttpConfig, RetryConfig, SecretValue, SigningConfig,
    WebsocketConfig,
};
use crate::templates::{self, Credential, DestinationPreset};
use crate::v1alpha1::{
    Backoff, CircuitBreakerPolicy, Destination, DestinationSpec, DestinationType, HeaderFromSecret,
    HttpDestination, RetryPolicy, Signing, SigningAlgorithm, SigningScheme, Transform,
};

use super::{check_transform, standard_webhooks_key, Ctx, Reason};

/// Retry intervals used when a Destination sets none.
pub const DEFAULT_RETRY_INTERVALS: [&str; 5] = ["30s", "5m", "30m", "2h", "24h"];
/// Longest destination timeout; the gateway's delivery leases are sized from it.
pub const MAX_TIMEOUT_SECONDS: u32 = 300;
/// Most retries a Destination may ask for.
pub const MAX_RETRIES: u32 = 20;
const DEFAULT_MAX_RETRIES: u32 = 5;
const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
const DEFAULT_COOLDOWN: &str = "60s";
pub(super) const DEFAULT_TIMEOUT_SECONDS: u32 = 30;
const DEFAULT_SIGNING_HEADER: &str = "X-Hookstream-Signature";

pub(super) fn compile_destination(
    destination: &Destination,
    ctx: &mut Ctx<'_>,
) -> Option<DestinationConfig> {
    let spec = &destination.spec;
    let preset = spec.template.map(templates::destination_preset);
    // Services with one public intake URL need no spec.http.
    let default_http = preset
        .and_then(|p| p.default_url)
        .map(|url| HttpDestination {
            url: url.to_owned(),
            ..HttpDestination::default()
        });
    let websocket =
        (spec.type_ == DestinationType::Websocket).then(|| compile_websocket(ctx, spec));
    let mut http = match spec.type_ {
        DestinationType::Http => compile_http(ctx, spec.http.as_ref().or(default_http.as_ref())),
        _ => None,
    };
    let brokers = super::broker::compile(ctx, spec);
    let signing = spec.signing.as_ref().and_then(|s| compile_signing(ctx, s));
    let retry = compile_retry(ctx, spec.retry.clone().unwrap_or_default());
    let circuit = compile_circuit(ctx, spec.circuit_breaker.clone().unwrap_or_default());
    let credential = preset.and_then(|p| apply_template(ctx, spec, p, &mut http));
    let payload_transform = compile_payload_transform(ctx, spec, preset);

    Some(DestinationConfig {
        key: ctx.key.clone(),
        kind: spec.type_,
        http,
        websocket,
        sqs: brokers.sqs,
        s3: brokers.s3,
        eventbridge: brokers.eventbridge,
        pubsub: brokers.pubsub,
        kafka: brokers.kafka,
        rabbitmq: brokers.rabbitmq,
        signing,
        retry,
        payload_transform,
        credential,
        circuit,
        concurrency: compile_concurrency(ctx, spec.concurrency),
        rate_limit: compile_rate_limit(ctx, spec.rate_limit),
    })
}

/// The channel of a websocket Destination: its `channelName`, by default its own name,
/// within its namespace.
fn compile_websocket(ctx: &Ctx<'_>, spec: &DestinationSpec) -> WebsocketConfig {
    let name = spec
        .websocket
        .as_ref()
        .and_then(|w| w.channel_name.clone())
        .unwrap_or_else(|| ctx.key.name.clone());
    WebsocketConfig {
        channel: format!("deliveries:{}/{name}", ctx.key.namespace),
    }
}

/// Most deliveries to the gateway's whole in-flight budget.
const MAX_CONCURRENCY: u32 = 1024;

fn compile_concurrency(ctx: &mut Ctx<'_>, given: Option<u32>) -> u32 {
    match given {
        None => crate::config::DEFAULT_CONCURRENCY,
        Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => n,
        Some(n) => {
            let message = format!("{n} is out of range: use 1 to {MAX_CONCURRENCY}");
            ctx.error("spec.concurrency", Reason::InvalidSpec, message);
            crate::config::DEFAULT_CONCURRENCY
        }
    }
}

fn compile_rate_limit(ctx: &mut Ctx<'_>, given: Option<u32>) -> Option<u32> {
    match given {
        Some(0) => {
            let message = "must be at least 1 delivery per second".to_owned();
            ctx.error("spec.rateLimit", Reason::InvalidSpec, message);
            None
        }
        other => other,
    }
}

/// The HTTP settings of a Destination of type http: its own `spec.http`, or else its
/// template's default URL.
fn compile_http(ctx: &mut Ctx<'_>, given: Option<&HttpDestination>) -> Option<HttpConfig> {
    let Some(h) = given else {
        ctx.error(
            "spec.http",
            Reason::InvalidSpec,
            "is required for type http: set spec.http.url".to_owned(),
        );
        return None;
    };
    check_url(ctx, &h.url);
    check_egress(ctx, "spec.http.url", crate::egress::literal_host(&h.url));
    // The CRD schema bounds it too; manifests read without an API server are
    // checked here. Delivery leases rely on this bound.
    let timeout_seconds = h.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout_seconds) {
        let message =
            format!("{timeout_seconds} is out of range: use 1 to {MAX_TIMEOUT_SECONDS} seconds");
        ctx.error("spec.http.timeoutSeconds", Reason::InvalidSpec, message);
    }
    let method = h.method.as_deref().unwrap_or("POST").to_ascii_uppercase();
    if http::Method::from_bytes(method.as_bytes()).is_err() {
        ctx.error(
            "spec.http.method",
            Reason::InvalidSpec,
            format!("{method:?} is not an HTTP method"),
        );
    }
    let headers = compile_headers(ctx, h);
    let secret_headers = compile_secret_headers(ctx, &h.headers_from);
    Some(HttpConfig {
        url: h.url.clone(),
        method,
        headers,
        secret_headers,
        timeout_ms: u64::from(timeout_seconds) * 1000,
    })
}

/// A URL whose host is a literal address must be one the egress policy allows (a host
/// name is checked by the gateway each time it connects).
pub(super) fn check_egress(ctx: &mut Ctx<'_>, field: &str, address: Option<std::net::IpAddr>) {
    if let Some(address) = address {
        if let Err(denied) = ctx.egress.check(address) {
            ctx.error(field, Reason::EgressDenied, denied.to_string());
        }
    }
}

/// An absolute http or https URL with a host.
fn check_url(ctx: &mut Ctx<'_>, url: &str) {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => ctx.error(
            "spec.http.url",
            Reason::InvalidSpec,
            format!(
                "{:?} must be an http or https URL with a host (scheme is {:?})",
                url,
                u.scheme()
            ),
        ),
        Err(e) => ctx.error(
            "spec.http.url",
            Reason::InvalidSpec,
            format!("{url:?} is not a valid URL: {e}"),
        ),
    }
}

/// Static headers (`spec.http.headers`), in name order.
fn compile_headers(ctx: &mut Ctx<'_>, h: &HttpDestination) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for (name, value) in &h.headers {
        let field = format!("spec.http.headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            ctx.error(
                &field,
                Reason::InvalidSpec,
                format!("{name:?} is not a valid header name"),
            );
        } else if http::HeaderValue::from_str(value).is_err() {
            ctx.error(
                &field,
                Reason::InvalidSpec,
                "value has characters a header cannot carry".to_owned(),
            );
        }
        headers.push((name.clone(), value.clone()));
    }
    headers
}

/// Headers whose values come from Secrets (`spec.http.headersFrom`).
fn compile_secret_headers(
    ctx: &mut Ctx<'_>,
    headers_from: &[HeaderFromSecret],
) -> Vec<(String, SecretValue)> {
    let mut secret_headers = Vec::new();
    for (i, from) in headers_from.iter().enumerate() {
        let field = format!("spec.http.headersFrom[{i}]");
        if http::HeaderName::from_bytes(from.name.as_bytes()).is_err() {
            ctx.error(
                &format!("{field}.name"),
                Reason::InvalidSpec,
                format!("{:?} is not a valid header name", from.name),
            );
        }
        if let Some(value) = ctx.secret(&format!("{field}.secretRef"), &from.secret_ref) {
            if http::HeaderValue::from_bytes(&value).is_err() {
                ctx.error(
                    &format!("{field}.secretRef"),
                    Reason::InvalidSpec,
                    "secret value has characters a header cannot carry".to_owned(),
                );
            }
            secret_headers.push((from.name.clone(), SecretValue(value)));
        }
    }
    secret_headers
}

/// Outbound signing: the header, and the key of every secretRef (`secretRef`, then
/// `secretRefs`) in the form the scheme uses. `None` at the first unusable key.
fn compile_signing(ctx: &mut Ctx<'_>, s: &Signing) -> Option<SigningConfig> {
    if let Some(h) = &s.header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            let message = format!("{h:?} is not a valid header name");
            ctx.error("spec.signing.header", Reason::InvalidSpec, message);
        }
    }
    let scheme = s.scheme.unwrap_or(SigningScheme::Hmac);
    let refs = std::iter::once(("spec.signing.secretRef".to_owned(), &s.secret_ref)).chain(
        s.secret_refs
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("spec.signing.secretRefs[{i}]"), r)),
    );
    let mut secrets = Vec::new();
    for (field, reference) in refs {
        let raw = ctx.secret(&field, reference)?;
        if scheme == SigningScheme::StandardWebhooks {
            let Some(key) = standard_webhooks_key(&raw) else {
                let message = format!(
                    "Secret {}/{} key {:?} is not a Standard Webhooks secret (whsec_ followed by base64)",
                    ctx.key.namespace, reference.name, reference.key
                );
                ctx.error(&field, Reason::InvalidSpec, message);
                return None;
            };
            secrets.push(SecretValue(key));
        } else {
            secrets.push(SecretValue(raw));
        }
    }
    Some(SigningConfig {
        scheme,
        secrets,
        algorithm: s.algorithm.unwrap_or(SigningAlgorithm::Sha256),
        header: s
            .header
            .clone()
            .unwrap_or_else(|| DEFAULT_SIGNING_HEADER.to_owned()),
    })
}

/// The retry policy, with [`DEFAULT_RETRY_INTERVALS`] when none are given.
fn compile_retry(ctx: &mut Ctx<'_>, retry_spec: RetryPolicy) -> RetryConfig {
    let interval_texts: Vec<String> = match retry_spec.intervals {
        Some(list) if list.is_empty() => {
            ctx.error(
                "spec.retry.intervals",
                Reason::InvalidSpec,
                "must list at least one interval, like [30s, 5m]".to_owned(),
            );
            Vec::new()
        }
        Some(list) => list,
        None => DEFAULT_RETRY_INTERVALS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
    };
    let mut intervals_ms = Vec::new();
    for (i, text) in interval_texts.iter().enumerate() {
        if let Some(ms) = ctx.duration_ms(&format!("spec.retry.intervals[{i}]"), text) {
            intervals_ms.push(ms);
        }
    }
    if retry_spec.max_retries.is_some_and(|n| n > MAX_RETRIES) {
        let message = format!("must be at most {MAX_RETRIES}");
        ctx.error("spec.retry.maxRetries", Reason::InvalidSpec, message);
    }
    RetryConfig {
        max_retries: retry_spec.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        backoff: retry_spec.backoff.unwrap_or(Backoff::Exponential),
        intervals_ms,
    }
}

/// The circuit breaker: failures that open it and how long it stays open.
fn compile_circuit(ctx: &mut Ctx<'_>, breaker: CircuitBreakerPolicy) -> CircuitConfig {
    let failure_threshold = breaker
        .failure_threshold
        .unwrap_or(DEFAULT_FAILURE_THRESHOLD);
    if failure_threshold == 0 {
        ctx.error(
            "spec.circuitBreaker.failureThreshold",
            Reason::InvalidSpec,
            "must be at least 1".to_owned(),
        );
    }
    let cooldown_ms = ctx.duration_ms(
        "spec.circuitBreaker.cooldown",
        breaker.cooldown.as_deref().unwrap_or(DEFAULT_COOLDOWN),
    );
    CircuitConfig {
        failure_threshold,
        cooldown_ms: cooldown_ms.unwrap_or(60_000),
    }
}

/// The template's credential from `spec.credentialsRef`: a header added to `http`, or the
/// returned binding credential.
fn apply_template(
    ctx: &mut Ctx<'_>,
    spec: &DestinationSpec,
    p: &DestinationPreset,
    http: &mut Option<HttpConfig>,
) -> Option<SecretValue> {
    if spec.type_ != DestinationType::Http {
        let message = format!("template {} is for type http", p.id.as_str());
        ctx.error("spec.template", Reason::InvalidSpec, message);
    }
    match (p.credential, &spec.credentials_ref) {
        (Credential::None, _) => None,
        (_, None) => {
            let message = format!(
                "is required for template {}: name the Secret key with the {} credential",
                p.id.as_str(),
                p.name
            );
            ctx.error("spec.credentialsRef", Reason::InvalidSpec, message);
            None
        }
        (_, Some(reference)) if reference.key.is_none() => {
            let message = format!(
                "credentialsRef.key is required for template {}: name the Secret key with the {} credential",
                p.id.as_str(),
                p.name
            );
            ctx.error("spec.credentialsRef", Reason::InvalidSpec, message);
            None
        }
        (Credential::Header(name), Some(reference)) => {
            let reference = key_ref(reference);
            if let Some(value) = ctx.secret("spec.credentialsRef", &reference) {
                if let Some(h) = http.as_mut() {
                    h.secret_headers.push((name.to_owned(), SecretValue(value)));
                }
            }
            None
        }
        (Credential::Binding, Some(reference)) => ctx
            .secret("spec.credentialsRef", &key_ref(reference))
            .map(SecretValue),
    }
}

/// A template's `credentialsRef` (its key checked present) as a reference to one key.
fn key_ref(reference: &crate::v1alpha1::CredentialsRef) -> crate::v1alpha1::SecretKeyRef {
    crate::v1alpha1::SecretKeyRef {
        name: reference.name.clone(),
        key: reference.key.clone().unwrap_or_default(),
    }
}

/// The payload transform: the Destination's own, or else its template's; it must compile.
fn compile_payload_transform(
    ctx: &mut Ctx<'_>,
    spec: &DestinationSpec,
    preset: Option<&DestinationPreset>,
) -> Option<String> {
    let payload_transform = match &spec.transform {
        Some(t) => Some(t.jsonata.clone()),
        None => preset.and_then(|p| p.transform).map(str::to_owned),
    };
    if let Some(jsonata) = &payload_transform {
        let transform = Transform {
            jsonata: jsonata.clone(),
        };
        check_transform(ctx, "spec.transform.jsonata", Some(&transform));
    }
    payload_transform
}
