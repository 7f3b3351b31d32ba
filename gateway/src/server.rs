//! Wiring: settings in, a running gateway out, and a graceful shutdown. Each part gets the
//! handles it needs: the HTTP layer the [`App`], background tasks their own few handles.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::access::ApiKeys;
use crate::app::App;
use crate::cluster::Cluster;
use crate::config::{manifests, ConfigHandle, RuntimeConfig};
use crate::delivery::{self, Dispatcher};
use crate::ingest::{gate, Ingest};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{self, SharedStore};
use hookstream_transform::sandbox::Sandbox;

/// How long startup waits for the config Secret before serving without routes.
const CONFIG_WAIT: Duration = Duration::from_secs(30);

/// Runs the gateway until SIGTERM or Ctrl-C: stops accepting, finishes requests and
/// deliveries in flight, flushes the store, returns.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let keys = ApiKeys::parse(&std::env::var("HOOKSTREAM_API_KEYS").unwrap_or_default())
        .context("HOOKSTREAM_API_KEYS is invalid")?;
    let (initial, cluster, memory) = initial_config(&settings).await?;
    if keys.is_empty() && initial.api_keys.is_empty() && settings.config_secret.is_none() {
        warn!("no API keys configured (HOOKSTREAM_API_KEYS or a key Secret among the manifests): the management API refuses every request");
    }
    let store = store::open(
        &settings.database,
        store::Options {
            sqlite_sync: settings.sqlite_sync,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open the database: {}", store::error_chain(&e)))?;
    let metrics = Metrics::new();
    let (config_tx, config_rx) = watch::channel(Arc::new(initial));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let egress = delivery::provider::egress::Egress::new(settings.egress_policy());
    let sandbox = start_sandbox(&settings).await?;
    let hub = delivery::provider::websocket::Hub::new();
    let (dispatcher, delivery_task) = delivery::start(
        delivery::Setup {
            store: store.clone(),
            config: config_rx.clone(),
            metrics: metrics.clone(),
            max_in_flight: settings.max_in_flight,
            shutdown_grace: settings.shutdown_grace,
            egress: egress.clone(),
            sandbox,
            hub: hub.clone(),
        },
        shutdown_rx.clone(),
    )
    .await?;
    watch_config(&settings, cluster.as_ref(), memory, config_tx, &metrics).await;
    if cluster.is_none() {
        follow_manifest_keys(config_rx.clone(), keys.clone());
    }
    tokio::spawn(crate::housekeeping::run(
        store.clone(),
        config_rx.clone(),
        metrics.clone(),
        settings.retention,
        shutdown_rx.clone(),
    ));
    let status_task = cluster.as_ref().map(|cluster| {
        start_cluster_tasks(
            cluster,
            &keys,
            &store,
            &config_rx,
            &dispatcher,
            &shutdown_rx,
        )
    });
    let tokens = cluster.as_ref().map(|cluster| {
        Arc::new(crate::cluster::tokens::Reviewer::new(
            cluster.client.clone(),
            config_rx.clone(),
        )) as Arc<dyn crate::access::TokenAuthority>
    });
    let app = Arc::new(App {
        config: config_rx,
        store: store.clone(),
        ingest: Ingest {
            store: store.clone(),
            dispatcher: dispatcher.clone(),
            trusted_proxies: settings.trusted_proxies.clone().into(),
            body: gate::BodyLimits {
                max_bytes: settings.max_body_bytes,
                read_timeout: settings.body_read_timeout,
            },
            failures: gate::failure_budget(),
            max_hops: settings.max_hops,
        },
        dispatcher,
        metrics,
        hub,
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    egress.listening_on(listener.local_addr()?);
    info!(listen = %listener.local_addr()?, "hookstream gateway started");
    let open_connections = app.metrics.open_connections.clone();
    crate::listen::serve(
        listener,
        crate::http::router(app, keys, tokens),
        connection_limits(&settings),
        open_connections,
        hookstream_common::shutdown_signal(),
    )
    .await;
    info!("stopped accepting requests; finishing deliveries in flight");
    let _ = shutdown_tx.send(true);
    let _ = delivery_task.await;
    if let Some(task) = status_task {
        // Releases the status Lease, so another replica takes over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    store.flush().await;
    info!("hookstream gateway stopped");
    Ok(())
}

/// Starts the transform workers' pool with one worker, so a missing or broken worker program
/// stops the start with the reason instead of failing every transformed delivery.
async fn start_sandbox(settings: &Settings) -> anyhow::Result<Arc<Sandbox>> {
    let program = settings.transform_worker()?;
    let limits = settings.sandbox_limits();
    let sandbox = Sandbox::new(program.clone(), limits);
    sandbox.warm_up().await.with_context(|| {
        format!(
            "cannot start the transform worker {} (build it with `cargo build -p hookstream-gateway`, or give --transform-worker)",
            program.display()
        )
    })?;
    info!(
        workers = limits.workers,
        memory_mib = limits.memory_bytes / (1024 * 1024),
        timeout_ms = u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
        "transform workers ready"
    );
    Ok(sandbox)
}

/// The connection limits of the listener, from the flags.
fn connection_limits(settings: &Settings) -> crate::listen::Limits {
    crate::listen::Limits {
        max_connections: settings.max_connections.get(),
        header_read_timeout: settings.header_read_timeout,
        idle_timeout: settings.idle_timeout,
    }
}

/// The config to start with: the manifests folder compiled (and what reloads start from), or
/// (in a cluster) nothing until the config Secret is read.
async fn initial_config(
    settings: &Settings,
) -> anyhow::Result<(RuntimeConfig, Option<Cluster>, manifests::Memory)> {
    match (&settings.manifests, &settings.config_secret) {
        (Some(dir), _) => {
            let (config, memory) = load_manifests(dir, settings.egress_policy()).await?;
            Ok((config, None, memory))
        }
        (None, Some(secret)) => {
            let cluster = Cluster::connect(
                secret.clone(),
                settings.namespace.clone(),
                settings.identity.clone(),
            )
            .await?;
            info!(secret = %secret, identity = %cluster.identity, "config from the operator's Secret");
            Ok((
                RuntimeConfig::empty(),
                Some(cluster),
                manifests::Memory::default(),
            ))
        }
        (None, None) => anyhow::bail!("give --manifests DIR or --config-secret NAMESPACE/NAME"),
    }
}

/// Starts the watch that publishes config changes; in a cluster, waits (a while) for the
/// first read of the config Secret, so the gateway serves with the current routes.
async fn watch_config(
    settings: &Settings,
    cluster: Option<&Cluster>,
    memory: manifests::Memory,
    publish: watch::Sender<Arc<RuntimeConfig>>,
    metrics: &Metrics,
) {
    match (cluster, &settings.manifests) {
        (Some(cluster), _) => {
            let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(crate::cluster::config::watch(
                cluster.clone(),
                publish,
                metrics.clone(),
                synced_tx,
            ));
            if tokio::time::timeout(CONFIG_WAIT, synced_rx).await.is_err() {
                warn!(secret = %cluster.config_secret, "the config Secret could not be read yet; serving with no routes until it can");
            }
        }
        (None, Some(dir)) => {
            manifests::watch(
                dir.clone(),
                settings.egress_policy(),
                memory,
                publish,
                metrics.clone(),
            );
        }
        (None, None) => {}
    }
}

/// Keeps `keys` equal to the startup keys plus the keys of the manifests' key Secrets, from
/// now on (before this returns) and as the manifests change (standalone).
fn follow_manifest_keys(mut config: ConfigHandle, keys: ApiKeys) {
    let startup = keys.keys();
    let update = move |config: &mut ConfigHandle| {
        let mut all = startup.clone();
        all.extend(config.borrow_and_update().api_keys.iter().cloned());
        keys.replace(all);
    };
    update(&mut config);
    tokio::spawn(async move {
        while config.changed().await.is_ok() {
            update(&mut config);
        }
    });
}

/// API keys from labelled Secrets, circuit resets by annotation, and the status writer.
/// Returns the status writer's task, which releases its Lease at shutdown.
fn start_cluster_tasks(
    cluster: &Cluster,
    keys: &ApiKeys,
    store: &SharedStore,
    config: &ConfigHandle,
    dispatcher: &Dispatcher,
    shutdown: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(crate::cluster::keys::watch(cluster.clone(), keys.clone()));
    tokio::spawn(crate::cluster::reset::watch(
        cluster.clone(),
        config.clone(),
        dispatcher.circuits.clone(),
    ));
    tokio::spawn(crate::cluster::status::run(
        cluster.clone(),
        crate::cluster::status::Sources {
            store: store.clone(),
            circuits: dispatcher.circuits.clone(),
            config: config.clone(),
        },
        shutdown.clone(),
    ))
}

async fn load_manifests(
    dir: &std::path::Path,
    egress: hookstream_crds::egress::EgressPolicy,
) -> anyhow::Result<(RuntimeConfig, manifests::Memory)> {
    let folder = dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || {
        let mut memory = manifests::Memory::default();
        manifests::load(&folder, &egress, &mut memory).map(|config| (config, memory))
    })
    .await?;
    match loaded {
        Ok(loaded) => Ok(loaded),
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
