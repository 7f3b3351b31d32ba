//! A real control plane for tests, and hookstream's binaries run against it.
//!
//! [`control_plane`] runs `e2e/kube-up` once per test binary (it is idempotent: a running,
//! healthy control plane is reused; a missing one is built and started), installs the CRDs
//! and waits until they are established. Each test works in a [`Namespace`] of its own, with
//! its own operator (`--watch-namespace`) and gateway processes, so tests run in parallel
//! without seeing each other's objects.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Name of the config Secret each test's operator writes and gateway reads.
pub const CONFIG_SECRET: &str = "hookstream-gateway-config";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate sits in the repository root")
        .to_path_buf()
}

/// A running kube-apiserver with hookstream's CRDs installed.
pub struct ControlPlane {
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// `PATH` with the pinned kubectl and helm first.
    path: String,
}

/// The control plane, started (or built and started) on first use.
pub fn control_plane() -> &'static ControlPlane {
    static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();
    CONTROL_PLANE.get_or_init(|| {
        // Without KUBECONFIG, kube-up writes e2e/.kube/config and never touches a kubeconfig
        // of the developer's own.
        let out = Command::new(root().join("e2e/kube-up"))
            .env_remove("KUBECONFIG")
            .stderr(Stdio::inherit())
            .output()
            .expect("cannot run e2e/kube-up");
        assert!(out.status.success(), "e2e/kube-up failed ({})", out.status);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let kubeconfig = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            kubeconfig.is_file(),
            "e2e/kube-up printed no kubeconfig path: {stdout}"
        );
        let bin = std::fs::read_to_string(root().join("e2e/.kube/bin-path")).unwrap();
        let path = format!(
            "{}:{}",
            bin.trim(),
            std::env::var("PATH").unwrap_or_default()
        );
        let cp = ControlPlane { kubeconfig, path };
        let manifests = root().join("crds/manifests");
        cp.kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            manifests.to_str().unwrap(),
        ]);
        cp.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/sources.hookstream.io",
            "crd/destinations.hookstream.io",
            "crd/connections.hookstream.io",
            "crd/topics.hookstream.io",
            "crd/alertrules.hookstream.io",
        ]);
        cp
    })
}

impl ControlPlane {
    /// A command with this control plane's kubeconfig and tools.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .current_dir(root());
        cmd
    }

    /// Runs kubectl with `stdin` fed to it.
    pub fn kubectl_with(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command("kubectl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.command("kubectl")
            .args(args)
            .output()
            .expect("cannot run kubectl")
    }

    /// Runs kubectl and returns its stdout; panics with its stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A namespace of one test, deleted (with everything in it) when dropped.
pub struct Namespace {
    /// Its name.
    pub name: String,
    cp: &'static ControlPlane,
}

impl Namespace {
    /// Creates a fresh namespace whose name starts with `prefix`.
    pub fn create(prefix: &str) -> Namespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let cp = control_plane();
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        cp.kubectl_ok(&["create", "namespace", &name]);
        Namespace { name, cp }
    }

    /// `kubectl apply` of `yaml` in this namespace.
    pub fn apply(&self, yaml: &str) -> Output {
        self.cp
            .kubectl_with(&["apply", "-n", &self.name, "-f", "-"], yaml)
    }

    /// `kubectl apply` that must succeed.
    pub fn apply_ok(&self, yaml: &str) {
        let out = self.apply(yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kubectl with `-n NAMESPACE` appended; must succeed.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-n", &self.name]);
        self.cp.kubectl_ok(&all)
    }

    /// An object as JSON, or `None` when it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self
            .cp
            .kubectl(&["get", kind, name, "-n", &self.name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The `type` condition of an object: (status, reason, message).
    pub fn condition(
        &self,
        kind: &str,
        name: &str,
        type_: &str,
    ) -> Option<(String, String, String)> {
        condition(&self.get(kind, name)?, type_)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self
            .cp
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// The `type` condition in `object`'s status: (status, reason, message).
pub fn condition(object: &Value, type_: &str) -> Option<(String, String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (text("status"), text("reason"), text("message"))
        })
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `within` naming
/// `what` (and the last value seen, through `check`'s own output).
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path of a hookstream binary, built (once per test binary) in the same profile as the
/// tests, so a test never runs a stale binary.
pub fn binary(name: &str) -> PathBuf {
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = PROFILE_DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test binary>
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(root())
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .args([
                "build",
                "--locked",
                "-p",
                "hookstream-operator",
                "-p",
                "hookstream-gateway",
            ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cannot run cargo build");
        assert!(status.success(), "building the binaries failed");
        profile_dir
    });
    dir.join(name)
}

/// A child process whose stderr goes to a log file; killed when dropped.
pub struct Process {
    child: Option<Child>,
    command: Vec<String>,
    envs: Vec<(String, String)>,
    /// The log file.
    pub log_path: PathBuf,
}

impl Process {
    fn spawn(command: Vec<String>, envs: Vec<(String, String)>, log_path: PathBuf) -> Process {
        let mut p = Process {
            child: None,
            command,
            envs,
            log_path,
        };
        p.start();
        p
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = control_plane().command(&self.command[0]);
        // Only what the test gives: nothing from the environment the tests run in.
        for var in [
            "HOOKSTREAM_API_KEYS",
            "HOOKSTREAM_MANIFESTS",
            "HOOKSTREAM_DATABASE_URL",
            "HOOKSTREAM_LISTEN",
            "HOOKSTREAM_CONFIG_SECRET",
            "HOOKSTREAM_GATEWAY_CONFIG_SECRET",
            "HOOKSTREAM_INGEST_BASE_URL",
            "HOOKSTREAM_WATCH_NAMESPACE",
            "POD_NAME",
            "POD_NAMESPACE",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(&self.command[1..])
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().expect("cannot start the process"));
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits for a log line after byte `from` containing `needle`; returns the line.
    pub async fn wait_log(&mut self, needle: &str, from: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self
                .log()
                .get(from..)
                .and_then(|l| l.lines().find(|l| l.contains(needle)).map(str::to_owned))
            {
                return line;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited with {status} before logging {needle:?}:\n{}",
                    self.command[0],
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {needle:?} within {within:?}:\n{}",
                self.command[0],
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown work at all.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits (at most 30 s) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("the process is running");
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same command again (after `kill9` or `terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the process first");
        self.start();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The address after `key=` in a log line.
fn logged_address(line: &str, key: &str) -> String {
    line.split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// A gateway process in cluster mode: config from the namespace's config Secret, API keys
/// from its labelled Secrets, status written to its objects by the holder of the status Lease.
pub struct Gateway {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its name in the status Lease (`POD_NAME`).
    pub identity: String,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway for `ns` on a SQLite database of its own, with `api_keys`
    /// (comma-separated, may be empty) from the environment, and waits until it serves.
    pub async fn start(ns: &Namespace, api_keys: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("hookstream.db").display());
        let identity = format!("gateway-{}", ns.name);
        let args = vec![
            "--namespace".into(),
            ns.name.clone(),
            "--identity".into(),
            identity.clone(),
        ];
        let mut gw = Gateway::spawn(dir, ns, api_keys, &db, identity, args, Vec::new());
        gw.wait_serving().await;
        gw
    }

    /// [`Gateway::start`] with the credentials of `kubeconfig` instead of the administrator's.
    pub async fn start_as(ns: &Namespace, api_keys: &str, kubeconfig: &Path) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("hookstream.db").display());
        let identity = format!("gateway-{}", ns.name);
        let args = vec![
            "--namespace".into(),
            ns.name.clone(),
            "--identity".into(),
            identity.clone(),
        ];
        let env = vec![("KUBECONFIG".to_owned(), kubeconfig.display().to_string())];
        let mut gw = Gateway::spawn(dir, ns, api_keys, &db, identity, args, env);
        gw.wait_serving().await;
        gw
    }

    /// Starts `n` replicas of a gateway for `ns` sharing the database at `database` (a
    /// PostgreSQL URL, see [`crate::postgres::Database`]), each on a port of its own and named
    /// `gateway-<i>` through `POD_NAME` (with `POD_NAMESPACE`, as a Deployment sets them), and
    /// waits until all of them serve. They start at the same time, as a rollout does.
    pub async fn start_replicas(
        ns: &Namespace,
        api_keys: &str,
        database: &str,
        n: usize,
    ) -> Vec<Gateway> {
        let mut replicas: Vec<Gateway> = (0..n)
            .map(|i| {
                let identity = format!("gateway-{i}");
                let envs = vec![
                    ("POD_NAMESPACE".to_owned(), ns.name.clone()),
                    ("POD_NAME".to_owned(), identity.clone()),
                ];
                let dir = tempfile::tempdir().unwrap();
                Gateway::spawn(dir, ns, api_keys, database, identity, Vec::new(), envs)
            })
            .collect();
        for gw in &mut replicas {
            gw.wait_serving().await;
        }
        replicas
    }

    fn spawn(
        dir: tempfile::TempDir,
        ns: &Namespace,
        api_keys: &str,
        database: &str,
        identity: String,
        extra_args: Vec<String>,
        extra_envs: Vec<(String, String)>,
    ) -> Gateway {
        let mut command = vec![
            binary("hookstream-gateway").display().to_string(),
            "--config-secret".into(),
            format!("{}/{CONFIG_SECRET}", ns.name),
        ];
        command.extend(extra_args);
        command.extend([
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--database".into(),
            database.to_owned(),
        ]);
        let mut envs = vec![("RUST_LOG".to_owned(), "info,kube=warn".to_owned())];
        if !api_keys.is_empty() {
            envs.push(("HOOKSTREAM_API_KEYS".to_owned(), api_keys.to_owned()));
        }
        envs.extend(extra_envs);
        let process = Process::spawn(command, envs, dir.path().join("gateway.log"));
        Gateway {
            process,
            base: String::new(),
            identity,
            _dir: dir,
        }
    }

    async fn wait_serving(&mut self) {
        let line = self
            .process
            .wait_log("hookstream gateway started", 0, Duration::from_secs(60))
            .await;
        self.base = format!("http://{}", logged_address(&line, "listen="));
    }
}

/// An operator process watching one namespace.
pub struct Operator {
    /// The process.
    pub process: Process,
    /// `http://127.0.0.1:PORT` of /metrics, /healthz, /readyz.
    pub metrics: String,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn spawn(ns: &Namespace, ingest_base: &str) -> Operator {
        Operator::spawn_with(ns, &ns.name, ingest_base, Vec::new())
    }

    /// An operator writing the config Secret of `ns` for the objects of the `watched`
    /// namespaces (comma-separated), with extra environment variables (which override the
    /// control plane's, such as `KUBECONFIG`).
    fn spawn_with(
        ns: &Namespace,
        watched: &str,
        ingest_base: &str,
        extra: Vec<(String, String)>,
    ) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let command = vec![
            binary("hookstream-operator").display().to_string(),
            "--gateway-config-secret".into(),
            format!("{}/{CONFIG_SECRET}", ns.name),
            "--ingest-base-url".into(),
            ingest_base.to_owned(),
            "--watch-namespace".into(),
            watched.to_owned(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
        ];
        let mut envs = vec![("RUST_LOG".to_owned(), "info,kube=warn".to_owned())];
        envs.extend(extra);
        let process = Process::spawn(command, envs, dir.path().join("operator.log"));
        Operator {
            metrics: String::new(),
            process,
            _dir: dir,
        }
    }

    async fn wait_serving(&mut self, from: usize) {
        let line = self
            .process
            .wait_log("hookstream operator started", from, Duration::from_secs(60))
            .await;
        self.metrics = format!("http://{}", logged_address(&line, "metrics="));
    }

    /// Starts an operator for `ns` whose Sources get ingest URLs under `ingest_base`, and
    /// waits until it leads with its caches synced.
    pub async fn start(ns: &Namespace, ingest_base: &str) -> Operator {
        let mut op = Operator::spawn(ns, ingest_base);
        op.wait_serving(0).await;
        op.wait_leading().await;
        op
    }

    /// [`Operator::start`] with the credentials of `kubeconfig` instead of the administrator's.
    pub async fn start_as(ns: &Namespace, ingest_base: &str, kubeconfig: &Path) -> Operator {
        let env = vec![("KUBECONFIG".to_owned(), kubeconfig.display().to_string())];
        let mut op = Operator::spawn_with(ns, &ns.name, ingest_base, env);
        op.wait_serving(0).await;
        op.wait_leading().await;
        op
    }

    /// [`Operator::start`] for the objects of `ns` and of `others` too, all routed by the
    /// gateway that reads the config Secret of `ns`.
    pub async fn start_watching(
        ns: &Namespace,
        others: &[&Namespace],
        ingest_base: &str,
    ) -> Operator {
        let watched: Vec<&str> = std::iter::once(ns)
            .chain(others.iter().copied())
            .map(|n| n.name.as_str())
            .collect();
        let mut op = Operator::spawn_with(ns, &watched.join(","), ingest_base, Vec::new());
        op.wait_serving(0).await;
        op.wait_leading().await;
        op
    }

    /// Starts a second operator for `ns` while another leads; it must wait for the Lease.
    pub async fn start_standby(ns: &Namespace, ingest_base: &str) -> Operator {
        let mut op = Operator::spawn(ns, ingest_base);
        op.wait_serving(0).await;
        op.process
            .wait_log("waiting for leadership", 0, Duration::from_secs(30))
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !op.process.log().contains("leader: starting controllers"),
            "a second operator led while the first held the Lease:\n{}",
            op.process.log()
        );
        op
    }

    /// Waits until this operator leads with its caches synced (a dead leader's Lease expires
    /// after 15 s).
    pub async fn wait_leading(&mut self) {
        self.process
            .wait_log("caches synced", 0, Duration::from_secs(60))
            .await;
    }

    /// Kills the operator with SIGKILL: its Lease is not released.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }
}
