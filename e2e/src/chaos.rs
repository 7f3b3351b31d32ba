//! A chaos harness: load through real gateway processes while faults are injected, then a
//! count of what was acknowledged, delivered, lost and duplicated.
//!
//! [`run`] starts a receiver in this process (recording the `X-Hookstream-Event-Id` of every
//! delivery it answers with 200), one gateway process on SQLite or several replicas sharing
//! one PostgreSQL database, and a sender offering `rate` events per second for the whole run.
//! Meanwhile the faults, one after the other: each kill cycle SIGKILLs the gateway (SQLite) or
//! a random replica (PostgreSQL), waits a random short time and starts it again on the same
//! database; each database restart stops PostgreSQL (`scripts/pg-down --keep`) under load,
//! SIGKILLs a random replica halfway through the outage, then starts the database
//! (`scripts/pg-up`) and that replica again; with flapping the receiver alternates between answering
//! 200 and 503 about every second. Then the faults stop, the receiver answers 200, and the run
//! waits (bounded) until every acknowledged event id was delivered.
//!
//! An event is acknowledged when ingest answered 200 with an `event_id`; the gateway promises
//! that such an event is delivered at least once. Lost = acknowledged but never delivered with
//! a 2xx. Duplicates = deliveries of an event id beyond its first (at-least-once allows them).
//!
//! On PostgreSQL the harness runs a server of its own (`scripts/pg-up` with
//! `HOOKSTREAM_PG_STATE`/`HOOKSTREAM_PG_PORT` set to a temporary folder and a free port, removed
//! at the end), so restarting it never disturbs a shared test server.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// An API key the harness's gateways accept (for looking up events that went missing).
const API_KEY: &str = "hs_test_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Where the gateways keep their data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One process on a SQLite file.
    Sqlite,
    /// Several replicas sharing one PostgreSQL database.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// SQLite or PostgreSQL.
    pub backend: Backend,
    /// Gateway processes (1 on SQLite).
    pub replicas: usize,
    /// SIGKILL-and-restart cycles.
    pub kill_cycles: u32,
    /// Events per second the sender offers.
    pub rate: u32,
    /// Restarts of the PostgreSQL server under load (PostgreSQL only).
    pub pg_restarts: u32,
    /// Whether the receiver alternates between 200 and 503 about every second.
    pub flap: bool,
    /// The `hookstream-gateway` binary.
    pub gateway: PathBuf,
    /// Load before the first fault and between faults: a random time in this range.
    pub between_faults: (Duration, Duration),
    /// How long a killed gateway stays down before it is started again: random in this range.
    pub down_time: (Duration, Duration),
    /// How long the database stays down at each restart: random in this range.
    pub pg_down_time: (Duration, Duration),
    /// How long to wait, after the load and the faults stop, for every acknowledged event to
    /// be delivered.
    pub drain_timeout: Duration,
    /// Print progress on stderr.
    pub verbose: bool,
}

impl Config {
    /// A run on `backend` with `gateway`, with defaults for the rest: 3 replicas on
    /// PostgreSQL, 10 kill cycles, 100 events/s, no database restarts, no flapping.
    pub fn new(backend: Backend, gateway: PathBuf) -> Config {
        Config {
            backend,
            replicas: match backend {
                Backend::Sqlite => 1,
                Backend::Postgres => 3,
            },
            kill_cycles: 10,
            rate: 100,
            pg_restarts: 0,
            flap: false,
            gateway,
            between_faults: (Duration::from_millis(500), Duration::from_millis(2500)),
            down_time: (Duration::from_millis(0), Duration::from_millis(1000)),
            // Ingest waits about 5 s for the database before it answers 503: shorter outages
            // mostly delay acknowledgements, longer ones refuse some events.
            pg_down_time: (Duration::from_secs(2), Duration::from_secs(8)),
            drain_timeout: Duration::from_secs(120),
            verbose: true,
        }
    }
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// The backend.
    pub backend: String,
    /// Gateway processes.
    pub replicas: usize,
    /// Kill cycles done.
    pub kill_cycles: u32,
    /// Database restarts done.
    pub pg_restarts: u32,
    /// Whether the receiver flapped.
    pub flap: bool,
    /// Ingest requests the sender made (or meant to make: see `no_replica`).
    pub offered: u64,
    /// Events acknowledged with 200 and an event id.
    pub acknowledged: u64,
    /// Acknowledged events delivered at least once with a 2xx.
    pub delivered: u64,
    /// Acknowledged events never delivered.
    pub lost: u64,
    /// Deliveries answered 2xx beyond the first of their event id.
    pub duplicates: u64,
    /// Ingest requests not acknowledged, for any reason (the sum of the next five).
    pub refused: u64,
    /// Ingest answered 503 (storage down).
    pub refused_503: u64,
    /// Ingest failed at the connection (the gateway was killed or not listening).
    pub connection_errors: u64,
    /// Ingest did not answer within 15 s.
    pub timeouts: u64,
    /// Ingest answered another status, or 200 without an event id.
    pub other_status: u64,
    /// No gateway was up when the sender's turn came (SQLite while the process is down).
    pub no_replica: u64,
    /// Deliveries answered 2xx, duplicates included.
    pub deliveries_ok: u64,
    /// Deliveries the flapping receiver answered 503.
    pub deliveries_refused: u64,
    /// Distinct event ids delivered that ingest never acknowledged (committed, but the answer
    /// was lost to a kill or an outage: allowed).
    pub unacknowledged_delivered: u64,
    /// Gateway restarts after a kill: the mean and longest time from spawn to ready.
    pub restart_ready_mean: Duration,
    /// See `restart_ready_mean`.
    pub restart_ready_max: Duration,
    /// After each database restart, the longest time from `pg-up` until every gateway
    /// answered `/readyz` 200 again.
    pub pg_recovery_max: Duration,
    /// From the end of the load until every acknowledged event was delivered (or the drain
    /// timed out).
    pub drain: Duration,
    /// From the start of the load to the end of the drain.
    pub duration: Duration,
    /// The gateway binary.
    pub gateway: PathBuf,
    /// Lost event ids with what the gateway's API says about them (the first few).
    pub lost_details: Vec<String>,
    /// Anything odd seen along the way (a gateway that did not come back, say).
    pub notes: Vec<String>,
    /// The folder with the gateways' logs, kept when events were lost.
    pub kept_dir: Option<PathBuf>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos: backend={} replicas={} kill_cycles={} pg_restarts={} flap={} \
             acknowledged={} delivered={} lost={} duplicates={} refused={} duration={:.0}s",
            self.backend,
            self.replicas,
            self.kill_cycles,
            self.pg_restarts,
            if self.flap { "on" } else { "off" },
            self.acknowledged,
            self.delivered,
            self.lost,
            self.duplicates,
            self.refused,
            self.duration.as_secs_f64(),
        )
    }
}

impl Summary {
    /// Lines with the details behind the summary line.
    pub fn details(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "  ingest: offered={} acknowledged={} refused={} (503={} connection_errors={} \
                 timeouts={} other_status={} no_replica_up={})",
                self.offered,
                self.acknowledged,
                self.refused,
                self.refused_503,
                self.connection_errors,
                self.timeouts,
                self.other_status,
                self.no_replica,
            ),
            format!(
                "  receiver: 2xx={} (duplicates={}) answered_503_by_flapping={} \
                 delivered_but_never_acknowledged={}",
                self.deliveries_ok,
                self.duplicates,
                self.deliveries_refused,
                self.unacknowledged_delivered,
            ),
            format!(
                "  faults: kills={} restart_to_ready mean={}ms max={}ms{}",
                self.kill_cycles,
                self.restart_ready_mean.as_millis(),
                self.restart_ready_max.as_millis(),
                if self.backend == "postgres" {
                    format!(
                        "; pg_restarts={} (a replica SIGKILLed during each outage), every \
                         gateway ready again max {}ms after pg-up",
                        self.pg_restarts,
                        self.pg_recovery_max.as_millis()
                    )
                } else {
                    String::new()
                }
            ),
            format!(
                "  drain: {} after the load stopped{}",
                fmt_secs(self.drain),
                if self.lost == 0 {
                    ", every acknowledged event delivered".to_owned()
                } else {
                    format!(", {} acknowledged events never delivered", self.lost)
                }
            ),
        ];
        lines.push(format!("  gateway: {}", self.gateway.display()));
        lines.extend(self.lost_details.iter().map(|l| format!("  lost: {l}")));
        lines.extend(self.notes.iter().map(|l| format!("  note: {l}")));
        if let Some(dir) = &self.kept_dir {
            lines.push(format!("  logs kept in {}", dir.display()));
        }
        lines
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn random_between((lo, hi): (Duration, Duration)) -> Duration {
    let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
    Duration::from_millis(if hi > lo {
        rand::random_range(lo..=hi)
    } else {
        lo
    })
}

// ---- receiver ------------------------------------------------------------------------------

/// The in-process receiver: counts the deliveries it answered 2xx per event id.
#[derive(Default)]
struct Sink {
    /// While set, the receiver answers 503.
    failing: AtomicBool,
    refused: AtomicU64,
    delivered: Mutex<HashMap<String, u32>>,
}

async fn sink(State(sink): State<Arc<Sink>>, headers: HeaderMap) -> StatusCode {
    if sink.failing.load(Ordering::SeqCst) {
        sink.refused.fetch_add(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let id = headers
        .get("x-hookstream-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    *sink.delivered.lock().unwrap().entry(id).or_default() += 1;
    StatusCode::OK
}

async fn start_sink() -> anyhow::Result<(String, Arc<Sink>)> {
    let sink_state = Arc::new(Sink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .fallback(sink)
        .with_state(sink_state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}"), sink_state))
}

// ---- PostgreSQL ----------------------------------------------------------------------------

/// A PostgreSQL server of the harness's own, from `scripts/pg-up`; deleted when dropped.
struct PgServer {
    state: tempfile::TempDir,
    port: u16,
    url: String,
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PgServer {
    async fn script(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(scripts_dir().join(name))
            .args(args)
            .env("HOOKSTREAM_PG_STATE", self.state.path())
            .env("HOOKSTREAM_PG_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("run scripts/{name}"))?;
        if !out.status.success() {
            bail!(
                "scripts/{name} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    async fn start() -> anyhow::Result<PgServer> {
        let mut server = PgServer {
            state: tempfile::Builder::new()
                .prefix("hookstream-chaos-pg")
                .tempdir()?,
            port: free_port()?,
            url: String::new(),
        };
        server.url = server.script("pg-up", &[]).await?;
        Ok(server)
    }

    /// A new database on the server; its URL.
    async fn new_database(&self) -> anyhow::Result<String> {
        use sqlx::{Connection as _, Executor as _};
        let name = format!("chaos_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .context("connect to the harness's PostgreSQL server")?;
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .context("create the run's database")?;
        conn.close().await.ok();
        let (server, _) = self.url.rsplit_once('/').context("pg-up printed no URL")?;
        Ok(format!("{server}/{name}"))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new(scripts_dir().join("pg-down"))
            .env("HOOKSTREAM_PG_STATE", self.state.path())
            .env("HOOKSTREAM_PG_PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---- gateways ------------------------------------------------------------------------------

/// A gateway process; SIGKILLed when dropped.
struct Replica {
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Replica {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The gateways and the base URLs of those that are up, which the sender reads.
struct Gateways {
    binary: PathBuf,
    manifests: PathBuf,
    database: String,
    replicas: Vec<Replica>,
    up: Arc<RwLock<Vec<Option<String>>>>,
    http: reqwest::Client,
}

/// The port in the first `hookstream gateway started … listen=ADDR` line of `log` after `from`.
fn logged_listen(log: &str, from: usize) -> Option<String> {
    let line = log
        .get(from..)?
        .lines()
        .find(|l| l.contains("hookstream gateway started"))?;
    let addr = line.split("listen=").nth(1)?.split_whitespace().next()?;
    let port: u16 = addr
        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
        .rsplit(':')
        .next()?
        .parse()
        .ok()?;
    Some(format!("http://127.0.0.1:{port}"))
}

fn tail(path: &Path, bytes: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

impl Gateways {
    /// Spawns replica `i` and waits until it answers `/readyz` 200: a few attempts, since a
    /// start can fail while the database is briefly away.
    async fn start(&mut self, i: usize) -> anyhow::Result<Duration> {
        let began = Instant::now();
        let mut last_error = None;
        for _attempt in 0..5 {
            match self.spawn_once(i).await {
                Ok(base) => {
                    self.up.write().unwrap()[i] = Some(base);
                    return Ok(began.elapsed());
                }
                Err(e) => {
                    self.replicas[i].kill();
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("gateway {i} did not start")))
    }

    async fn spawn_once(&mut self, i: usize) -> anyhow::Result<String> {
        let log_path = self.replicas[i].log.clone();
        let from = std::fs::metadata(&log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&self.binary)
            .arg("--manifests")
            .arg(&self.manifests)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--database")
            .arg(&self.database)
            .env("HOOKSTREAM_API_KEYS", API_KEY)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("HOOKSTREAM_MANIFESTS")
            .env_remove("HOOKSTREAM_DATABASE_URL")
            .env_remove("HOOKSTREAM_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        self.replicas[i].child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut base = None;
        loop {
            if let Some(status) = self.replicas[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "gateway {i} exited at start with {status}:\n{}",
                    tail(&log_path, 2000)
                );
            }
            if base.is_none() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                base = logged_listen(&text, from);
            }
            if let Some(b) = &base {
                let ready = self
                    .http
                    .get(format!("{b}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Ok(b.clone());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "gateway {i} not ready within 30 s:\n{}",
                    tail(&log_path, 2000)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILLs replica `i` (the sender may still be talking to it: that is the point).
    fn kill(&mut self, i: usize) {
        self.replicas[i].kill();
        self.up.write().unwrap()[i] = None;
    }

    /// Waits until every replica that is up answers `/readyz` 200; how long that took.
    async fn wait_all_ready(&self, within: Duration) -> Result<Duration, String> {
        let began = Instant::now();
        loop {
            let bases: Vec<String> = self.up.read().unwrap().iter().flatten().cloned().collect();
            let mut all = true;
            for b in &bases {
                let ok = self
                    .http
                    .get(format!("{b}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                all &= ok;
            }
            if all {
                return Ok(began.elapsed());
            }
            if began.elapsed() > within {
                return Err(format!(
                    "not every gateway answered /readyz 200 within {within:?} after the database came back"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the management API of a live replica says about event `id`.
    async fn describe_event(&self, id: &str) -> String {
        let Some(base) = self.up.read().unwrap().iter().flatten().next().cloned() else {
            return format!("{id}: no gateway up to ask");
        };
        let r = self
            .http
            .get(format!("{base}/v1/events/{id}"))
            .header("x-api-key", API_KEY)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match r {
            Ok(r) => {
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                let attempts = body["delivery_attempts"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                format!(
                                    "{}:{}",
                                    x["status"].as_str().unwrap_or("?"),
                                    x["response_status"]
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                format!(
                    "{id}: GET /v1/events -> {status}, status={} attempts=[{attempts}]",
                    body["status"]
                )
            }
            Err(e) => format!("{id}: GET /v1/events failed: {e}"),
        }
    }
}

// ---- sender --------------------------------------------------------------------------------

#[derive(Default)]
struct SendStats {
    offered: u64,
    acknowledged: HashSet<String>,
    refused_503: u64,
    connection_errors: u64,
    timeouts: u64,
    other_status: u64,
    no_replica: u64,
}

enum Outcome {
    Acknowledged(String),
    Refused503,
    ConnectionError,
    Timeout,
    Other,
}

async fn ingest_one(http: &reqwest::Client, base: &str, seq: u64) -> Outcome {
    let r = http
        .post(format!("{base}/v1/ingest/t/in"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"chaos":true,"seq":{seq}}}"#))
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Outcome::Timeout,
        Err(_) => return Outcome::ConnectionError,
    };
    match r.status().as_u16() {
        200 => match r.json::<serde_json::Value>().await {
            Ok(body) => match body["event_id"].as_str() {
                Some(id) => Outcome::Acknowledged(id.to_owned()),
                None => Outcome::Other,
            },
            // The answer was cut off (a kill mid-response): not acknowledged.
            Err(e) if e.is_timeout() => Outcome::Timeout,
            Err(_) => Outcome::ConnectionError,
        },
        503 => Outcome::Refused503,
        _ => Outcome::Other,
    }
}

/// Offers `rate` events per second to a random live gateway until `stop` is set, then waits
/// for the requests in flight.
async fn send_load(
    rate: u32,
    up: Arc<RwLock<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SendStats>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        while tasks.try_join_next().is_some() {}
        seq += 1;
        stats.lock().unwrap().offered += 1;
        let target = {
            let up = up.read().unwrap();
            let live: Vec<&String> = up.iter().flatten().collect();
            if live.is_empty() {
                None
            } else {
                Some(live[rand::random_range(0..live.len())].clone())
            }
        };
        let Some(base) = target else {
            stats.lock().unwrap().no_replica += 1;
            continue;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let http = http.clone();
        let stats = stats.clone();
        tasks.spawn(async move {
            let outcome = ingest_one(&http, &base, seq).await;
            drop(permit);
            let mut s = stats.lock().unwrap();
            match outcome {
                Outcome::Acknowledged(id) => {
                    s.acknowledged.insert(id);
                }
                Outcome::Refused503 => s.refused_503 += 1,
                Outcome::ConnectionError => s.connection_errors += 1,
                Outcome::Timeout => s.timeouts += 1,
                Outcome::Other => s.other_status += 1,
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

// ---- the run -------------------------------------------------------------------------------

fn manifests(receiver: &str) -> String {
    format!(
        r#"apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec:
  type: http
  http: {{url: "{receiver}/hook", timeoutSeconds: 5}}
  # 20 retries (the most a Destination allows) 500 ms apart: ten seconds of retries, far
  # longer than a flapping receiver's one-second 503 periods.
  retry: {{maxRetries: 20, backoff: fixed, intervals: [500ms]}}
  # Flapping must never open the circuit.
  circuitBreaker: {{failureThreshold: 1000000}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: t}}
spec: {{source: in, destination: out}}
"#
    )
}

enum Fault {
    Kill,
    PgRestart,
}

/// The faults in order: the kill cycles with the database restarts spread evenly among them.
fn fault_plan(kill_cycles: u32, pg_restarts: u32) -> Vec<Fault> {
    let mut plan = Vec::new();
    let mut restarts_done = 0;
    for cycle in 0..=kill_cycles {
        // Restart r (1-based) goes after kill cycle r * kills / (restarts + 1).
        while restarts_done < pg_restarts
            && u64::from(restarts_done + 1) * u64::from(kill_cycles) / u64::from(pg_restarts + 1)
                <= u64::from(cycle)
        {
            plan.push(Fault::PgRestart);
            restarts_done += 1;
        }
        if cycle < kill_cycles {
            plan.push(Fault::Kill);
        }
    }
    plan
}

/// Runs the harness as `config` says and counts what happened. Errors are failures of the
/// harness itself (a gateway that does not start, `pg-up` failing); lost events are reported
/// in the summary, not as an error.
pub async fn run(config: &Config) -> anyhow::Result<Summary> {
    let progress = |msg: String| {
        if config.verbose {
            eprintln!("chaos: {msg}");
        }
    };
    if config.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    if config.backend == Backend::Sqlite && config.replicas != 1 {
        bail!("SQLite serves one gateway process: --replicas must be 1");
    }
    if config.backend == Backend::Sqlite && config.pg_restarts > 0 {
        bail!("--pg-restarts needs --backend postgres");
    }
    if !config.gateway.is_file() {
        bail!(
            "no gateway binary at {} (cargo build --release -p hookstream-gateway)",
            config.gateway.display()
        );
    }

    let work = tempfile::Builder::new()
        .prefix("hookstream-chaos")
        .tempdir()?;
    let (receiver, sink) = start_sink().await?;
    let manifests_dir = work.path().join("manifests");
    std::fs::create_dir_all(&manifests_dir)?;
    std::fs::write(manifests_dir.join("main.yaml"), manifests(&receiver))?;

    let pg = match config.backend {
        Backend::Sqlite => None,
        Backend::Postgres => {
            progress("starting a PostgreSQL server of its own (scripts/pg-up)".into());
            Some(PgServer::start().await?)
        }
    };
    let database = match &pg {
        None => format!("sqlite://{}", work.path().join("hookstream.db").display()),
        Some(pg) => pg.new_database().await?,
    };

    let up = Arc::new(RwLock::new(vec![None; config.replicas]));
    let mut gateways = Gateways {
        binary: config.gateway.clone(),
        manifests: manifests_dir,
        database,
        replicas: (0..config.replicas)
            .map(|i| Replica {
                child: None,
                log: work.path().join(format!("gateway-{i}.log")),
            })
            .collect(),
        up: up.clone(),
        http: reqwest::Client::new(),
    };
    for i in 0..config.replicas {
        gateways.start(i).await?;
    }
    progress(format!(
        "{} gateway(s) up on {}; load {} events/s",
        config.replicas, config.backend, config.rate
    ));

    // Load for the whole run.
    let began = Instant::now();
    let stop_load = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(SendStats::default()));
    let sender = tokio::spawn(send_load(
        config.rate,
        up.clone(),
        stop_load.clone(),
        stats.clone(),
    ));

    // A flapping receiver.
    let stop_flap = Arc::new(AtomicBool::new(false));
    let flapper = config.flap.then(|| {
        let sink = sink.clone();
        let stop = stop_flap.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(random_between((
                    Duration::from_millis(800),
                    Duration::from_millis(1200),
                )))
                .await;
                sink.failing.fetch_xor(true, Ordering::SeqCst);
            }
            sink.failing.store(false, Ordering::SeqCst);
        })
    });

    // The faults, one after the other.
    let mut summary = Summary {
        backend: config.backend.to_string(),
        replicas: config.replicas,
        flap: config.flap,
        gateway: config.gateway.clone(),
        ..Summary::default()
    };
    let mut restart_times = Vec::new();
    let outcome: anyhow::Result<()> = async {
        for fault in fault_plan(config.kill_cycles, config.pg_restarts) {
            tokio::time::sleep(random_between(config.between_faults)).await;
            match fault {
                Fault::Kill => {
                    let i = rand::random_range(0..config.replicas);
                    gateways.kill(i);
                    let down = random_between(config.down_time);
                    tokio::time::sleep(down).await;
                    let ready = gateways.start(i).await?;
                    restart_times.push(ready);
                    summary.kill_cycles += 1;
                    progress(format!(
                        "kill {}/{}: gateway {i} SIGKILLed, down {}ms, ready {}ms after restart",
                        summary.kill_cycles,
                        config.kill_cycles,
                        down.as_millis(),
                        ready.as_millis()
                    ));
                }
                Fault::PgRestart => {
                    let Some(pg) = &pg else { continue };
                    pg.script("pg-down", &["--keep"]).await?;
                    let down = random_between(config.pg_down_time);
                    // Halfway through the outage a replica is SIGKILLed too: whatever it
                    // acknowledged must already be in the database.
                    tokio::time::sleep(down / 2).await;
                    let victim = rand::random_range(0..config.replicas);
                    gateways.kill(victim);
                    tokio::time::sleep(down - down / 2).await;
                    pg.script("pg-up", &[]).await?;
                    let back = Instant::now();
                    summary.pg_restarts += 1;
                    gateways.start(victim).await?;
                    match gateways.wait_all_ready(Duration::from_secs(60)).await {
                        Ok(_) => {
                            let t = back.elapsed();
                            summary.pg_recovery_max = summary.pg_recovery_max.max(t);
                            progress(format!(
                                "database restart {}/{}: down {}ms, gateway {victim} SIGKILLed \
                                 during the outage, every gateway ready {}ms after pg-up",
                                summary.pg_restarts,
                                config.pg_restarts,
                                down.as_millis(),
                                t.as_millis()
                            ));
                        }
                        Err(e) => {
                            progress(e.clone());
                            summary.notes.push(e);
                        }
                    }
                }
            }
        }
        // A little load after the last fault, so that it too meets traffic.
        tokio::time::sleep(random_between(config.between_faults)).await;
        Ok(())
    }
    .await;

    stop_load.store(true, Ordering::SeqCst);
    stop_flap.store(true, Ordering::SeqCst);
    let _ = sender.await;
    if let Some(f) = flapper {
        let _ = f.await;
    }
    sink.failing.store(false, Ordering::SeqCst);
    outcome?;
    let load_end = Instant::now();

    let acknowledged = std::mem::take(&mut stats.lock().unwrap().acknowledged);
    progress(format!(
        "load stopped after {}: {} acknowledged; draining (up to {:?})",
        fmt_secs(began.elapsed()),
        acknowledged.len(),
        config.drain_timeout
    ));
    let missing = |sink: &Sink| -> Vec<String> {
        let delivered = sink.delivered.lock().unwrap();
        acknowledged
            .iter()
            .filter(|id| !delivered.contains_key(*id))
            .cloned()
            .collect()
    };
    let mut last_report = Instant::now();
    let mut lost = loop {
        let lost = missing(&sink);
        if lost.is_empty() || load_end.elapsed() > config.drain_timeout {
            break lost;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            progress(format!(
                "{} acknowledged events not delivered yet",
                lost.len()
            ));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    summary.drain = load_end.elapsed();
    if lost.is_empty() {
        // Let deliveries in flight land, so the duplicate count is complete.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    summary.duration = began.elapsed();

    lost.sort();
    for id in lost.iter().take(10) {
        summary.lost_details.push(gateways.describe_event(id).await);
    }
    if lost.len() > 10 {
        summary
            .lost_details
            .push(format!("… and {} more", lost.len() - 10));
    }

    {
        let s = stats.lock().unwrap();
        summary.offered = s.offered;
        summary.refused_503 = s.refused_503;
        summary.connection_errors = s.connection_errors;
        summary.timeouts = s.timeouts;
        summary.other_status = s.other_status;
        summary.no_replica = s.no_replica;
        summary.refused =
            s.refused_503 + s.connection_errors + s.timeouts + s.other_status + s.no_replica;
    }
    {
        let delivered = sink.delivered.lock().unwrap();
        summary.acknowledged = acknowledged.len() as u64;
        summary.lost = lost.len() as u64;
        summary.delivered = summary.acknowledged - summary.lost;
        summary.deliveries_ok = delivered.values().map(|&n| u64::from(n)).sum();
        summary.duplicates = delivered.values().map(|&n| u64::from(n) - 1).sum();
        summary.unacknowledged_delivered = delivered
            .keys()
            .filter(|id| !acknowledged.contains(*id))
            .count() as u64;
    }
    summary.deliveries_refused = sink.refused.load(Ordering::Relaxed);
    if !restart_times.is_empty() {
        summary.restart_ready_max = restart_times.iter().copied().max().unwrap_or_default();
        summary.restart_ready_mean =
            restart_times.iter().sum::<Duration>() / restart_times.len() as u32;
    }

    drop(gateways);
    drop(pg);
    if summary.lost > 0 {
        summary.kept_dir = Some(work.keep());
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_spread_among_kills() {
        let plan = |k, r| {
            fault_plan(k, r)
                .iter()
                .map(|f| match f {
                    Fault::Kill => 'k',
                    Fault::PgRestart => 'R',
                })
                .collect::<String>()
        };
        assert_eq!(plan(3, 0), "kkk");
        assert_eq!(plan(3, 1), "kRkk");
        assert_eq!(plan(4, 1), "kkRkk");
        assert_eq!(plan(6, 2), "kkRkkRkk");
        assert_eq!(plan(0, 2), "RR");
        assert_eq!(plan(1, 3), "RRRk");
    }

    #[test]
    fn listen_address_from_the_log() {
        let log = "x\n2024 INFO hookstream_gateway::server: hookstream gateway started listen=127.0.0.1:4321\n";
        assert_eq!(
            logged_listen(log, 0).as_deref(),
            Some("http://127.0.0.1:4321")
        );
        assert_eq!(logged_listen(log, log.len()), None);
    }
}
