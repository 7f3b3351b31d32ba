//! The compiler: objects plus the Secrets they reference in, one validated [`GatewayConfig`]
//! out, with every problem reported at once.
//!
//! It is pure (no I/O) so that the operator, the standalone gateway and the tests share it.
//! An object with any error is left out of the config, together with whatever depends on it
//! (a Connection whose Destination is invalid routes nothing), while every valid object is
//! kept: one broken object never takes down the routes of others.
//!
//! This module owns what every kind shares: the inputs ([`Objects`]), the result
//! ([`Compilation`], [`ConfigError`], [`Reason`]), the order in which kinds compile
//! ([`compile`]), the per-object error collector (`Ctx`), the Secret index, the reference
//! checks between kinds (`References`) and the checks several kinds use (filters, JSONata
//! transforms, networks, Standard Webhooks keys). Each kind compiles in its own module:
//! `source`, `destination`, `connection`, `topic` and `alert_rule`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use crate::config::{GatewayConfig, ObjectKey};
use crate::duration;
use crate::v1alpha1::{
    AlertRule, Connection, Destination, Filter, FilterOp, SecretKeyRef, Source, Topic, Transform,
};

mod alert_rule;
mod broker;
mod connection;
mod destination;
mod serving;
mod source;
mod topic;

pub use destination::{DEFAULT_RETRY_INTERVALS, MAX_RETRIES, MAX_TIMEOUT_SECONDS};
pub use serving::{compile_serving, LastValid, Served};

/// Namespace of objects that do not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

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
    /// Where deliveries may connect: a Destination whose URL is a literal address this
    /// denies is refused (reason `EgressDenied`).
    pub egress: crate::egress::EgressPolicy,
    /// Where each object came from (a file path), by kind and key, for error messages.
    pub origins: BTreeMap<(String, ObjectKey), String>,
}

impl Objects {
    /// Adds the objects of `other` (read from another file) to these; the egress policy
    /// stays this one's.
    pub fn append(&mut self, other: Objects) {
        self.sources.extend(other.sources);
        self.destinations.extend(other.destinations);
        self.connections.extend(other.connections);
        self.topics.extend(other.topics);
        self.alert_rules.extend(other.alert_rules);
        self.secrets.extend(other.secrets);
        self.origins.extend(other.origins);
    }
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
    /// A Destination's address is one the egress policy denies.
    EgressDenied,
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
            Reason::EgressDenied => "EgressDenied",
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
///
/// Kinds compile in dependency order (Sources and Destinations, then the Connections and
/// Topics that reference them, then AlertRules), and errors come out in that order.
pub fn compile(objects: &Objects) -> Compilation {
    let secrets = index_secrets(&objects.secrets);
    let mut run = Run {
        objects,
        secrets: &secrets,
        errors: Vec::new(),
    };
    let mut config = GatewayConfig {
        sources: run.each("Source", &objects.sources, source::compile_source),
        destinations: run.each(
            "Destination",
            &objects.destinations,
            destination::compile_destination,
        ),
        ..GatewayConfig::default()
    };

    // Names of objects that exist at all, valid or not, to tell "not found" from "not ready".
    let all_sources: BTreeSet<ObjectKey> = objects.sources.iter().map(key_of).collect();
    let valid_sources: BTreeSet<&ObjectKey> = config.sources.iter().map(|s| &s.key).collect();
    let all_destinations: BTreeSet<ObjectKey> = objects.destinations.iter().map(key_of).collect();
    let valid_destinations: BTreeSet<&ObjectKey> =
        config.destinations.iter().map(|d| &d.key).collect();
    let refs = References {
        all_sources: &all_sources,
        valid_sources: &valid_sources,
        all_destinations: &all_destinations,
        valid_destinations: &valid_destinations,
    };

    let connections = run.each("Connection", &objects.connections, |c, ctx| {
        connection::compile_connection(c, &refs, ctx)
    });
    let topics = run.each("Topic", &objects.topics, |t, ctx| {
        Some(topic::compile_topic(t, &refs, ctx))
    });
    for rule in &objects.alert_rules {
        let mut ctx = Ctx::new("AlertRule", key_of(rule), objects, &secrets);
        alert_rule::check_alert_rule(rule, &refs, &mut ctx);
        run.errors.append(&mut ctx.errors);
    }

    config.connections = connections;
    config.topics = topics;
    Compilation {
        config,
        errors: run.errors,
    }
}

/// One compile run: its inputs, and the errors of every object compiled so far.
struct Run<'a> {
    objects: &'a Objects,
    secrets: &'a SecretIndex,
    errors: Vec<ConfigError>,
}

impl Run<'_> {
    /// Compiles every object of one kind, in order, with `compile_one`. The second object of
    /// a name is a duplicate; an object's config is kept only when it has no error.
    fn each<K: ResourceExt, C>(
        &mut self,
        kind: &'static str,
        items: &[K],
        mut compile_one: impl FnMut(&K, &mut Ctx<'_>) -> Option<C>,
    ) -> Vec<C> {
        let mut compiled = Vec::new();
        let mut seen = BTreeSet::new();
        for item in items {
            let key = key_of(item);
            let mut ctx = Ctx::new(kind, key.clone(), self.objects, self.secrets);
            if !seen.insert(key) {
                ctx.duplicate();
            } else if let Some(config) = compile_one(item, &mut ctx) {
                if ctx.errors.is_empty() {
                    compiled.push(config);
                }
            }
            self.errors.append(&mut ctx.errors);
        }
        compiled
    }
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

/// Which Sources and Destinations exist, and which of them compiled, for the kinds that
/// reference them.
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
    egress: &'a crate::egress::EgressPolicy,
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
            egress: &objects.egress,
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

    /// Whether the referenced Secret exists and has the key (for optional keys).
    fn secret_has_key(&self, reference: &SecretKeyRef) -> bool {
        let key = ObjectKey::new(self.key.namespace.clone(), reference.name.clone());
        self.secrets
            .get(&key)
            .is_some_and(|data| data.contains_key(&reference.key))
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
        if let Some(problem) = filter_value_problem(filter) {
            ctx.error(
                &format!("{at}.value"),
                Reason::InvalidFilter,
                format!("operator {} {problem}", filter.op.as_str()),
            );
        }
    }
}

/// What is wrong with a filter's value for its operator, if anything.
fn filter_value_problem(filter: &Filter) -> Option<&'static str> {
    let value = filter.value.as_ref();
    match filter.op {
        FilterOp::Eq | FilterOp::Neq if value.is_none() => Some("needs a value to compare with"),
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
    }
}

fn check_transform(ctx: &mut Ctx<'_>, field: &str, transform: Option<&Transform>) {
    let Some(t) = transform else { return };
    match hookstream_transform::Expression::compile(&t.jsonata) {
        Err(e) => ctx.error(
            field,
            Reason::InvalidTransform,
            format!("JSONata does not compile: {e}"),
        ),
        Ok(expression) => {
            // hookstream binds values ($event, $headers, $query, $method, $credential), no
            // functions: every function called must be a built-in or defined in the text.
            let unknown = expression.unknown_functions(&[]);
            if !unknown.is_empty() {
                let names = unknown
                    .iter()
                    .map(|n| format!("${n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                ctx.error(
                    field,
                    Reason::InvalidTransform,
                    format!("calls {names}, which is neither a JSONata built-in function nor defined in the expression"),
                );
            }
        }
    }
}
