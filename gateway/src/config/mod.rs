//! Routing config at run time: the compiled [`GatewayConfig`] turned into ready-to-use parts
//! (JSONata expressions, schema validators, lookup tables) and published as one immutable
//! snapshot. Requests take the snapshot once and keep it; a reload builds a whole new one
//! before swapping, so a request never sees half a config.

pub mod manifests;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use hookstream_crds::config::{
    ConnectionConfig, DestinationConfig, GatewayConfig, ObjectKey, RateLimitConfig, SourceConfig,
    TopicConfig,
};
use hookstream_crds::v1alpha1::Filter;
use hookstream_transform::Expression;
use tokio::sync::watch;

use crate::access::ScopedKey;
use crate::store::RouteKind;

/// A Source ready for ingest.
pub struct RuntimeSource {
    /// Compiled settings.
    pub config: SourceConfig,
    /// Compiled body schema.
    pub schema: Option<jsonschema::Validator>,
    /// Routes whose events come from this Source.
    pub routes: Vec<Arc<Route>>,
    /// Whether ingest must parse the body as JSON (schema, body filters or body dedup).
    pub needs_body: bool,
    /// Request rate limiter. A reload starts it afresh.
    pub limiter: Option<governor::DefaultDirectRateLimiter>,
}

/// A route from a Source or Topic to a Destination.
pub struct Route {
    /// Connection or subscription.
    pub kind: RouteKind,
    /// Connection name, or `topic#index` for a subscription.
    pub name: String,
    /// Namespace of the route and its destination.
    pub namespace: String,
    /// Destination name.
    pub destination: String,
    /// Filters, all of which must match.
    pub filters: Vec<Filter>,
    /// Payload transform.
    pub transform: Option<Expression>,
    /// The destination's payload transform, applied after `transform`.
    pub payload: Option<Expression>,
    /// The destination's credential, bound as `$credential` in `payload`.
    pub credential: Option<String>,
    /// Routes no new events; its queued deliveries still go out.
    pub paused: bool,
}

impl Route {
    /// Whether any filter looks at the body (so the body must be parsed for routing).
    pub fn needs_body(&self) -> bool {
        self.filters
            .iter()
            .any(|f| f.field.starts_with("body") || f.field.starts_with("payload"))
    }
}

/// A snapshot of everything the gateway routes.
pub struct RuntimeConfig {
    /// Sources by namespace and name.
    pub sources: HashMap<ObjectKey, Arc<RuntimeSource>>,
    /// Destinations by namespace and name.
    pub destinations: HashMap<ObjectKey, Arc<DestinationConfig>>,
    /// Routes by (namespace, kind, name).
    pub routes: RouteTable,
    /// Topics by namespace and name: publish targets whose routes are the subscriptions.
    pub topics: HashMap<ObjectKey, Arc<RuntimeSource>>,
    /// The compiled config this was built from.
    pub compiled: GatewayConfig,
    /// API keys from key Secrets among the manifests (standalone only; in a cluster they
    /// are watched in the gateway's namespace).
    pub api_keys: Vec<ScopedKey>,
}

/// Shared access to the current snapshot.
pub type ConfigHandle = watch::Receiver<Arc<RuntimeConfig>>;

/// Building a snapshot failed (the compiler already checked everything, so this means the
/// config came from an incompatible producer).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A transform did not compile.
    #[error("{route}: transform does not compile: {message}")]
    Transform {
        /// Route.
        route: String,
        /// Why.
        message: String,
    },
    /// A schema did not compile.
    #[error("Source {source_key}: JSON Schema does not compile: {message}")]
    Schema {
        /// Source.
        source_key: ObjectKey,
        /// Why.
        message: String,
    },
}

impl RuntimeConfig {
    /// An empty config (nothing routed).
    pub fn empty() -> RuntimeConfig {
        RuntimeConfig {
            sources: HashMap::new(),
            destinations: HashMap::new(),
            routes: HashMap::new(),
            topics: HashMap::new(),
            compiled: GatewayConfig::default(),
            api_keys: Vec::new(),
        }
    }

    /// Builds a snapshot from a compiled config.
    pub fn build(compiled: GatewayConfig) -> Result<RuntimeConfig, BuildError> {
        let destinations: HashMap<ObjectKey, Arc<DestinationConfig>> = compiled
            .destinations
            .iter()
            .map(|d| (d.key.clone(), Arc::new(d.clone())))
            .collect();
        let payloads = destination_payloads(&compiled.destinations)?;
        let mut routes = HashMap::new();
        let by_source = connection_routes(&compiled.connections, &payloads, &mut routes)?;
        let topics = topic_targets(&compiled.topics, &payloads, &mut routes)?;
        let sources = runtime_sources(&compiled.sources, by_source)?;
        Ok(RuntimeConfig {
            sources,
            destinations,
            routes,
            topics,
            compiled,
            api_keys: Vec::new(),
        })
    }
}

/// Routes by (namespace, kind, name).
type RouteTable = HashMap<(String, RouteKind, String), Arc<Route>>;

/// Each destination's payload transform and credential, compiled once and shared by its
/// routes.
fn destination_payloads(
    destinations: &[DestinationConfig],
) -> Result<HashMap<ObjectKey, DestinationPayload>, BuildError> {
    let mut payloads = HashMap::new();
    for d in destinations {
        let expression = compile_transform(
            &format!("Destination {}", d.key),
            d.payload_transform.as_deref(),
        )?;
        let credential = d
            .credential
            .as_ref()
            .map(|c| String::from_utf8_lossy(c.expose()).into_owned());
        payloads.insert(d.key.clone(), (expression, credential));
    }
    Ok(payloads)
}

fn payload_of(
    payloads: &HashMap<ObjectKey, DestinationPayload>,
    namespace: &str,
    destination: &str,
) -> DestinationPayload {
    payloads
        .get(&ObjectKey::new(namespace, destination))
        .cloned()
        .unwrap_or_default()
}

/// The Connections' routes, added to `routes` and returned by Source.
fn connection_routes(
    connections: &[ConnectionConfig],
    payloads: &HashMap<ObjectKey, DestinationPayload>,
    routes: &mut RouteTable,
) -> Result<HashMap<ObjectKey, Vec<Arc<Route>>>, BuildError> {
    let mut by_source: HashMap<ObjectKey, Vec<Arc<Route>>> = HashMap::new();
    for c in connections {
        let (payload, credential) = payload_of(payloads, &c.key.namespace, &c.destination);
        let route = Arc::new(Route {
            payload,
            credential,
            ..connection_route(c)?
        });
        by_source
            .entry(ObjectKey::new(c.key.namespace.clone(), c.source.clone()))
            .or_default()
            .push(route.clone());
        let key = (
            c.key.namespace.clone(),
            RouteKind::Connection,
            c.key.name.clone(),
        );
        routes.insert(key, route);
    }
    Ok(by_source)
}

/// The Topics as publish targets whose routes are their subscriptions (added to `routes`). A
/// publish is an ingest without the Source checks (callers authenticate with an API key
/// instead).
fn topic_targets(
    topics: &[TopicConfig],
    payloads: &HashMap<ObjectKey, DestinationPayload>,
    routes: &mut RouteTable,
) -> Result<HashMap<ObjectKey, Arc<RuntimeSource>>, BuildError> {
    let mut targets = HashMap::new();
    for t in topics {
        let mut subs = Vec::new();
        for (i, s) in t.subscriptions.iter().enumerate() {
            let name = format!("{}#{i}", t.key.name);
            let (payload, credential) = payload_of(payloads, &t.key.namespace, &s.destination);
            let route = Arc::new(Route {
                payload,
                credential,
                kind: RouteKind::Subscription,
                name: name.clone(),
                namespace: t.key.namespace.clone(),
                destination: s.destination.clone(),
                filters: s.filters.clone(),
                transform: compile_transform(&format!("Topic {}", t.key), s.transform.as_deref())?,
                paused: false,
            });
            routes.insert(
                (t.key.namespace.clone(), RouteKind::Subscription, name),
                route.clone(),
            );
            subs.push(route);
        }
        let target = RuntimeSource {
            config: SourceConfig {
                key: t.key.clone(),
                verification: None,
                dedup: None,
                ip_filter: None,
                schema: None,
                max_body_bytes: None,
                rate_limit: None,
                keep_credential_headers: false,
            },
            schema: None,
            needs_body: subs.iter().any(|r| r.needs_body()),
            limiter: None,
            routes: subs,
        };
        targets.insert(t.key.clone(), Arc::new(target));
    }
    Ok(targets)
}

/// The Sources, each with its compiled schema, rate limiter and routes.
fn runtime_sources(
    sources: &[SourceConfig],
    mut by_source: HashMap<ObjectKey, Vec<Arc<Route>>>,
) -> Result<HashMap<ObjectKey, Arc<RuntimeSource>>, BuildError> {
    let mut out = HashMap::new();
    for s in sources {
        let schema = match &s.schema {
            Some(schema) => Some(jsonschema::validator_for(&schema.json_schema).map_err(|e| {
                BuildError::Schema {
                    source_key: s.key.clone(),
                    message: e.to_string(),
                }
            })?),
            None => None,
        };
        let routes = by_source.remove(&s.key).unwrap_or_default();
        let body_dedup = s
            .dedup
            .as_ref()
            .is_some_and(|d| d.strategy == hookstream_crds::v1alpha1::DedupStrategy::BodyField);
        let runtime = RuntimeSource {
            limiter: s.rate_limit.map(rate_limiter),
            needs_body: schema.is_some() || body_dedup || routes.iter().any(|r| r.needs_body()),
            config: s.clone(),
            schema,
            routes,
        };
        out.insert(s.key.clone(), Arc::new(runtime));
    }
    Ok(out)
}

fn rate_limiter(r: RateLimitConfig) -> governor::DefaultDirectRateLimiter {
    // The compiler guarantees both are at least 1.
    let per_second = NonZeroU32::new(r.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(r.burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(governor::Quota::per_second(per_second).allow_burst(burst))
}

/// A destination's payload transform and credential.
type DestinationPayload = (Option<Expression>, Option<String>);

fn connection_route(c: &ConnectionConfig) -> Result<Route, BuildError> {
    Ok(Route {
        payload: None,
        credential: None,
        kind: RouteKind::Connection,
        name: c.key.name.clone(),
        namespace: c.key.namespace.clone(),
        destination: c.destination.clone(),
        filters: c.filters.clone(),
        transform: compile_transform(&format!("Connection {}", c.key), c.transform.as_deref())?,
        paused: c.paused,
    })
}

fn compile_transform(route: &str, source: Option<&str>) -> Result<Option<Expression>, BuildError> {
    source
        .map(|s| {
            Expression::compile(s).map_err(|e| BuildError::Transform {
                route: route.to_owned(),
                message: e.to_string(),
            })
        })
        .transpose()
}
