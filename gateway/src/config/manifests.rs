//! Standalone config: a folder of manifests (`*.yaml`, `*.yml`, `*.json`, sub-folders
//! included) compiled with the same compiler the operator uses, and reloaded when it changes.
//! Secrets labelled `hookstream.io/api-key=true` among them hold API keys (see
//! [`crate::access`]).

use hookstream_crds::egress::EgressPolicy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::compiler::{self, Objects};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::RuntimeConfig;
use crate::metrics::Metrics;

/// Quiet time after the last file change before reloading, so an editor's save (or a
/// `git checkout` touching many files) triggers one reload.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Reads and compiles every manifest under `dir`. On failure, every error found, each naming
/// the file, object, field and reason.
pub fn load(dir: &Path, egress: &EgressPolicy) -> Result<RuntimeConfig, Vec<String>> {
    let mut files = Vec::new();
    collect(dir, &mut files).map_err(|e| {
        vec![format!(
            "{}: cannot read manifests folder: {e}",
            dir.display()
        )]
    })?;
    files.sort();
    let mut objects = Objects {
        egress: egress.clone(),
        ..Objects::default()
    };
    let mut errors = Vec::new();
    let mut read_errors = Vec::new();
    for file in &files {
        let origin = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => errors.extend(hookstream_crds::manifest::parse_into(
                &mut objects,
                &origin,
                &text,
            )),
            Err(e) => read_errors.push(format!("{origin}: cannot read: {e}")),
        }
    }
    let compilation = compiler::compile(&objects);
    let mut messages: Vec<String> = read_errors
        .into_iter()
        .chain(
            errors
                .iter()
                .chain(&compilation.errors)
                .map(ToString::to_string),
        )
        .collect();
    if !messages.is_empty() {
        return Err(messages);
    }
    let mut config = RuntimeConfig::build(compilation.config).map_err(|e| {
        messages.push(e.to_string());
        messages
    })?;
    config.api_keys = crate::access::keys_of_secrets(&objects.secrets);
    Ok(config)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Watches `dir` and publishes a new snapshot after each change that compiles. A change that
/// does not compile keeps the last good snapshot and logs every error. The watch is in place
/// when this returns (so no change made after start-up is missed); reloads run in a task.
pub fn watch(
    dir: PathBuf,
    egress: EgressPolicy,
    publish: watch::Sender<Arc<RuntimeConfig>>,
    metrics: Metrics,
) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a pending reload.
            let _ = tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the manifests folder; changes need a restart");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::Recursive) {
        warn!(error = %e, dir = %dir.display(), "cannot watch the manifests folder; changes need a restart");
        return;
    }
    tokio::spawn(async move {
        reload_on_change(&dir, &egress, &mut rx, &publish, &metrics).await;
        drop(watcher);
    });
}

async fn reload_on_change(
    dir: &Path,
    egress: &EgressPolicy,
    rx: &mut mpsc::Receiver<()>,
    publish: &watch::Sender<Arc<RuntimeConfig>>,
    metrics: &Metrics,
) {
    while rx.recv().await.is_some() {
        // Debounce: wait until changes stop arriving.
        while tokio::time::timeout(DEBOUNCE, rx.recv())
            .await
            .is_ok_and(|m| m.is_some())
        {}
        let folder = dir.to_path_buf();
        let egress = egress.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&folder, &egress)).await;
        match loaded {
            Ok(Ok(config)) => {
                info!(
                    sources = config.sources.len(),
                    destinations = config.destinations.len(),
                    routes = config.routes.len(),
                    "config reloaded"
                );
                metrics.config_reloads.with_label_values(&["success"]).inc();
                publish.send_replace(Arc::new(config));
            }
            Ok(Err(errors)) => {
                metrics.config_reloads.with_label_values(&["failure"]).inc();
                warn!(
                    errors = errors.len(),
                    "config reload failed; keeping the last good config"
                );
                for e in errors {
                    warn!(error = %e, "invalid manifest");
                }
            }
            Err(e) => warn!(error = %e, "config reload task failed"),
        }
    }
}
