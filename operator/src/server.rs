//! The operator's process: logging, the metrics and health endpoint, leader election, and
//! graceful shutdown around the controllers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::controller::{self, Options};
use crate::metrics::Metrics;
use crate::settings::Settings;

/// Seconds a Lease is held without renewal before another replica may take it.
const LEASE_SECONDS: u64 = 15;

#[derive(Clone)]
struct Health {
    metrics: Metrics,
    ready: watch::Receiver<bool>,
}

/// Runs the operator until SIGTERM or Ctrl-C (or until it loses the leader Lease, after
/// which it exits non-zero so that it restarts as a follower).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot build a Kubernetes client (KUBECONFIG or in-cluster config)")?;
    let metrics = Metrics::new();
    let identity = hookstream_common::identity(settings.identity.clone(), "hookstream-operator");
    // Ready once this replica follows a leader or, as the leader, has written the config.
    let (ready_tx, ready_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(settings.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.metrics_listen))?;
    let address = listener.local_addr()?;
    let health = Health {
        metrics: metrics.clone(),
        ready: ready_rx,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, health, shutdown_rx.clone()));
    info!(metrics = %address, identity = %identity, "hookstream operator started");

    let namespace = settings
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| settings.gateway_config_secret.namespace.clone());
    let lease = LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(5)
        .build()
        .await
        .context("cannot set up leader election")?;
    let (mut leader, lease_task) = lease.watch().await;
    let _ = ready_tx.send(true);
    info!(lease = %format!("{namespace}/{}", settings.lease_name), "waiting for leadership");
    let signal = hookstream_common::shutdown_signal();
    tokio::pin!(signal);
    let elected = tokio::select! {
        r = leader.wait_for(|l| *l) => r.is_ok(),
        _ = &mut signal => false,
    };
    let mut lost = false;
    if elected {
        metrics.leader.set(1);
        let _ = ready_tx.send(false);
        info!("leader: starting controllers");
        let options = Options {
            config_secret: settings.gateway_config_secret.clone(),
            ingest_base_url: settings.ingest_base_url.clone(),
            instance: identity.clone(),
            watch_namespaces: settings.watch_namespaces(),
            egress: hookstream_crds::egress::EgressPolicy::new(
                settings.egress_deny.clone(),
                settings.egress_allow.clone(),
            ),
        };
        let stop = shutdown_tx.clone();
        let mut follow = leader.clone();
        let watchdog = async move {
            tokio::select! {
                _ = &mut signal => false,
                r = follow.wait_for(|l| !*l) => {
                    if r.is_ok() {
                        warn!("lost the leader Lease; stopping");
                    }
                    true
                }
            }
        };
        let controllers = controller::run(client, options, metrics.clone(), ready_tx, shutdown_rx);
        let (lost_lease, result) = tokio::join!(
            async move {
                let lost = watchdog.await;
                let _ = stop.send(true);
                lost
            },
            controllers
        );
        lost = lost_lease;
        result?;
    }
    let _ = shutdown_tx.send(true);
    metrics.leader.set(0);
    // Dropping the channel releases the Lease, so a follower takes over at once.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("released the leader Lease"),
        Ok(Ok(Err(e))) => warn!(error = %e, "cannot release the leader Lease"),
        Ok(Err(e)) => warn!(error = %e, "leader election task failed"),
        Err(_) => warn!("releasing the leader Lease timed out"),
    }
    let _ = server.await;
    info!("hookstream operator stopped");
    if lost {
        anyhow::bail!("lost the leader Lease");
    }
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, health: Health, mut stop: watch::Receiver<bool>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                if *h.ready.borrow() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        hookstream_common::METRICS_CONTENT_TYPE,
                    )],
                    h.metrics.render(),
                )
            }),
        )
        .with_state(health);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await;
    if let Err(e) = served {
        warn!(error = %e, "metrics server failed");
    }
}
