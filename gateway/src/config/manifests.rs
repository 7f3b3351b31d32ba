//! Standalone config: a folder of manifests (`*.yaml`, `*.yml`, `*.json`, sub-folders
//! included) compiled with the same compiler the operator uses, and reloaded when it changes.
//! Secrets labelled `hookstream.io/api-key=true` among them hold API keys (see
//! [`crate::access`]).

use hookstream_crds::egress::EgressPolicy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookstream_crds::compiler::{self, LastValid, Objects};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeMap;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::RuntimeConfig;
use crate::metrics::Metrics;

/// Quiet time after the last file change before reloading, so an editor's save (or a
/// `git checkout` touching many files) triggers one reload.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// What the folder held at the last reload: each file's last text that parsed, and each
/// object's last valid version. A file that stops parsing is read in its last good text; an
/// object that stops compiling is served in its last valid version (see
/// [`compiler::compile_serving`]); valid edits elsewhere apply meanwhile.
#[derive(Debug, Default)]
pub struct Memory {
    files: BTreeMap<PathBuf, String>,
    last_valid: LastValid,
}

/// One read of the folder.
pub struct Loaded {
    /// The config to serve.
    pub config: RuntimeConfig,
    /// Every problem found, each naming the file, object, field and reason.
    pub problems: Vec<String>,
    /// Objects served in their last valid version (or read from a file's last good text).
    pub kept: usize,
}

/// Reads and compiles every manifest under `dir` at start. On any problem, every problem
/// found, each naming the file, object, field and reason: at start there is no earlier
/// valid version to serve.
pub fn load(
    dir: &Path,
    egress: &EgressPolicy,
    memory: &mut Memory,
) -> Result<RuntimeConfig, Vec<String>> {
    let loaded = reload(dir, egress, memory)?;
    if loaded.problems.is_empty() {
        Ok(loaded.config)
    } else {
        Err(loaded.problems)
    }
}

/// Reads and compiles every manifest under `dir`, serving what `memory` holds in place of
/// what an edit broke. Fails only when the folder cannot be read at all.
pub fn reload(
    dir: &Path,
    egress: &EgressPolicy,
    memory: &mut Memory,
) -> Result<Loaded, Vec<String>> {
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
    let mut problems = Vec::new();
    let mut kept = 0;
    let mut texts = BTreeMap::new();
    for file in &files {
        let origin = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("{origin}: cannot read: {e}"));
                continue;
            }
        };
        let mut parsed = Objects::default();
        let errors = hookstream_crds::manifest::parse_into(&mut parsed, &origin, &text);
        problems.extend(errors.iter().map(ToString::to_string));
        if errors.is_empty() {
            objects.append(parsed);
            texts.insert(file.clone(), text);
        } else if let Some(previous) = memory.files.get(file) {
            // The objects of a file that no longer parses are served as they last parsed.
            kept += 1;
            problems.push(format!(
                "{origin}: serving its last readable version until it is fixed"
            ));
            let _ = hookstream_crds::manifest::parse_into(&mut objects, &origin, previous);
            texts.insert(file.clone(), previous.clone());
        }
    }
    let served = compiler::compile_serving(&objects, &memory.last_valid);
    problems.extend(served.compilation.errors.iter().map(ToString::to_string));
    kept += served.from_last_valid.len();
    let mut config = RuntimeConfig::build(served.compilation.config).map_err(|e| {
        let mut all = problems.clone();
        all.push(e.to_string());
        all
    })?;
    config.api_keys = crate::access::keys_of_secrets(&objects.secrets);
    memory.files = texts;
    memory.last_valid = served.last_valid;
    Ok(Loaded {
        config,
        problems,
        kept,
    })
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
    mut memory: Memory,
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
        reload_on_change(&dir, &egress, &mut memory, &mut rx, &publish, &metrics).await;
        drop(watcher);
    });
}

async fn reload_on_change(
    dir: &Path,
    egress: &EgressPolicy,
    memory: &mut Memory,
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
        let mut held = std::mem::take(memory);
        let loaded = tokio::task::spawn_blocking(move || {
            let loaded = reload(&folder, &egress, &mut held);
            (loaded, held)
        })
        .await;
        match loaded {
            Ok((Ok(loaded), held)) => {
                *memory = held;
                let result = if loaded.problems.is_empty() {
                    "success"
                } else {
                    "failure"
                };
                metrics.config_reloads.with_label_values(&[result]).inc();
                for e in &loaded.problems {
                    warn!(error = %e, "invalid manifest");
                }
                info!(
                    sources = loaded.config.sources.len(),
                    destinations = loaded.config.destinations.len(),
                    routes = loaded.config.routes.len(),
                    problems = loaded.problems.len(),
                    kept_in_last_valid_version = loaded.kept,
                    "config reloaded"
                );
                publish.send_replace(Arc::new(loaded.config));
            }
            Ok((Err(errors), held)) => {
                *memory = held;
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
