//! The compiler: objects plus the Secrets they reference in, one validated [`GatewayConfig`]
//! out, with every problem reported at once.
//!
//! It is pure (no I/O) so that the operator, the standalone gateway and the tests share it.
//! An object with any error is left out of the config, together with whatever depends on it
//! (a Connection whose Destination is invalid routes nothing), while every valid object is
//! kept: one broken object never takes down the routes of others.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::config::{
    CircuitConfig, ConnectionConfig, DedupConfig, DestinationConfig, GatewayConfig, HttpConfig,
    IpFilterConfig, ObjectKey, RateLimitConfig, RetryConfig, SchemaConfig, SecretValue,
    SigningConfig, SourceConfig, SubscriptionConfig, TopicConfig, VerificationConfig,
};
use crate::duration;
use crate::templates::{self, Credential, SourcePreset};
use crate::v1alpha1::{
    AlertRule, Backoff, Connection, DedupStrategy, Destination, DestinationType, Filter, FilterOp,
    HttpDestination, SecretKeyRef, SigningAlgorithm, SigningScheme, Source, Topic, Transform,
    Verification, VerificationType,
};

/// Namespace of objects that do not name one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Retry intervals used when a Destination sets none.
pub const DEFAULT_RETRY_INTERVALS: [&str; 5] = ["30s", "5m", "30m", "2h", "24h"];
const DEFAULT_MAX_RETRIES: u32 = 5;
const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
const DEFAULT_COOLDOWN: &str = "60s";
const DEFAULT_TIMEOUT_SECONDS: u32 = 30;
/// Longest destination timeout; the gateway's delivery leases are sized from it.
pub const MAX_TIMEOUT_SECONDS: u32 = 300;
/// Most retries a Destination may ask for.
pub const MAX_RETRIES: u32 = 20;
const DEFAULT_DEDUP_WINDOW_SECONDS: u64 = 300;
const DEFAULT_SIGNING_HEADER: &str = "X-Hookstream-Signature";

/// Everything the compiler reads.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Sources.
    pub sources: Vec<Source>,
    /// Destinations.
    pub destinations: Vec<Destination>,
    /// Connections.
    pub connections: Vec<Connection>,
    /// Topics.
    pub topics: Vec<Topic>,
    /// Alert rules.
    pub alert_rules: Vec<AlertRule>,
    /// Secrets that `secretRef`s may name.
    pub secrets: Vec<Secret>,
    /// Where each object came from (a file path), by kind and key, for error messages.
    pub origins: BTreeMap<(String, ObjectKey), String>,
}

/// Why an object was left out. The words are stable: they become condition reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A field has a value the gateway cannot use.
    InvalidSpec,
    /// A filter is malformed.
    InvalidFilter,
    /// A JSONata expression does not compile.
    InvalidTransform,
    /// A JSON Schema does not compile.
    InvalidSchema,
    /// A provider type or template this gateway does not support.
    Unsupported,
    /// Two objects of one kind share a namespace and name.
    DuplicateName,
    /// A referenced Secret, or its key, does not exist.
    SecretNotFound,
    /// The referenced Source does not exist.
    SourceNotFound,
    /// The referenced Destination does not exist.
    DestinationNotFound,
    /// The referenced Source exists but is invalid.
    SourceNotReady,
    /// The referenced Destination exists but is invalid.
    DestinationNotReady,
}

impl Reason {
    /// The CamelCase word used as a condition reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidSpec => "InvalidSpec",
            Reason::InvalidFilter => "InvalidFilter",
            Reason::InvalidTransform => "InvalidTransform",
            Reason::InvalidSchema => "InvalidSchema",
            Reason::Unsupported => "Unsupported",
            Reason::DuplicateName => "DuplicateName",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SourceNotFound => "SourceNotFound",
            Reason::DestinationNotFound => "DestinationNotFound",
            Reason::SourceNotReady => "SourceNotReady",
            Reason::DestinationNotReady => "DestinationNotReady",
        }
    }

    /// True when the problem is a missing or broken reference (the `ResolvedRefs`
    /// condition) rather than an invalid spec (the `Accepted` condition).
    pub fn is_reference(self) -> bool {
        matches!(
            self,
            Reason::SecretNotFound
                | Reason::SourceNotFound
                | Reason::DestinationNotFound
                | Reason::SourceNotReady
                | Reason::DestinationNotReady
        )
    }
}

/// One problem with one object: which object, which field, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Kind of the object (`Source`, `Connection`, ...).
    pub kind: String,
    /// Namespace and name of the object.
    pub object: ObjectKey,
    /// Path of the field at fault, like `spec.filters[1].op`.
    pub field: String,
    /// Stable reason.
    pub reason: Reason,
    /// What is wrong and how to fix it, in words. Never contains a secret value.
    pub message: String,
    /// Where the object came from (a file path), when known.
    pub origin: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(
            f,
            "{} {}: {}: {}",
            self.kind, self.object, self.field, self.message
        )
    }
}

/// The compiler's result: the config of every valid object, and every error found.
#[derive(Clone, Debug, Default)]
pub struct Compilation {
    /// Routing config containing only valid objects.
    pub config: GatewayConfig,
    /// Every problem, in a stable order.
    pub errors: Vec<ConfigError>,
}

impl Compilation {
    /// Errors about one object.
    pub fn errors_for<'a>(
        &'a self,
        kind: &'a str,
        key: &'a ObjectKey,
    ) -> impl Iterator<Item = &'a ConfigError> + 'a {
        self.errors
            .iter()
            .filter(move |e| e.kind == kind && &e.object == key)
    }
}

type SecretIndex = BTreeMap<ObjectKey, BTreeMap<String, Vec<u8>>>;

/// Compiles `objects` into a routing config, collecting every error.
pub fn compile(objects: &Objects) -> Compilation {
    let secrets = index_secrets(&objects.secrets);
    let mut errors = Vec::new();
    let mut config = GatewayConfig::default();

    let mut seen = BTreeSet::new();
    for source in &objects.sources {
        let key = key_of(source);
        let mut ctx = Ctx::new("Source", key.clone(), objects, &secrets);
        if !seen.insert(key.clone()) {
            ctx.duplicate();
        } else if let Some(compiled) = compile_source(source, &mut ctx) {
            if ctx.errors.is_empty() {
                config.sources.push(compiled);
            }
        }
        errors.append(&mut ctx.errors);
    }
    // Names of Sources that exist at all, valid or not, to tell "not found" from "not ready".
    let all_sources: BTreeSet<ObjectKey> = objects.sources.iter().map(key_of).collect();
    let valid_sources: BTreeSet<&ObjectKey> = config.sources.iter().map(|s| &s.key).collect();

    let mut seen = BTreeSet::new();
    for destination in &objects.destinations {
        let key = key_of(destination);
        let mut ctx = Ctx::new("Destination", key.clone(), objects, &secrets);
        if !seen.insert(key.clone()) {
            ctx.duplicate();
        } else if let Some(compiled) = compile_destination(destination, &mut ctx) {
            if ctx.errors.is_empty() {
                config.destinations.push(compiled);
            }
        }
        errors.append(&mut ctx.errors);
    }
    let all_destinations: BTreeSet<ObjectKey> = objects.destinations.iter().map(key_of).collect();
    let valid_destinations: BTreeSet<&ObjectKey> =
        config.destinations.iter().map(|d| &d.key).collect();
    let refs = References {
        all_sources: &all_sources,
        valid_sources: &valid_sources,
        all_destinations: &all_destinations,
        valid_destinations: &valid_destinations,
    };

    let mut connections = Vec::new();
    let mut seen = BTreeSet::new();
    for connection in &objects.connections {
        let key = key_of(connection);
        let mut ctx = Ctx::new("Connection", key.clone(), objects, &secrets);
        if !seen.insert(key.clone()) {
            ctx.duplicate();
        } else {
            let compiled = compile_connection(connection, &refs, &mut ctx);
            if ctx.errors.is_empty() {
                connections.extend(compiled);
            }
        }
        errors.append(&mut ctx.errors);
    }

    let mut topics = Vec::new();
    let mut seen = BTreeSet::new();
    for topic in &objects.topics {
        let key = key_of(topic);
        let mut ctx = Ctx::new("Topic", key.clone(), objects, &secrets);
        if !seen.insert(key.clone()) {
            ctx.duplicate();
        } else {
            let compiled = compile_topic(topic, &refs, &mut ctx);
            if ctx.errors.is_empty() {
                topics.push(compiled);
            }
        }
        errors.append(&mut ctx.errors);
    }

    for rule in &objects.alert_rules {
        let mut ctx = Ctx::new("AlertRule", key_of(rule), objects, &secrets);
        check_alert_rule(rule, &refs, &mut ctx);
        errors.append(&mut ctx.errors);
    }

    config.connections = connections;
    config.topics = topics;
    Compilation { config, errors }
}

fn key_of<K: ResourceExt>(object: &K) -> ObjectKey {
    ObjectKey::new(
        object
            .namespace()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        object.name_any(),
    )
}

fn index_secrets(secrets: &[Secret]) -> SecretIndex {
    let mut index = SecretIndex::new();
    for secret in secrets {
        let entry = index.entry(key_of(secret)).or_default();
        for (k, v) in secret.data.iter().flatten() {
            entry.insert(k.clone(), v.0.clone());
        }
        // stringData wins over data, as the API server merges it.
        for (k, v) in secret.string_data.iter().flatten() {
            entry.insert(k.clone(), v.as_bytes().to_vec());
        }
    }
    index
}

struct References<'a> {
    all_sources: &'a BTreeSet<ObjectKey>,
    valid_sources: &'a BTreeSet<&'a ObjectKey>,
    all_destinations: &'a BTreeSet<ObjectKey>,
    valid_destinations: &'a BTreeSet<&'a ObjectKey>,
}

impl References<'_> {
    fn check_source(&self, ctx: &mut Ctx<'_>, field: &str, name: &str) {
        let key = ObjectKey::new(ctx.key.namespace.clone(), name);
        if !self.all_sources.contains(&key) {
            ctx.error(
                field,
                Reason::SourceNotFound,
                format!("Source {key} does not exist"),
            );
        } else if !self.valid_sources.contains(&key) {
            ctx.error(
                field,
                Reason::SourceNotReady,
                format!("Source {key} is invalid; fix its errors first"),
            );
        }
    }

    fn check_destination(&self, ctx: &mut Ctx<'_>, field: &str, name: &str) {
        let key = ObjectKey::new(ctx.key.namespace.clone(), name);
        if !self.all_destinations.contains(&key) {
            ctx.error(
                field,
                Reason::DestinationNotFound,
                format!("Destination {key} does not exist"),
            );
        } else if !self.valid_destinations.contains(&key) {
            ctx.error(
                field,
                Reason::DestinationNotReady,
                format!("Destination {key} is invalid; fix its errors first"),
            );
        }
    }
}

/// Error collection for one object.
struct Ctx<'a> {
    kind: &'static str,
    key: ObjectKey,
    secrets: &'a SecretIndex,
    origin: Option<String>,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    fn new(
        kind: &'static str,
        key: ObjectKey,
        objects: &'a Objects,
        secrets: &'a SecretIndex,
    ) -> Self {
        let origin = objects
            .origins
            .get(&(kind.to_owned(), key.clone()))
            .cloned();
        Self {
            kind,
            key,
            secrets,
            origin,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, field: &str, reason: Reason, message: String) {
        self.errors.push(ConfigError {
            kind: self.kind.to_owned(),
            object: self.key.clone(),
            field: field.to_owned(),
            reason,
            message,
            origin: self.origin.clone(),
        });
    }

    fn duplicate(&mut self) {
        let message = format!(
            "another {} named {} is already defined",
            self.kind, self.key
        );
        self.error("metadata.name", Reason::DuplicateName, message);
    }

    fn secret(&mut self, field: &str, reference: &SecretKeyRef) -> Option<Vec<u8>> {
        let key = ObjectKey::new(self.key.namespace.clone(), reference.name.clone());
        let Some(data) = self.secrets.get(&key) else {
            self.error(
                field,
                Reason::SecretNotFound,
                format!("Secret {key} does not exist"),
            );
            return None;
        };
        let Some(value) = data.get(&reference.key) else {
            let message = format!("Secret {key} has no key {:?}", reference.key);
            self.error(field, Reason::SecretNotFound, message);
            return None;
        };
        if value.is_empty() {
            self.error(
                field,
                Reason::SecretNotFound,
                format!("Secret {key} key {:?} is empty", reference.key),
            );
            return None;
        }
        Some(value.clone())
    }

    fn duration_ms(&mut self, field: &str, text: &str) -> Option<u64> {
        match duration::parse(text) {
            Ok(d) if d.is_zero() => {
                self.error(
                    field,
                    Reason::InvalidSpec,
                    "duration must be greater than zero".to_owned(),
                );
                None
            }
            Ok(d) => Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Err(message) => {
                self.error(field, Reason::InvalidSpec, message);
                None
            }
        }
    }
}

/// The verification of a Source: its own fields over its template's preset.
fn compile_verification(
    ctx: &mut Ctx<'_>,
    given: Option<&Verification>,
    preset: Option<&SourcePreset>,
) -> Option<VerificationConfig> {
    let from_template = preset.and_then(|p| p.verification);
    let v = match (given, from_template, preset) {
        (Some(v), ..) => v,
        (None, Some(_), Some(p)) => {
            let message = format!(
                "is required: template {} verifies signatures; name the Secret key that holds the {} signing secret",
                p.id.as_str(),
                p.name
            );
            ctx.error("spec.verification.secretRef", Reason::InvalidSpec, message);
            return None;
        }
        (None, ..) => return None,
    };
    let Some(scheme) = v.type_.or(from_template.map(|p| p.scheme)) else {
        let message = "is required unless spec.template sets it".to_owned();
        ctx.error("spec.verification.type", Reason::InvalidSpec, message);
        return None;
    };
    // The template's header, encoding and window belong to its scheme only.
    let base = from_template.filter(|p| p.scheme == scheme);
    let refs: Vec<(String, &SecretKeyRef)> = v
        .secret_ref
        .iter()
        .map(|r| ("spec.verification.secretRef".to_owned(), r))
        .chain(
            v.secret_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("spec.verification.secretRefs[{i}]"), r)),
        )
        .collect();
    if refs.is_empty() {
        let message = "is required: the verification needs the signing secret".to_owned();
        ctx.error("spec.verification.secretRef", Reason::InvalidSpec, message);
    }
    let mut secrets = Vec::new();
    for (field, reference) in refs {
        if let Some(secret) = verification_secret(ctx, scheme, &field, reference) {
            secrets.push(secret);
        }
    }
    let header = match &v.header {
        Some(h) => {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                ctx.error(
                    "spec.verification.header",
                    Reason::InvalidSpec,
                    format!("{h:?} is not a valid header name"),
                );
            }
            h.to_ascii_lowercase()
        }
        None => base.map_or_else(
            || templates::default_header(scheme).to_owned(),
            |b| b.header.to_owned(),
        ),
    };
    let tolerance_seconds = match &v.tolerance {
        Some(text) => (ctx.duration_ms("spec.verification.tolerance", text)? / 1000).max(1),
        None => base
            .and_then(|b| b.tolerance_seconds)
            .unwrap_or_else(|| templates::default_tolerance_seconds(scheme)),
    };
    Some(VerificationConfig {
        scheme,
        secrets,
        header,
        encoding: v.encoding.or(base.and_then(|b| b.encoding)),
        prefix: v
            .prefix
            .clone()
            .or(base.and_then(|b| b.prefix.map(str::to_owned))),
        tolerance_seconds,
    })
}

/// The key material of one secretRef, in the form the scheme uses.
fn verification_secret(
    ctx: &mut Ctx<'_>,
    scheme: VerificationType,
    field: &str,
    reference: &SecretKeyRef,
) -> Option<SecretValue> {
    let raw = ctx.secret(field, reference)?;
    let what = |ctx: &Ctx<'_>, kind: &str| {
        format!(
            "Secret {}/{} key {:?} is not {kind}",
            ctx.key.namespace, reference.name, reference.key
        )
    };
    match scheme {
        VerificationType::StandardWebhooks => match standard_webhooks_key(&raw) {
            Some(key) => Some(SecretValue(key)),
            None => {
                let message = what(
                    ctx,
                    "a Standard Webhooks secret (whsec_ followed by base64)",
                );
                ctx.error(field, Reason::InvalidSpec, message);
                None
            }
        },
        VerificationType::Sendgrid => match crate::keys::ecdsa_p256_public_key(&raw) {
            Some(der) => Some(SecretValue(der)),
            None => {
                let message = what(
                    ctx,
                    "an ECDSA P-256 public key (base64 DER, as SendGrid shows it, or PEM)",
                );
                ctx.error(field, Reason::InvalidSpec, message);
                None
            }
        },
        VerificationType::BasicAuth => {
            // The referenced key holds the password; `username` of the same Secret the user.
            let user_ref = SecretKeyRef {
                name: reference.name.clone(),
                key: "username".to_owned(),
            };
            let user = ctx.secret(field, &user_ref)?;
            if user.contains(&b':') {
                let message = what(ctx, "usable: a Basic auth user name cannot contain ':'")
                    .replace(&format!("key {:?}", reference.key), "key \"username\"");
                ctx.error(field, Reason::InvalidSpec, message);
                return None;
            }
            let mut credentials = user;
            credentials.push(b':');
            credentials.extend_from_slice(&raw);
            Some(SecretValue(credentials))
        }
        _ => Some(SecretValue(raw)),
    }
}

fn compile_source(source: &Source, ctx: &mut Ctx<'_>) -> Option<SourceConfig> {
    let spec = &source.spec;
    let preset = spec.template.map(templates::source_preset);
    let verification = compile_verification(ctx, spec.verification.as_ref(), preset);

    let preset_dedup = preset
        .and_then(|p| p.dedup)
        .map(|(strategy, field)| DedupConfig {
            strategy,
            field: field.map(str::to_owned),
            window_seconds: DEFAULT_DEDUP_WINDOW_SECONDS,
        });
    let dedup = spec.dedup.as_ref().map(|d| {
        let needs_field = matches!(
            d.strategy,
            DedupStrategy::HeaderField | DedupStrategy::BodyField
        );
        let field = match (&d.field, needs_field) {
            (Some(f), true) if !f.trim().is_empty() => {
                Some(if d.strategy == DedupStrategy::HeaderField {
                    f.to_ascii_lowercase()
                } else {
                    f.strip_prefix("body.")
                        .or_else(|| f.strip_prefix("payload."))
                        .unwrap_or(f)
                        .to_owned()
                })
            }
            (_, true) => {
                let what = if d.strategy == DedupStrategy::HeaderField {
                    "a header name"
                } else {
                    "a body path like data.id"
                };
                ctx.error(
                    "spec.dedup.field",
                    Reason::InvalidSpec,
                    format!("is required for this strategy: give {what}"),
                );
                None
            }
            (_, false) => None,
        };
        DedupConfig {
            strategy: d.strategy,
            field,
            window_seconds: d.window_seconds.unwrap_or(DEFAULT_DEDUP_WINDOW_SECONDS),
        }
    });
    let dedup = dedup.or(preset_dedup);

    let ip_filter = spec.ip_filter.as_ref().map(|f| IpFilterConfig {
        allow: parse_networks(ctx, "spec.ipFilter.allow", &f.allow),
        deny: parse_networks(ctx, "spec.ipFilter.deny", &f.deny),
    });

    let schema = spec.schema.as_ref().map(|s| {
        if let Err(e) = jsonschema::validator_for(&s.json_schema) {
            ctx.error(
                "spec.schema.jsonSchema",
                Reason::InvalidSchema,
                format!("is not a valid JSON Schema: {e}"),
            );
        }
        SchemaConfig {
            action: s.action,
            json_schema: s.json_schema.clone(),
        }
    });

    if spec.max_body_bytes == Some(0) {
        ctx.error(
            "spec.maxBodyBytes",
            Reason::InvalidSpec,
            "must be at least 1".to_owned(),
        );
    }

    let rate_limit = spec.rate_limit.as_ref().and_then(|r| {
        if r.requests_per_second == 0 {
            let message = "must be at least 1".to_owned();
            ctx.error(
                "spec.rateLimit.requestsPerSecond",
                Reason::InvalidSpec,
                message,
            );
            return None;
        }
        if r.burst == Some(0) {
            ctx.error(
                "spec.rateLimit.burst",
                Reason::InvalidSpec,
                "must be at least 1".to_owned(),
            );
            return None;
        }
        Some(RateLimitConfig {
            per_second: r.requests_per_second,
            burst: r.burst.unwrap_or(r.requests_per_second),
        })
    });

    Some(SourceConfig {
        key: ctx.key.clone(),
        verification,
        dedup,
        ip_filter,
        schema,
        max_body_bytes: spec.max_body_bytes,
        rate_limit,
    })
}

/// Decodes a Standard Webhooks secret: `whsec_` followed by base64 (the prefix is optional).
fn standard_webhooks_key(raw: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    (!key.is_empty()).then_some(key)
}

fn parse_networks(ctx: &mut Ctx<'_>, field: &str, entries: &[String]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let text = entry.trim();
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net.trunc()),
            Err(_) => ctx.error(
                &format!("{field}[{i}]"),
                Reason::InvalidSpec,
                format!("{text:?} is not an IP address or CIDR range (like 10.0.0.0/8 or 2001:db8::/32)"),
            ),
        }
    }
    out
}

fn compile_destination(destination: &Destination, ctx: &mut Ctx<'_>) -> Option<DestinationConfig> {
    let spec = &destination.spec;
    let preset = spec.template.map(templates::destination_preset);
    // Services with one public intake URL need no spec.http.
    let default_http = preset
        .and_then(|p| p.default_url)
        .map(|url| HttpDestination {
            url: url.to_owned(),
            ..HttpDestination::default()
        });
    let http = match spec.type_ {
        DestinationType::Http => match spec.http.as_ref().or(default_http.as_ref()) {
            None => {
                ctx.error(
                    "spec.http",
                    Reason::InvalidSpec,
                    "is required for type http: set spec.http.url".to_owned(),
                );
                None
            }
            Some(h) => {
                match url::Url::parse(&h.url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    Ok(u) => ctx.error(
                        "spec.http.url",
                        Reason::InvalidSpec,
                        format!(
                            "{:?} must be an http or https URL with a host (scheme is {:?})",
                            h.url,
                            u.scheme()
                        ),
                    ),
                    Err(e) => ctx.error(
                        "spec.http.url",
                        Reason::InvalidSpec,
                        format!("{:?} is not a valid URL: {e}", h.url),
                    ),
                }
                // The CRD schema bounds it too; manifests read without an API server are
                // checked here. Delivery leases rely on this bound.
                let timeout_seconds = h.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
                if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout_seconds) {
                    let message = format!(
                        "{timeout_seconds} is out of range: use 1 to {MAX_TIMEOUT_SECONDS} seconds"
                    );
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
                let mut secret_headers = Vec::new();
                for (i, from) in h.headers_from.iter().enumerate() {
                    let field = format!("spec.http.headersFrom[{i}]");
                    if http::HeaderName::from_bytes(from.name.as_bytes()).is_err() {
                        ctx.error(
                            &format!("{field}.name"),
                            Reason::InvalidSpec,
                            format!("{:?} is not a valid header name", from.name),
                        );
                    }
                    if let Some(value) = ctx.secret(&format!("{field}.secretRef"), &from.secret_ref)
                    {
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
                Some(HttpConfig {
                    url: h.url.clone(),
                    method,
                    headers,
                    secret_headers,
                    timeout_ms: u64::from(timeout_seconds) * 1000,
                })
            }
        },
        other => {
            ctx.error(
                "spec.type",
                Reason::Unsupported,
                format!(
                    "destination type {:?} is not supported by this gateway yet; use http",
                    other.as_str()
                ),
            );
            None
        }
    };

    let signing = spec.signing.as_ref().and_then(|s| {
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
    });

    let retry_spec = spec.retry.clone().unwrap_or_default();
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
    let retry = RetryConfig {
        max_retries: retry_spec.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        backoff: retry_spec.backoff.unwrap_or(Backoff::Exponential),
        intervals_ms,
    };

    let breaker = spec.circuit_breaker.clone().unwrap_or_default();
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

    let mut http = http;
    let mut credential = None;
    if let Some(p) = preset {
        if spec.type_ != DestinationType::Http {
            let message = format!("template {} is for type http", p.id.as_str());
            ctx.error("spec.template", Reason::InvalidSpec, message);
        }
        match (p.credential, &spec.credentials_ref) {
            (Credential::None, _) => {}
            (_, None) => {
                let message = format!(
                    "is required for template {}: name the Secret key with the {} credential",
                    p.id.as_str(),
                    p.name
                );
                ctx.error("spec.credentialsRef", Reason::InvalidSpec, message);
            }
            (Credential::Header(name), Some(reference)) => {
                if let Some(value) = ctx.secret("spec.credentialsRef", reference) {
                    if let Some(h) = http.as_mut() {
                        h.secret_headers.push((name.to_owned(), SecretValue(value)));
                    }
                }
            }
            (Credential::Binding, Some(reference)) => {
                credential = ctx
                    .secret("spec.credentialsRef", reference)
                    .map(SecretValue);
            }
        }
    }
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

    Some(DestinationConfig {
        key: ctx.key.clone(),
        kind: spec.type_,
        http,
        signing,
        retry,
        payload_transform,
        credential,
        circuit: CircuitConfig {
            failure_threshold,
            cooldown_ms: cooldown_ms.unwrap_or(60_000),
        },
    })
}

fn compile_connection(
    connection: &Connection,
    refs: &References<'_>,
    ctx: &mut Ctx<'_>,
) -> Option<ConnectionConfig> {
    let spec = &connection.spec;
    refs.check_source(ctx, "spec.source", &spec.source);
    refs.check_destination(ctx, "spec.destination", &spec.destination);
    check_filters(ctx, "spec.filters", &spec.filters);
    check_transform(ctx, "spec.transform.jsonata", spec.transform.as_ref());
    Some(ConnectionConfig {
        key: ctx.key.clone(),
        source: spec.source.clone(),
        destination: spec.destination.clone(),
        filters: spec.filters.clone(),
        transform: spec.transform.as_ref().map(|t| t.jsonata.clone()),
        paused: spec.paused == Some(true),
    })
}

fn compile_topic(topic: &Topic, refs: &References<'_>, ctx: &mut Ctx<'_>) -> TopicConfig {
    let mut subscriptions = Vec::new();
    for (i, sub) in topic.spec.subscriptions.iter().enumerate() {
        let base = format!("spec.subscriptions[{i}]");
        refs.check_destination(ctx, &format!("{base}.destination"), &sub.destination);
        check_filters(ctx, &format!("{base}.filters"), &sub.filters);
        check_transform(
            ctx,
            &format!("{base}.transform.jsonata"),
            sub.transform.as_ref(),
        );
        subscriptions.push(SubscriptionConfig {
            destination: sub.destination.clone(),
            filters: sub.filters.clone(),
            transform: sub.transform.as_ref().map(|t| t.jsonata.clone()),
        });
    }
    TopicConfig {
        key: ctx.key.clone(),
        subscriptions,
    }
}

fn check_alert_rule(rule: &AlertRule, refs: &References<'_>, ctx: &mut Ctx<'_>) {
    let spec = &rule.spec;
    if let Some(window) = &spec.window {
        ctx.duration_ms("spec.window", window);
    }
    if let Some(cooldown) = &spec.cooldown {
        ctx.duration_ms("spec.cooldown", cooldown);
    }
    if let Some(source) = &spec.source {
        refs.check_source(ctx, "spec.source", source);
    }
    if let Some(destination) = &spec.destination {
        refs.check_destination(ctx, "spec.destination", destination);
    }
    for (i, channel) in spec.channels.iter().enumerate() {
        let Some(webhook) = &channel.webhook else {
            ctx.error(
                &format!("spec.channels[{i}]"),
                Reason::InvalidSpec,
                "must set webhook".to_owned(),
            );
            continue;
        };
        if url::Url::parse(&webhook.url).is_err() {
            ctx.error(
                &format!("spec.channels[{i}].webhook.url"),
                Reason::InvalidSpec,
                format!("{:?} is not a valid URL", webhook.url),
            );
        }
        if let Some(reference) = &webhook.secret_ref {
            ctx.secret(&format!("spec.channels[{i}].webhook.secretRef"), reference);
        }
    }
}

/// Field roots a filter may start with.
const FILTER_ROOTS: [&str; 4] = ["body", "payload", "headers", "query"];
const FILTER_FIELDS: [&str; 3] = ["method", "content_type", "source_ip"];

fn check_filters(ctx: &mut Ctx<'_>, base: &str, filters: &[Filter]) {
    for (i, filter) in filters.iter().enumerate() {
        let at = format!("{base}[{i}]");
        let root = filter.field.split('.').next().unwrap_or_default();
        let rooted = FILTER_ROOTS.contains(&root)
            && (filter.field.len() > root.len() + 1 || root == "body" || root == "payload");
        if !(rooted || FILTER_FIELDS.contains(&filter.field.as_str()))
            || filter.field.split('.').any(str::is_empty)
        {
            ctx.error(
                &format!("{at}.field"),
                Reason::InvalidFilter,
                format!(
                    "{:?} is not a filter field: start with body., payload., headers. or query., or use method, content_type or source_ip",
                    filter.field
                ),
            );
        }
        let value = filter.value.as_ref();
        let problem = match filter.op {
            FilterOp::Eq | FilterOp::Neq if value.is_none() => {
                Some("needs a value to compare with")
            }
            FilterOp::Contains if !matches!(value, Some(serde_json::Value::String(_))) => {
                Some("needs a string value")
            }
            FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte
                if !matches!(value, Some(serde_json::Value::Number(_))) =>
            {
                Some("needs a number value")
            }
            FilterOp::Exists if !matches!(value, None | Some(serde_json::Value::Bool(_))) => {
                Some("takes true or false")
            }
            FilterOp::In if !matches!(value, Some(serde_json::Value::Array(_))) => {
                Some("needs a list of values")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            ctx.error(
                &format!("{at}.value"),
                Reason::InvalidFilter,
                format!("operator {} {problem}", filter.op.as_str()),
            );
        }
    }
}

fn check_transform(ctx: &mut Ctx<'_>, field: &str, transform: Option<&Transform>) {
    if let Some(t) = transform {
        if let Err(e) = hookstream_transform::Expression::compile(&t.jsonata) {
            ctx.error(
                field,
                Reason::InvalidTransform,
                format!("JSONata does not compile: {e}"),
            );
        }
    }
}
