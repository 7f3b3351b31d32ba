//! The queue, stream and cloud destination types: their `spec.<type>` settings checked and
//! defaulted, their credentials read from the `credentialsRef` Secret's fixed keys, their
//! literal addresses checked against the egress policy, their payload values compiled.

use crate::config::{
    AwsConfig, AwsCredentials, EventbridgeConfig, KafkaConfig, KafkaSasl, PayloadValue,
    PubsubConfig, RabbitmqConfig, S3Config, SecretValue, SqsConfig,
};
use crate::v1alpha1::{
    DestinationSpec, EventbridgeDestination, KafkaDestination, PubsubDestination,
    RabbitmqDestination, RabbitmqMode, S3Destination, S3Format, SqsDestination, Transform,
};

use super::destination::{check_egress, MAX_TIMEOUT_SECONDS};
use super::{check_transform, Ctx, Reason};

const DEFAULT_TIMEOUT_SECONDS: u32 = 30;
/// The reference's object key pattern.
pub const DEFAULT_S3_KEY_PATTERN: &str = "{prefix}{yyyy}/{mm}/{dd}/{event_id}.json";
const S3_PLACEHOLDERS: [&str; 8] = [
    "prefix",
    "yyyy",
    "mm",
    "dd",
    "hh",
    "event_id",
    "namespace",
    "source",
];

/// The compiled settings of the chosen broker type, in the matching field of `out`.
#[derive(Default)]
pub(super) struct Compiled {
    pub sqs: Option<SqsConfig>,
    pub s3: Option<S3Config>,
    pub eventbridge: Option<EventbridgeConfig>,
    pub pubsub: Option<PubsubConfig>,
    pub kafka: Option<KafkaConfig>,
    pub rabbitmq: Option<RabbitmqConfig>,
}

/// The settings of `spec.type` when it is a broker type (the CRD schema requires them; a
/// manifest read without an API server is checked here).
pub(super) fn compile(ctx: &mut Ctx<'_>, spec: &DestinationSpec) -> Compiled {
    use crate::v1alpha1::DestinationType as T;
    let mut out = Compiled::default();
    let kind = spec.type_.as_str();
    let missing = |ctx: &mut Ctx<'_>| {
        ctx.error(
            &format!("spec.{kind}"),
            Reason::InvalidSpec,
            format!("is required for type {kind}"),
        );
    };
    match spec.type_ {
        T::Sqs => match &spec.sqs {
            Some(s) => out.sqs = Some(sqs(ctx, spec, s)),
            None => missing(ctx),
        },
        T::S3 => match &spec.s3 {
            Some(s) => out.s3 = Some(s3(ctx, spec, s)),
            None => missing(ctx),
        },
        T::Eventbridge => match &spec.eventbridge {
            Some(s) => out.eventbridge = Some(eventbridge(ctx, spec, s)),
            None => missing(ctx),
        },
        T::Pubsub => match &spec.pubsub {
            Some(s) => out.pubsub = Some(pubsub(ctx, spec, s)),
            None => missing(ctx),
        },
        T::Kafka => match &spec.kafka {
            Some(s) => out.kafka = Some(kafka(ctx, spec, s)),
            None => missing(ctx),
        },
        T::Rabbitmq => match &spec.rabbitmq {
            Some(s) => out.rabbitmq = rabbitmq(ctx, spec, s),
            None => missing(ctx),
        },
        T::Http | T::Websocket => {}
    }
    out
}

fn timeout_ms(ctx: &mut Ctx<'_>, field: &str, given: Option<u32>) -> u64 {
    let seconds = given.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
        let message = format!("{seconds} is out of range: use 1 to {MAX_TIMEOUT_SECONDS} seconds");
        ctx.error(field, Reason::InvalidSpec, message);
    }
    u64::from(seconds) * 1000
}

/// A per-delivery value: a field path, or a JSONata expression that must compile.
fn payload_value(ctx: &mut Ctx<'_>, field: &str, given: Option<&String>) -> Option<PayloadValue> {
    let value = PayloadValue::parse(given?);
    if let PayloadValue::Jsonata(jsonata) = &value {
        let transform = Transform {
            jsonata: jsonata.clone(),
        };
        check_transform(ctx, field, Some(&transform));
    }
    Some(value)
}

/// An http(s) endpoint URL whose literal address, if any, the egress policy allows.
fn endpoint_url(ctx: &mut Ctx<'_>, field: &str, url: &str) {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            check_egress(ctx, field, crate::egress::literal_host(url));
        }
        _ => ctx.error(
            field,
            Reason::InvalidSpec,
            format!("{url:?} must be an absolute http or https URL with a host"),
        ),
    }
}

/// `host:port` with a port; its literal address, if any, allowed by the egress policy.
fn host_port(ctx: &mut Ctx<'_>, field: &str, text: &str) -> Option<String> {
    let text = text.trim();
    let parsed = url::Url::parse(&format!("tcp://{text}")).ok();
    let Some(u) =
        parsed.filter(|u| u.host().is_some() && u.port().is_some() && u.path().is_empty())
    else {
        ctx.error(
            field,
            Reason::InvalidSpec,
            format!("{text:?} must be host:port, like kafka-0.kafka:9092"),
        );
        return None;
    };
    check_egress(ctx, field, crate::egress::literal_host(u.as_str()));
    Some(text.to_owned())
}

/// The value of `key` in the `credentialsRef` Secret; an error when it is required and
/// missing.
fn credential(
    ctx: &mut Ctx<'_>,
    spec: &DestinationSpec,
    key: &str,
    required: bool,
) -> Option<SecretValue> {
    let reference = spec.credentials_ref.as_ref()?;
    let secret_ref = crate::v1alpha1::SecretKeyRef {
        name: reference.name.clone(),
        key: key.to_owned(),
    };
    if !required && !ctx.secret_has_key(&secret_ref) {
        return None;
    }
    ctx.secret("spec.credentialsRef", &secret_ref)
        .map(SecretValue)
}

fn aws(
    ctx: &mut Ctx<'_>,
    spec: &DestinationSpec,
    kind: &str,
    region: &str,
    endpoint: Option<&String>,
) -> AwsConfig {
    if region.trim().is_empty() {
        ctx.error(
            &format!("spec.{kind}.region"),
            Reason::InvalidSpec,
            "is required, like us-east-1".to_owned(),
        );
    }
    if let Some(url) = endpoint {
        endpoint_url(ctx, &format!("spec.{kind}.endpointUrl"), url);
    }
    let credentials = spec.credentials_ref.as_ref().and_then(|_| {
        let access_key_id = credential(ctx, spec, "accessKeyId", true);
        let secret_access_key = credential(ctx, spec, "secretAccessKey", true);
        let session_token = credential(ctx, spec, "sessionToken", false);
        Some(AwsCredentials {
            access_key_id: access_key_id?,
            secret_access_key: secret_access_key?,
            session_token,
        })
    });
    AwsConfig {
        region: region.trim().to_owned(),
        endpoint_url: endpoint.cloned(),
        credentials,
    }
}

fn sqs(ctx: &mut Ctx<'_>, spec: &DestinationSpec, s: &SqsDestination) -> SqsConfig {
    endpoint_url(ctx, "spec.sqs.queueUrl", &s.queue_url);
    let fifo = s.queue_url.trim_end_matches('/').ends_with(".fifo");
    if s.message_group_id.is_some() && !fifo {
        ctx.error(
            "spec.sqs.messageGroupId",
            Reason::InvalidSpec,
            "is only for FIFO queues (whose URL ends in .fifo)".to_owned(),
        );
    }
    SqsConfig {
        aws: aws(ctx, spec, "sqs", &s.region, s.endpoint_url.as_ref()),
        queue_url: s.queue_url.clone(),
        fifo,
        message_group_id: payload_value(
            ctx,
            "spec.sqs.messageGroupId",
            s.message_group_id.as_ref(),
        ),
        timeout_ms: timeout_ms(ctx, "spec.sqs.timeoutSeconds", s.timeout_seconds),
    }
}

fn s3(ctx: &mut Ctx<'_>, spec: &DestinationSpec, s: &S3Destination) -> S3Config {
    let key_pattern = s
        .key_pattern
        .clone()
        .unwrap_or_else(|| DEFAULT_S3_KEY_PATTERN.to_owned());
    let mut rest = key_pattern.as_str();
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            let message = "has a { without its }".to_owned();
            ctx.error("spec.s3.keyPattern", Reason::InvalidSpec, message);
            break;
        };
        let name = &rest[start + 1..start + end];
        if !S3_PLACEHOLDERS.contains(&name) {
            let message = format!(
                "{{{name}}} is not a placeholder: use {}",
                S3_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            );
            ctx.error("spec.s3.keyPattern", Reason::InvalidSpec, message);
        }
        rest = &rest[start + end + 1..];
    }
    if !key_pattern.contains("{event_id}") {
        let message = "must contain {event_id}, or events would overwrite each other".to_owned();
        ctx.error("spec.s3.keyPattern", Reason::InvalidSpec, message);
    }
    S3Config {
        aws: aws(ctx, spec, "s3", &s.region, s.endpoint_url.as_ref()),
        bucket: s.bucket.clone(),
        prefix: s.prefix.clone().unwrap_or_default(),
        key_pattern,
        format: s.format.unwrap_or(S3Format::Json),
        content_type: s.content_type.clone(),
        force_path_style: s.force_path_style.unwrap_or(false),
        timeout_ms: timeout_ms(ctx, "spec.s3.timeoutSeconds", s.timeout_seconds),
    }
}

fn eventbridge(
    ctx: &mut Ctx<'_>,
    spec: &DestinationSpec,
    s: &EventbridgeDestination,
) -> EventbridgeConfig {
    EventbridgeConfig {
        aws: aws(ctx, spec, "eventbridge", &s.region, s.endpoint_url.as_ref()),
        event_bus: s
            .event_bus_arn
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        source: s.source.clone().unwrap_or_else(|| "hookstream".to_owned()),
        detail_type: s
            .detail_type
            .clone()
            .unwrap_or_else(|| "WebhookEvent".to_owned()),
        detail_type_from: payload_value(
            ctx,
            "spec.eventbridge.detailTypeFrom",
            s.detail_type_from.as_ref(),
        ),
        timeout_ms: timeout_ms(ctx, "spec.eventbridge.timeoutSeconds", s.timeout_seconds),
    }
}

fn pubsub(ctx: &mut Ctx<'_>, spec: &DestinationSpec, s: &PubsubDestination) -> PubsubConfig {
    let endpoint = s
        .endpoint
        .as_ref()
        .and_then(|e| host_port(ctx, "spec.pubsub.endpoint", e));
    let service_account_json = credential(ctx, spec, "serviceAccountJson", true);
    if let Some(json) = &service_account_json {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(json.expose()).ok();
        let usable = parsed.is_some_and(|v| {
            v.get("client_email")
                .is_some_and(serde_json::Value::is_string)
                && v.get("private_key")
                    .is_some_and(serde_json::Value::is_string)
        });
        if !usable {
            let message = "Secret key \"serviceAccountJson\" is not a service account key (JSON with client_email and private_key)".to_owned();
            ctx.error("spec.credentialsRef", Reason::InvalidSpec, message);
        }
    }
    PubsubConfig {
        project_id: s.project_id.clone(),
        topic_id: s.topic_id.clone(),
        ordering_key: payload_value(ctx, "spec.pubsub.orderingKey", s.ordering_key.as_ref()),
        endpoint,
        service_account_json,
        timeout_ms: timeout_ms(ctx, "spec.pubsub.timeoutSeconds", s.timeout_seconds),
    }
}

fn kafka(ctx: &mut Ctx<'_>, spec: &DestinationSpec, s: &KafkaDestination) -> KafkaConfig {
    let bootstrap_servers: Vec<String> = s
        .bootstrap_servers
        .split(',')
        .filter(|b| !b.trim().is_empty())
        .filter_map(|b| host_port(ctx, "spec.kafka.bootstrapServers", b))
        .collect();
    if s.bootstrap_servers.split(',').all(|b| b.trim().is_empty()) {
        let message = "must name at least one broker, like kafka-0.kafka:9092".to_owned();
        ctx.error("spec.kafka.bootstrapServers", Reason::InvalidSpec, message);
    }
    let tls_ca = s
        .tls
        .as_ref()
        .and_then(|t| t.ca_secret_ref.as_ref())
        .and_then(|r| ctx.secret("spec.kafka.tls.caSecretRef", r))
        .map(SecretValue);
    let sasl = s.sasl_mechanism.and_then(|mechanism| {
        if spec.credentials_ref.is_none() {
            let message =
                "is required with saslMechanism: a Secret with username and password".to_owned();
            ctx.error("spec.credentialsRef", Reason::InvalidSpec, message);
            return None;
        }
        let username = credential(ctx, spec, "username", true);
        let password = credential(ctx, spec, "password", true);
        Some(KafkaSasl {
            mechanism,
            username: username?,
            password: password?,
        })
    });
    KafkaConfig {
        bootstrap_servers,
        topic: s.topic.clone(),
        key: payload_value(ctx, "spec.kafka.key", s.key.as_ref()),
        tls: s.tls.is_some(),
        tls_ca,
        sasl,
        timeout_ms: timeout_ms(ctx, "spec.kafka.timeoutSeconds", s.timeout_seconds),
    }
}

/// The broker URL with its credentials: the Secret's `url`, else `spec.rabbitmq.url` with
/// the Secret's `username` and `password` (or none: RabbitMQ's `guest` from loopback).
fn rabbitmq(
    ctx: &mut Ctx<'_>,
    spec: &DestinationSpec,
    s: &RabbitmqDestination,
) -> Option<RabbitmqConfig> {
    let mode = s.mode.unwrap_or(RabbitmqMode::Amqp);
    let schemes: &[&str] = match mode {
        RabbitmqMode::Amqp => &["amqp", "amqps"],
        RabbitmqMode::Management => &["http", "https"],
    };
    let from_secret = credential(ctx, spec, "url", false);
    let text = match (&from_secret, &s.url) {
        (Some(secret), _) => match String::from_utf8(secret.expose().to_vec()) {
            Ok(text) => text,
            Err(_) => {
                let message = "Secret key \"url\" is not text".to_owned();
                ctx.error("spec.credentialsRef", Reason::InvalidSpec, message);
                return None;
            }
        },
        (None, Some(url)) => url.clone(),
        (None, None) => {
            let message = "is required (or a url key in the credentialsRef Secret), like amqp://rabbitmq:5672".to_owned();
            ctx.error("spec.rabbitmq.url", Reason::InvalidSpec, message);
            return None;
        }
    };
    // Never quote the URL of a Secret: it holds a password.
    let field = if from_secret.is_some() {
        "spec.credentialsRef"
    } else {
        "spec.rabbitmq.url"
    };
    let Some(mut url) = url::Url::parse(text.trim())
        .ok()
        .filter(|u| schemes.contains(&u.scheme()) && u.host().is_some())
    else {
        let message = format!(
            "the broker URL must be an absolute {} URL with a host for mode {}",
            schemes.join(" or "),
            if mode == RabbitmqMode::Amqp {
                "amqp"
            } else {
                "management"
            }
        );
        ctx.error(field, Reason::InvalidSpec, message);
        return None;
    };
    check_egress(ctx, field, crate::egress::literal_host(url.as_str()));
    if from_secret.is_none() {
        if !url.username().is_empty() || url.password().is_some() {
            let message = "must not hold credentials: put username and password (or the whole url) in the credentialsRef Secret".to_owned();
            ctx.error("spec.rabbitmq.url", Reason::InvalidSpec, message);
        }
        if spec.credentials_ref.is_some() {
            let username = credential(ctx, spec, "username", true)?;
            let password = credential(ctx, spec, "password", true)?;
            let username = String::from_utf8_lossy(username.expose()).into_owned();
            let password = String::from_utf8_lossy(password.expose()).into_owned();
            if url.set_username(&username).is_err() || url.set_password(Some(&password)).is_err() {
                let message = "the Secret's username and password do not fit in a URL".to_owned();
                ctx.error("spec.credentialsRef", Reason::InvalidSpec, message);
            }
        }
    }
    Some(RabbitmqConfig {
        mode,
        url: SecretValue(url.as_str().as_bytes().to_vec()),
        vhost: s.vhost.clone().unwrap_or_else(|| "/".to_owned()),
        exchange: s.exchange.clone(),
        routing_key: s.routing_key.clone().unwrap_or_default(),
        routing_key_from: payload_value(
            ctx,
            "spec.rabbitmq.routingKeyFrom",
            s.routing_key_from.as_ref(),
        ),
        timeout_ms: timeout_ms(ctx, "spec.rabbitmq.timeoutSeconds", s.timeout_seconds),
    })
}
