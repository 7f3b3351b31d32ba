//! Wiring: settings in, a running gateway out. Also health, readiness, metrics, retention
//! and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::api::auth::ApiKeys;
use crate::config::{manifests, ConfigHandle, RuntimeConfig};
use crate::delivery::{self, Dispatcher};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{self, Store};

/// What request handlers share; cloned per request, so one `Arc`.
pub type AppState = Arc<App>;

/// The parts of a running gateway that handlers use.
pub struct App {
    /// Current routing snapshot.
    pub config: ConfigHandle,
    /// Database.
    pub store: Store,
    /// Delivery hand-off and circuits.
    pub dispatcher: Dispatcher,
    /// Metrics.
    pub metrics: Metrics,
    /// Startup settings.
    pub settings: Arc<Settings>,
}

/// The router: ingest (public), health and metrics (public), the API (keyed).
pub fn router(app: AppState, keys: ApiKeys) -> Router {
    let api = crate::api::routes().layer(axum::middleware::from_fn_with_state(
        keys,
        crate::api::auth::require_key,
    ));
    Router::new()
        .route(
            "/v1/ingest/{namespace}/{source}",
            any(crate::ingest::ingest),
        )
        // Ingest enforces its own (per-source) body limit while reading.
        .layer(DefaultBodyLimit::disable())
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    match sqlx::query("SELECT 1").execute(&app.store.read).await {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            warn!(error = %e, "readiness: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            hookstream_common::METRICS_CONTENT_TYPE,
        )],
        app.metrics.render(),
    )
}

/// Runs the gateway until SIGTERM or Ctrl-C: stops accepting, finishes requests and
/// deliveries in flight, flushes the database, returns.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let keys = ApiKeys::parse(&std::env::var("HOOKSTREAM_API_KEYS").unwrap_or_default())
        .context("HOOKSTREAM_API_KEYS is invalid")?;
    if keys.is_empty() && settings.config_secret.is_none() {
        warn!("no API keys configured (HOOKSTREAM_API_KEYS): the management API refuses every request");
    }
    let (initial, cluster) = match (&settings.manifests, &settings.config_secret) {
        (Some(dir), _) => (load_manifests(dir).await?, None),
        (None, Some(secret)) => {
            let cluster = crate::cluster::Cluster::connect(
                secret.clone(),
                settings.namespace.clone(),
                settings.identity.clone(),
            )
            .await?;
            info!(secret = %secret, identity = %cluster.identity, "config from the operator's Secret");
            (RuntimeConfig::empty(), Some(cluster))
        }
        (None, None) => anyhow::bail!("give --manifests DIR or --config-secret NAMESPACE/NAME"),
    };
    let store = store::open(&settings.database, settings.sqlite_sync)
        .await
        .with_context(|| format!("cannot open database {}", settings.database))?;
    let metrics = Metrics::new();
    let (config_tx, config_rx) = watch::channel(Arc::new(initial));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (dispatcher, delivery_task) = delivery::start(
        store.clone(),
        config_rx.clone(),
        metrics.clone(),
        settings.max_in_flight,
        shutdown_rx.clone(),
    )
    .await?;

    match (&cluster, &settings.manifests) {
        (Some(cluster), _) => {
            let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(crate::cluster::config::watch(
                cluster.clone(),
                config_tx,
                metrics.clone(),
                synced_tx,
            ));
            // Serve with the current config, not an empty one, when the API server answers.
            if tokio::time::timeout(CONFIG_WAIT, synced_rx).await.is_err() {
                warn!(secret = %cluster.config_secret, "the config Secret could not be read yet; serving with no routes until it can");
            }
        }
        (None, Some(dir)) => {
            tokio::spawn(manifests::watch(dir.clone(), config_tx, metrics.clone()));
        }
        (None, None) => {}
    }
    tokio::spawn(housekeeping(
        store.clone(),
        metrics.clone(),
        settings.retention,
        shutdown_rx.clone(),
    ));

    let settings = Arc::new(settings);
    let app = Arc::new(App {
        config: config_rx,
        store: store.clone(),
        dispatcher,
        metrics,
        settings: settings.clone(),
    });
    let status_task = cluster.as_ref().map(|cluster| {
        tokio::spawn(crate::cluster::keys::watch(cluster.clone(), keys.clone()));
        tokio::spawn(crate::cluster::reset::watch(cluster.clone(), app.clone()));
        tokio::spawn(crate::cluster::status::run(
            cluster.clone(),
            app.clone(),
            shutdown_rx.clone(),
        ))
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    info!(listen = %listener.local_addr()?, database = %settings.database, "hookstream gateway started");
    axum::serve(
        listener,
        router(app, keys).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(hookstream_common::shutdown_signal())
    .await?;
    info!("stopped accepting requests; finishing deliveries in flight");
    let _ = shutdown_tx.send(true);
    let _ = delivery_task.await;
    if let Some(task) = status_task {
        // Releases the status Lease, so another replica takes over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    store.writer.flush().await;
    info!("hookstream gateway stopped");
    Ok(())
}

/// How long startup waits for the config Secret before serving without routes.
const CONFIG_WAIT: Duration = Duration::from_secs(30);

async fn load_manifests(dir: &std::path::Path) -> anyhow::Result<RuntimeConfig> {
    let folder = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || manifests::load(&folder)).await? {
        Ok(config) => Ok(config),
        Err(errors) => {
            let list = errors
                .iter()
                .map(|e| format!("  - {e}"))
                .collect::<Vec<_>>()
                .join("\n");
            let count = match errors.len() {
                1 => "1 error".to_owned(),
                n => format!("{n} errors"),
            };
            anyhow::bail!(
                "the manifests in {} are invalid ({count}):\n{list}",
                dir.display()
            );
        }
    }
}

/// Retention and gauges: deletes expired events in batches, refreshes queue depths.
async fn housekeeping(
    store: Store,
    metrics: Metrics,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_prune = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if let Ok(depths) = store::read::queue_depths(&store.read).await {
            metrics.queue_depth.reset();
            for (ns, dest, n) in depths {
                metrics
                    .queue_depth
                    .with_label_values(&[&format!("{ns}/{dest}")])
                    .set(n);
            }
        }
        if last_prune.elapsed() >= Duration::from_secs(600) {
            last_prune = tokio::time::Instant::now();
            let before = store::now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
            loop {
                match store.writer.prune(before, 1000).await {
                    Ok(1000) => continue,
                    Ok(n) => {
                        if n > 0 {
                            info!(deleted = n, "retention: deleted old events");
                        }
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, "retention: cannot delete old events");
                        break;
                    }
                }
            }
        }
    }
}

/// An empty runtime config, for tests that build the router directly.
pub fn empty_config() -> Arc<RuntimeConfig> {
    Arc::new(RuntimeConfig::empty())
}
