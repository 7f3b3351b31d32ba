//! Throughput, latency and CPU cost of real gateway processes (release build), on SQLite and
//! on PostgreSQL with one or three replicas sharing one database:
//!
//! 1. durable ingest: as many signed-off (200) events per second as concurrent senders can
//!    get acknowledged, with no routes (the senders spread round-robin over the replicas);
//! 2. end to end: a paced load (default 5,000 events/s on SQLite, 3,000/s on PostgreSQL, for
//!    10 s) through one Connection to a local HTTP receiver; reports delivered events/s and
//!    the latency from sending the webhook to its arrival at the receiver (p50, p95, p99,
//!    max).
//!
//! Every run also prints the CPU seconds the gateway process(es) spent (utime + stime from
//! /proc/PID/stat, before and after the load) per 1,000 events acknowledged or delivered, and
//! how many cores each process used meanwhile: gateway, PostgreSQL (its postmaster and all
//! its children), the load generator, the receiver, and the whole machine. That shows what
//! limits a figure.
//!
//! With `BENCH_BASELINE` (the directory of the release binaries of ../shared/bench-baseline:
//! `server`, `gen`, `sink`; `scripts/bench-vs-baseline` builds them and sets it) each round
//! also measures, in the same session as the gateway's figures:
//!
//! - the bare durable server (`server sqlite PORT DB FULL 256`: one writer thread, group
//!   commit, fsync) under the same ingest load as the gateway's durable-ingest run, and the
//!   ratio gateway / bare server;
//! - end to end with the baseline's open-loop generator and recording receiver, `gen` →
//!   gateway → `sink`, at fixed offered rates (5,000/s and 6,500/s on SQLite, 3,000/s on
//!   PostgreSQL with one replica): delivered/s, latency p50/p99/max from the `ts` (send time)
//!   in the body as the sink sees it, CPU s per 1,000 deliveries.
//!
//! With `BENCH_ROUNDS` > 1 everything runs that many times, round after round, and a summary
//! gives the median and range of each figure, then the project's targets beside the medians
//! (printed, not asserted).
//!
//! Run: `cargo bench -p hookstream-gateway --bench pipeline`, or `scripts/bench-vs-baseline`
//! (three rounds with the baseline). Tunables (environment):
//!
//! - `BENCH_BACKEND`: `sqlite` or `postgres`; default both, PostgreSQL only when reachable.
//! - `BENCH_REPLICAS`: gateway replicas on PostgreSQL (`1`, `3`, ...); default 1, then 3.
//! - `BENCH_PG_URL`: a PostgreSQL server URL (a role that may CREATE DATABASE; one database
//!   per run is created and dropped); default `HOOKSTREAM_TEST_POSTGRES`, else the server of
//!   `scripts/pg-up` (postgres://hookstream:hookstream@127.0.0.1:15432/hookstream).
//! - `BENCH_BASELINE`: directory with the baseline's `server`, `gen` and `sink`.
//! - `BENCH_ROUNDS` (1), `BENCH_PAUSE` (seconds between runs, 2).
//! - `BENCH_INGEST_EVENTS` (60000), `BENCH_CONCURRENCY` (ingest senders, 64).
//! - `BENCH_RATE` (5000, SQLite), `BENCH_PG_RATE` (3000), `BENCH_SECONDS` (10),
//!   `BENCH_E2E_CONCURRENCY` (paced senders, 256).
//! - `BENCH_GEN_RATES` (`5000,6500`, SQLite), `BENCH_PG_GEN_RATES` (`3000`, PostgreSQL with one
//!   replica; `gen` sends to one URL), `BENCH_WARMUP_SECONDS` (1: `gen` at the same rate
//!   before each measured `gen` run, not counted).
//! - `BENCH_DESTINATION_CONCURRENCY`: the Destination's `concurrency` (deliveries in flight);
//!   unset: the Destination's default.
//! - `BENCH_ONLY=ingest`: durable ingest (and the bare server) only, no end-to-end runs.
//! - `BENCH_PERF`: a path prefix; each `gen` run is recorded with `perf record -g` of the
//!   gateway process(es) into PREFIX-LABEL-RATE.data (perf costs CPU: not for figures).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;

/// The URL `scripts/pg-up` prints.
const PG_UP_URL: &str = "postgres://hookstream:hookstream@127.0.0.1:15432/hookstream";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}: {s:?} is not a number"))
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

// ---- CPU accounting from /proc ----------------------------------------------------------

/// Clock ticks per second of the times in /proc/PID/stat.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The fields of /proc/ID/stat after the command name: [0] is the state, [1] the parent pid,
/// [11] utime, [12] stime, [13] cutime, [14] cstime.
fn stat_fields(id: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{id}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of a process (`children`: plus cutime + cstime, its reaped children).
fn ticks(id: &str, children: bool) -> Option<u64> {
    let f = stat_fields(id)?;
    let own = f.get(11)? + f.get(12)?;
    Some(if children {
        own + f.get(13)? + f.get(14)?
    } else {
        own
    })
}

/// Busy ticks of the whole machine (all of /proc/stat's `cpu` line but idle and iowait).
fn machine_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    line.split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, f)| f.parse::<u64>().unwrap_or(0))
        .sum()
}

/// CPU ticks of a PostgreSQL server: the postmaster with its reaped children, plus every live
/// child (backends, WAL writer, checkpointer, ...).
fn postgres_ticks(postmaster: u32) -> Option<u64> {
    let mut total = ticks(&postmaster.to_string(), true)?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(f) = stat_fields(id) {
            if f.get(1).copied() == Some(u64::from(postmaster)) {
                total += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
            }
        }
    }
    Some(total)
}

/// The processes whose CPU a run reports.
#[derive(Default, Clone)]
struct Procs {
    gateways: Vec<u32>,
    postmaster: Option<u32>,
    /// The `sink` process (the in-process receiver counts as the bench's own CPU).
    receiver: Option<u32>,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    gateway: u64,
    postgres: Option<u64>,
    /// This process: the in-process senders and receiver.
    bench: u64,
    /// Reaped children of this process: a `gen` run that has ended.
    reaped: u64,
    receiver: Option<u64>,
    machine: u64,
}

impl Procs {
    fn sample(&self) -> Sample {
        let self_fields = stat_fields("self").unwrap_or_default();
        let field = |i: usize| self_fields.get(i).copied().unwrap_or(0);
        Sample {
            at: Instant::now(),
            gateway: self
                .gateways
                .iter()
                .filter_map(|p| ticks(&p.to_string(), false))
                .sum(),
            postgres: self.postmaster.and_then(postgres_ticks),
            bench: field(11) + field(12),
            reaped: field(13) + field(14),
            receiver: self.receiver.and_then(|p| ticks(&p.to_string(), false)),
            machine: machine_ticks(),
        }
    }
}

/// CPU use between two samples.
struct CpuUse {
    wall: f64,
    gateway_s: f64,
    per_1000: f64,
    postgres_s: Option<f64>,
    bench_s: f64,
    gen_s: Option<f64>,
    receiver_s: Option<f64>,
    machine_s: f64,
}

impl CpuUse {
    /// `count`: events acknowledged or delivered; `with_gen`: the load came from `gen`.
    fn between(before: &Sample, after: &Sample, count: u64, with_gen: bool, tck: f64) -> Self {
        let s = |a: u64, b: u64| b.saturating_sub(a) as f64 / tck;
        let gateway_s = s(before.gateway, after.gateway);
        CpuUse {
            wall: after.at.duration_since(before.at).as_secs_f64(),
            gateway_s,
            per_1000: if count == 0 {
                f64::NAN
            } else {
                gateway_s / (count as f64 / 1000.0)
            },
            postgres_s: before.postgres.zip(after.postgres).map(|(a, b)| s(a, b)),
            bench_s: s(before.bench, after.bench),
            gen_s: with_gen.then(|| s(before.reaped, after.reaped)),
            receiver_s: before.receiver.zip(after.receiver).map(|(a, b)| s(a, b)),
            machine_s: s(before.machine, after.machine),
        }
    }

    fn cores(&self, seconds: f64) -> f64 {
        seconds / self.wall.max(1e-9)
    }

    /// Prints one line; `main`: what the measured process is, `units`: "events" or
    /// "deliveries".
    fn print(&self, main: &str, units: &str) {
        let part =
            |name: &str, secs: f64| format!("{name} {secs:.2} s ({:.2} cores)", self.cores(secs));
        let mut parts = vec![format!(
            "{}, {:.3} CPU s per 1,000 {units}",
            part(main, self.gateway_s),
            self.per_1000
        )];
        if let Some(p) = self.postgres_s {
            parts.push(part("postgres", p));
        }
        if let Some(g) = self.gen_s {
            parts.push(part("gen", g));
        }
        if let Some(r) = self.receiver_s {
            parts.push(part("sink", r));
        }
        let bench_name = if self.gen_s.is_some() {
            "bench"
        } else {
            "bench senders+receiver"
        };
        parts.push(part(bench_name, self.bench_s));
        parts.push(format!(
            "machine {:.2} of {} cores busy",
            self.cores(self.machine_s),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ));
        println!("  cpu over {:.1} s: {}", self.wall, parts.join("; "));
    }

    fn record(&self, summary: &mut Summary, prefix: &str, units: &str) {
        summary.add(
            format!("{prefix}: gateway CPU s per 1,000 {units}"),
            self.per_1000,
        );
        summary.add(
            format!("{prefix}: gateway cores"),
            self.cores(self.gateway_s),
        );
        if let Some(p) = self.postgres_s {
            summary.add(format!("{prefix}: postgres cores"), self.cores(p));
        }
        if let Some(g) = self.gen_s {
            summary.add(format!("{prefix}: gen cores"), self.cores(g));
        }
        if let Some(r) = self.receiver_s {
            summary.add(format!("{prefix}: sink cores"), self.cores(r));
        }
        summary.add(
            format!("{prefix}: machine busy cores"),
            self.cores(self.machine_s),
        );
    }
}

// ---- figures over rounds -----------------------------------------------------------------

#[derive(Default)]
struct Summary {
    keys: Vec<String>,
    values: HashMap<String, Vec<f64>>,
}

impl Summary {
    fn add(&mut self, key: String, value: f64) {
        if !self.values.contains_key(&key) {
            self.keys.push(key.clone());
        }
        self.values.entry(key).or_default().push(value);
    }

    fn sorted(&self, key: &str) -> Option<Vec<f64>> {
        let mut v: Vec<f64> = self
            .values
            .get(key)?
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v)
    }

    fn median(&self, key: &str) -> Option<f64> {
        let v = self.sorted(key)?;
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }

    fn print(&self, rounds: u64) {
        println!();
        println!("== summary over {rounds} round(s): median (min to max)");
        let width = self.keys.iter().map(|k| k.len()).max().unwrap_or(0);
        for key in &self.keys {
            let (Some(v), Some(m)) = (self.sorted(key), self.median(key)) else {
                continue;
            };
            let (lo, hi) = (v[0], v[v.len() - 1]);
            if v.len() > 1 {
                println!("{key:<width$}  {} ({} to {})", fig(m), fig(lo), fig(hi));
            } else {
                println!("{key:<width$}  {}", fig(m));
            }
        }
    }
}

fn fig(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || (x == x.round() && a < 1e15) {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

// ---- databases and gateway processes -----------------------------------------------------

/// A PostgreSQL server; each run gets a database of its own.
struct Postgres {
    url: String,
    /// The postmaster, when the server runs on this machine (its CPU is reported).
    postmaster: Option<u32>,
}

impl Postgres {
    async fn connect(url: &str) -> Result<Postgres, String> {
        use sqlx::Connection;
        let mut conn =
            tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url))
                .await
                .map_err(|_| "no answer within 10 s".to_string())?
                .map_err(|e| e.to_string())?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = conn.close().await;
        // The backend's parent is the postmaster, if this is the machine it runs on.
        let postmaster = stat_fields(&backend.to_string())
            .and_then(|f| f.get(1).copied())
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "postgres" || c.trim() == "postmaster")
            });
        Ok(Postgres {
            url: url.to_string(),
            postmaster,
        })
    }

    async fn execute(&self, sql: &str) {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(&self.url)
            .await
            .expect("connect to PostgreSQL");
        conn.execute(sql).await.expect(sql);
        let _ = conn.close().await;
    }

    /// Creates a database; returns its name and URL.
    async fn create_database(&self) -> (String, String) {
        let name = format!("hs_bench_{:016x}", rand::random::<u64>());
        self.execute(&format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&self.url).expect("PostgreSQL URL");
        url.set_path(&name);
        (name, url.to_string())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// What a run runs on.
#[derive(Clone, Copy)]
struct Target {
    backend: Backend,
    replicas: usize,
}

impl Target {
    fn label(&self) -> String {
        match self.backend {
            Backend::Sqlite => "sqlite".to_string(),
            Backend::Postgres => format!("postgres x{}", self.replicas),
        }
    }
}

struct Gateway {
    child: Child,
    base: String,
}

/// The gateway process(es) of one run, sharing one database.
struct Cluster {
    gateways: Vec<Gateway>,
    database: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for gw in &mut self.gateways {
            let _ = gw.child.kill();
            let _ = gw.child.wait();
        }
    }
}

impl Cluster {
    fn ingest_urls(&self) -> Vec<String> {
        self.gateways
            .iter()
            .map(|g| format!("{}/v1/ingest/t/in", g.base))
            .collect()
    }

    fn pids(&self) -> Vec<u32> {
        self.gateways.iter().map(|g| g.child.id()).collect()
    }

    /// Stops the gateways and drops the run's PostgreSQL database.
    async fn stop(mut self, pg: Option<&Postgres>) {
        for gw in &mut self.gateways {
            let _ = gw.child.kill();
            let _ = gw.child.wait();
        }
        if let (Some(pg), Some(name)) = (pg, self.database.take()) {
            pg.execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

async fn start_cluster(manifests: &str, target: Target, pg: Option<&Postgres>) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("m")).expect("manifests dir");
    std::fs::write(dir.path().join("m/bench.yaml"), manifests).expect("manifests");
    let (database, url) = match target.backend {
        Backend::Sqlite => (
            None,
            format!("sqlite://{}", dir.path().join("bench.db").display()),
        ),
        Backend::Postgres => {
            let (name, url) = pg.expect("a PostgreSQL server").create_database().await;
            (Some(name), url)
        }
    };
    let mut cluster = Cluster {
        gateways: Vec::new(),
        database,
        _dir: dir,
    };
    // One after the other: the first one runs the migrations.
    for _ in 0..target.replicas {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_hookstream-gateway"))
            .arg("--manifests")
            .arg(cluster._dir.path().join("m"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--database")
            .arg(&url)
            .env("RUST_LOG", "warn")
            // Only so that the gateway does not warn that the management API is closed.
            .env("HOOKSTREAM_API_KEYS", format!("hs_test_{}", "0".repeat(64)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gateway binary runs");
        // Owned by the cluster at once, whose drop kills and reaps it on every path.
        cluster.gateways.push(Gateway {
            child,
            base: format!("http://127.0.0.1:{port}"),
        });
        let base = cluster.gateways.last().expect("just pushed").base.clone();
        wait_ok(&format!("{base}/readyz"), "gateway").await;
    }
    cluster
}

/// Waits until GET `url` answers 2xx.
async fn wait_ok(url: &str, what: &str) {
    let client = reqwest::Client::new();
    for _ in 0..1200 {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not become ready at {url}");
}

/// A child process killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

const SOURCE_ONLY: &str =
    "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {name: in, namespace: t}\nspec: {}\n";

/// A Source `t/in`, a Destination to `receiver` and a Connection between them (`filter`:
/// only `body.type == order.created`).
fn routed(receiver: &str, filter: bool) -> String {
    let filters = if filter {
        "\n  filters: [{field: body.type, op: eq, value: order.created}]"
    } else {
        ""
    };
    let concurrency = std::env::var("BENCH_DESTINATION_CONCURRENCY")
        .ok()
        .filter(|c| !c.is_empty())
        .map_or(String::new(), |c| format!("\n  concurrency: {c}"));
    format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec:
  type: http
  http: {{url: "{receiver}/hook"}}{concurrency}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: all, namespace: t}}
spec:
  source: in
  destination: out{filters}
"#
    )
}

// ---- durable ingest ----------------------------------------------------------------------

/// `events` POSTs by `concurrency` senders, each sending its next one when the last is
/// answered, spread round-robin over `urls`. Returns (acknowledged, failed, seconds).
async fn closed_loop(urls: &[String], events: u64, concurrency: u64) -> (u64, u64, f64) {
    let client = client();
    let urls = Arc::new(urls.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, urls, next, failures) =
            (client.clone(), urls.clone(), next.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    break;
                }
                let body = format!(
                    r#"{{"type":"order.created","n":{n},"data":{{"id":"ord_{n}","amount":4999}}}}"#
                );
                match client
                    .post(&urls[(n % urls.len() as u64) as usize])
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let failed = failures.load(Ordering::Relaxed);
    (events - failed, failed, started.elapsed().as_secs_f64())
}

/// Writes out what earlier runs left in the page cache (the end-to-end runs write hundreds of
/// megabytes), so that neither durable-ingest run has its fsyncs wait behind that writeback:
/// without it the gateway, which runs first in a round, measured up to a quarter lower than
/// in a round of its own.
async fn settle_disk() {
    let _ = tokio::process::Command::new("sync").status().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Durable ingest of the gateway; returns the acknowledged events/s.
async fn bench_ingest(ctx: &mut Ctx<'_>, target: Target) -> f64 {
    let (events, concurrency) = (ctx.cfg.ingest_events, ctx.cfg.concurrency);
    let label = target.label();
    let cluster = start_cluster(SOURCE_ONLY, target, ctx.pg).await;
    let procs = Procs {
        gateways: cluster.pids(),
        postmaster: ctx.postmaster(target),
        receiver: None,
    };
    settle_disk().await;
    let before = procs.sample();
    let (ok, failed, elapsed) = closed_loop(&cluster.ingest_urls(), events, concurrency).await;
    let after = procs.sample();
    let rate = ok as f64 / elapsed;
    println!(
        "[{label}] ingest (durable, no routes): {events} events in {elapsed:.2} s = {rate:.0} events/s acknowledged ({failed} failed, {concurrency} concurrent senders, {} replica(s))",
        target.replicas
    );
    let cpu = CpuUse::between(&before, &after, ok, false, ctx.tck);
    cpu.print("gateway", "events");
    let prefix = format!("{label} ingest");
    ctx.summary.add(format!("{prefix}: events/s"), rate);
    cpu.record(ctx.summary, &prefix, "events");
    cluster.stop(ctx.pg).await;
    rate
}

/// The bare durable server of the baseline under the same load as `bench_ingest`; returns
/// its acknowledged events/s.
async fn bench_bare_ingest(ctx: &mut Ctx<'_>, baseline: &Path) -> f64 {
    let (events, concurrency) = (ctx.cfg.ingest_events, ctx.cfg.concurrency);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let server = Process(
        Command::new(baseline.join("server"))
            .arg("sqlite")
            .arg(port.to_string())
            .arg(dir.path().join("bare.sqlite"))
            .args(["FULL", "256"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the baseline's server runs"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{base}/stats"), "bare server").await;
    let procs = Procs {
        gateways: vec![server.0.id()],
        ..Procs::default()
    };
    settle_disk().await;
    let before = procs.sample();
    let (ok, failed, elapsed) = closed_loop(&[format!("{base}/ingest")], events, concurrency).await;
    let after = procs.sample();
    let rate = ok as f64 / elapsed;
    println!(
        "[bare server sqlite FULL 256] ingest: {events} events in {elapsed:.2} s = {rate:.0} events/s acknowledged ({failed} failed, {concurrency} concurrent senders)"
    );
    let cpu = CpuUse::between(&before, &after, ok, false, ctx.tck);
    cpu.print("server", "events");
    ctx.summary.add("bare server ingest: events/s".into(), rate);
    ctx.summary.add(
        "bare server ingest: server CPU s per 1,000 events".into(),
        cpu.per_1000,
    );
    drop(server);
    rate
}

// ---- end to end with the bench's own senders and receiver --------------------------------

#[derive(Default)]
struct Arrivals {
    latencies_us: Vec<u64>,
    last: Option<Instant>,
}

async fn receive(State(arrivals): State<Arc<Mutex<Arrivals>>>, body: Bytes) -> &'static str {
    let now = micros_now();
    let sent = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["sent_us"].as_u64())
        .unwrap_or(now);
    let mut a = arrivals.lock().expect("arrivals lock");
    a.latencies_us.push(now.saturating_sub(sent));
    a.last = Some(Instant::now());
    "ok"
}

async fn bench_end_to_end(ctx: &mut Ctx<'_>, target: Target, rate: u64) {
    let (seconds, concurrency) = (ctx.cfg.seconds, ctx.cfg.e2e_concurrency);
    let label = target.label();
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(arrivals.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    let cluster = start_cluster(&routed(&format!("http://{addr}"), true), target, ctx.pg).await;
    let procs = Procs {
        gateways: cluster.pids(),
        postmaster: ctx.postmaster(target),
        receiver: None,
    };
    let urls = Arc::new(cluster.ingest_urls());
    let client = client();
    let total = rate * seconds;
    let per_sender = Duration::from_secs_f64(concurrency as f64 / rate as f64);
    let ack_us = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let failures = Arc::new(AtomicU64::new(0));
    let before = procs.sample();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..concurrency {
        let (client, urls, ack_us, failures) = (
            client.clone(),
            urls.clone(),
            ack_us.clone(),
            failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_sender);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut n = s;
            while n < total {
                tick.tick().await;
                let sent = micros_now();
                let body = format!(r#"{{"type":"order.created","n":{n},"sent_us":{sent}}}"#);
                let t = Instant::now();
                match client
                    .post(&urls[(n % urls.len() as u64) as usize])
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => ack_us
                        .lock()
                        .expect("lock")
                        .push(t.elapsed().as_micros() as u64),
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += concurrency;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let sending = started.elapsed().as_secs_f64();
    let accepted = total - failures.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("lock").latencies_us.len() < accepted as usize
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = procs.sample();
    let (mut lat, last) = {
        let a = arrivals.lock().expect("lock");
        (a.latencies_us.clone(), a.last)
    };
    let span = last.map_or(sending, |l| l.duration_since(started).as_secs_f64());
    lat.sort_unstable();
    let mut acks = ack_us.lock().expect("lock").clone();
    acks.sort_unstable();
    let delivered_rate = lat.len() as f64 / span;
    println!(
        "[{label}] end to end: offered {rate}/s for {seconds} s; sent in {sending:.2} s ({:.0}/s), {accepted} accepted, {} delivered in {span:.2} s = {delivered_rate:.0} delivered events/s",
        total as f64 / sending,
        lat.len(),
    );
    println!(
        "  end to end latency (send -> receiver): p50 {} p95 {} p99 {} max {}",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.95)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or(0))
    );
    println!(
        "  ingest acknowledgement latency: p50 {} p99 {}",
        ms(percentile(&acks, 0.50)),
        ms(percentile(&acks, 0.99))
    );
    let cpu = CpuUse::between(&before, &after, lat.len() as u64, false, ctx.tck);
    cpu.print("gateway", "deliveries");
    let prefix = format!("{label} e2e bench senders {rate}/s");
    ctx.summary
        .add(format!("{prefix}: delivered/s"), delivered_rate);
    ctx.summary.add(
        format!("{prefix}: undelivered"),
        total.saturating_sub(lat.len() as u64) as f64,
    );
    ctx.summary.add(
        format!("{prefix}: p50 ms"),
        percentile(&lat, 0.50) as f64 / 1000.0,
    );
    ctx.summary.add(
        format!("{prefix}: p99 ms"),
        percentile(&lat, 0.99) as f64 / 1000.0,
    );
    cpu.record(ctx.summary, &prefix, "deliveries");
    cluster.stop(ctx.pg).await;
    receiver.abort();
}

// ---- end to end with the baseline's gen and sink -----------------------------------------

/// What `gen` printed: `key=value` pairs.
struct GenReport(HashMap<String, String>);

impl GenReport {
    fn parse(text: &str) -> GenReport {
        GenReport(
            text.split_whitespace()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn num(&self, key: &str) -> f64 {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

async fn run_gen(baseline: &Path, url: &str, rate: u64, seconds: u64) -> (GenReport, String) {
    let out = tokio::process::Command::new(baseline.join("gen"))
        .args([url, "-", &rate.to_string(), &seconds.to_string(), "flat"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("the baseline's gen runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "gen failed: {text}");
    (GenReport::parse(&text), text)
}

/// Polls the sink until it has `expected` deliveries or none arrive for 5 s (at most 60 s).
async fn sink_drained(client: &reqwest::Client, sink: &str, expected: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut seen, mut since) = (0, Instant::now());
    loop {
        let stats: serde_json::Value = client
            .get(format!("{sink}/stats"))
            .send()
            .await
            .expect("sink answers")
            .json()
            .await
            .expect("sink stats");
        let n = stats["n_total"].as_u64().unwrap_or(0);
        if n >= expected || Instant::now() > deadline || since.elapsed() > Duration::from_secs(5) {
            return stats;
        }
        if n != seen {
            (seen, since) = (n, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bench_gen(ctx: &mut Ctx<'_>, target: Target, baseline: &Path, rate: u64) {
    let seconds = ctx.cfg.seconds;
    let label = target.label();
    let port = free_port();
    let sink = Process(
        Command::new(baseline.join("sink"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the baseline's sink runs"),
    );
    let sink_url = format!("http://127.0.0.1:{port}");
    wait_ok(&format!("{sink_url}/stats"), "sink").await;
    let cluster = start_cluster(&routed(&sink_url, false), target, ctx.pg).await;
    let url = cluster.ingest_urls()[0].clone();
    let client = client();
    if ctx.cfg.warmup_seconds > 0 {
        let (warm, _) = run_gen(baseline, &url, rate, ctx.cfg.warmup_seconds).await;
        sink_drained(&client, &sink_url, warm.num("ok") as u64).await;
        client
            .get(format!("{sink_url}/stats?reset=1"))
            .send()
            .await
            .expect("sink reset");
    }
    let procs = Procs {
        gateways: cluster.pids(),
        postmaster: ctx.postmaster(target),
        receiver: Some(sink.0.id()),
    };
    let perf = ctx.cfg.perf.as_ref().map(|prefix| {
        let file = format!("{prefix}-{}-{rate}.data", label.replace(' ', "-"));
        let pids: Vec<String> = procs.gateways.iter().map(|p| p.to_string()).collect();
        println!("  perf record -g of the gateway into {file}");
        Process(
            Command::new("perf")
                .args(["record", "-g", "-o", &file, "-p", &pids.join(",")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf runs"),
        )
    });
    let before = procs.sample();
    let (report, text) = run_gen(baseline, &url, rate, seconds).await;
    let sent = report.num("sent") as u64;
    let stats = sink_drained(&client, &sink_url, sent).await;
    let after = procs.sample();
    if let Some(mut perf) = perf {
        // perf writes its file on SIGINT.
        let _ = Command::new("kill")
            .args(["-INT", &perf.0.id().to_string()])
            .status();
        let _ = perf.0.wait();
    }
    let delivered = stats["n_ts"].as_u64().unwrap_or(0);
    let span = stats["ts_span_s"].as_f64().unwrap_or(f64::NAN);
    let delivered_rate = delivered as f64 / span;
    let lat = |p: &str| stats["lat_ms"][p].as_f64().unwrap_or(f64::NAN);
    println!("[{label}] gen -> gateway -> sink, offered {rate}/s for {seconds} s: {text}");
    println!(
        "  delivered {delivered} of {sent} in {span:.2} s = {delivered_rate:.0} delivered/s; latency (gen send -> sink) p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms max {:.2} ms",
        lat("p50"),
        lat("p90"),
        lat("p99"),
        lat("max")
    );
    let cpu = CpuUse::between(&before, &after, delivered, true, ctx.tck);
    cpu.print("gateway", "deliveries");
    let prefix = format!("{label} gen {rate}/s");
    ctx.summary
        .add(format!("{prefix}: delivered/s"), delivered_rate);
    ctx.summary.add(
        format!("{prefix}: undelivered"),
        sent.saturating_sub(delivered) as f64,
    );
    ctx.summary.add(format!("{prefix}: p50 ms"), lat("p50"));
    ctx.summary.add(format!("{prefix}: p99 ms"), lat("p99"));
    ctx.summary.add(format!("{prefix}: max ms"), lat("max"));
    ctx.summary
        .add(format!("{prefix}: gen late >5ms"), report.num("late_gt5ms"));
    ctx.summary
        .add(format!("{prefix}: gen publish p99 ms"), report.num("p99"));
    cpu.record(ctx.summary, &prefix, "deliveries");
    cluster.stop(ctx.pg).await;
    drop(sink);
}

// ---- configuration and the rounds --------------------------------------------------------

struct Config {
    ingest_events: u64,
    concurrency: u64,
    rate: u64,
    pg_rate: u64,
    seconds: u64,
    e2e_concurrency: u64,
    gen_rates: Vec<u64>,
    pg_gen_rates: Vec<u64>,
    warmup_seconds: u64,
    perf: Option<String>,
}

struct Ctx<'a> {
    cfg: &'a Config,
    pg: Option<&'a Postgres>,
    summary: &'a mut Summary,
    tck: f64,
}

impl Ctx<'_> {
    fn postmaster(&self, target: Target) -> Option<u32> {
        match target.backend {
            Backend::Sqlite => None,
            Backend::Postgres => self.pg.and_then(|p| p.postmaster),
        }
    }
}

async fn targets() -> (Vec<Target>, Option<Postgres>) {
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_default();
    let replicas = std::env::var("BENCH_REPLICAS").ok().map(|r| {
        r.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("BENCH_REPLICAS={r} is not a positive number"))
    });
    let (sqlite, postgres) = match backend.as_str() {
        "" => (true, true),
        "sqlite" => (true, false),
        "postgres" | "postgresql" => (false, true),
        other => panic!("BENCH_BACKEND={other}: use sqlite or postgres"),
    };
    if backend == "sqlite" && replicas.is_some_and(|r| r != 1) {
        panic!("SQLite runs one replica; BENCH_REPLICAS is for PostgreSQL");
    }
    let mut targets = Vec::new();
    if sqlite {
        targets.push(Target {
            backend: Backend::Sqlite,
            replicas: 1,
        });
    }
    let mut pg = None;
    if postgres {
        let url = std::env::var("BENCH_PG_URL")
            .or_else(|_| std::env::var("HOOKSTREAM_TEST_POSTGRES"))
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| PG_UP_URL.to_string());
        match Postgres::connect(&url).await {
            Ok(server) => {
                let shown = url::Url::parse(&url).map_or_else(
                    |_| "(unparsable URL)".to_string(),
                    |mut u| {
                        let _ = u.set_password(None);
                        u.to_string()
                    },
                );
                println!(
                    "PostgreSQL: {shown} (postmaster pid {})",
                    server
                        .postmaster
                        .map_or("not on this machine".to_string(), |p| p.to_string())
                );
                pg = Some(server);
                for r in replicas.map_or(vec![1, 3], |r| vec![r]) {
                    targets.push(Target {
                        backend: Backend::Postgres,
                        replicas: r,
                    });
                }
            }
            Err(e) if backend.is_empty() => println!(
                "PostgreSQL skipped: cannot connect ({e}); start one with scripts/pg-up or set BENCH_PG_URL"
            ),
            Err(e) => panic!("BENCH_BACKEND=postgres but PostgreSQL is not reachable: {e}"),
        }
    }
    (targets, pg)
}

/// The project's targets beside the medians (not asserted).
fn print_targets(summary: &Summary) {
    let show = |key: &str| summary.median(key).map_or("n/a".to_string(), fig);
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    println!();
    println!("== targets (medians)");
    let ratio = summary.median("sqlite ingest / bare server ingest");
    println!(
        "durable ingest >= 0.8 of the bare server: {} ({})",
        show("sqlite ingest / bare server ingest"),
        verdict(ratio.map(|r| r >= 0.8))
    );
    let k = "sqlite gen 6500/s";
    let und = summary.median(&format!("{k}: undelivered"));
    let p99 = summary.median(&format!("{k}: p99 ms"));
    println!(
        "6,500/s offered on SQLite all delivered, p99 <= 50 ms: {} undelivered, p99 {} ms ({})",
        show(&format!("{k}: undelivered")),
        show(&format!("{k}: p99 ms")),
        verdict(und.zip(p99).map(|(u, p)| u == 0.0 && p <= 50.0))
    );
    let k = "postgres x1 gen 3000/s";
    let und = summary.median(&format!("{k}: undelivered"));
    let p99 = summary.median(&format!("{k}: p99 ms"));
    println!(
        "3,000/s offered on PostgreSQL, one replica, p99 <= 100 ms: {} undelivered, p99 {} ms ({})",
        show(&format!("{k}: undelivered")),
        show(&format!("{k}: p99 ms")),
        verdict(und.zip(p99).map(|(u, p)| u == 0.0 && p <= 100.0))
    );
    for rate in [5000, 6500] {
        let key = format!("sqlite gen {rate}/s: gateway CPU s per 1,000 deliveries");
        let v = summary.median(&key);
        println!(
            "<= 0.15 CPU s per 1,000 deliveries on SQLite ({rate}/s): {} ({})",
            show(&key),
            verdict(v.map(|v| v <= 0.15))
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let cfg = Config {
            ingest_events: env_or("BENCH_INGEST_EVENTS", 60_000),
            concurrency: env_or("BENCH_CONCURRENCY", 64),
            rate: env_or("BENCH_RATE", 5_000),
            pg_rate: env_or("BENCH_PG_RATE", 3_000),
            seconds: env_or("BENCH_SECONDS", 10),
            // Paced senders wait for each answer, so the offered rate needs enough of them
            // to absorb the answer latency.
            e2e_concurrency: env_or("BENCH_E2E_CONCURRENCY", 256),
            gen_rates: env_list("BENCH_GEN_RATES", &[5_000, 6_500]),
            pg_gen_rates: env_list("BENCH_PG_GEN_RATES", &[3_000]),
            warmup_seconds: env_or("BENCH_WARMUP_SECONDS", 1),
            perf: std::env::var("BENCH_PERF").ok().filter(|p| !p.is_empty()),
        };
        let rounds = env_or("BENCH_ROUNDS", 1).max(1);
        let ingest_only = match std::env::var("BENCH_ONLY").unwrap_or_default().as_str() {
            "" => false,
            "ingest" => true,
            other => panic!("BENCH_ONLY={other}: the only choice is ingest"),
        };
        let pause = Duration::from_secs(env_or("BENCH_PAUSE", 2));
        let baseline = std::env::var("BENCH_BASELINE")
            .ok()
            .filter(|b| !b.is_empty())
            .map(PathBuf::from);
        if let Some(b) = &baseline {
            for bin in ["server", "gen", "sink"] {
                assert!(
                    b.join(bin).is_file(),
                    "BENCH_BASELINE={}: no {bin} there (build ../shared/bench-baseline, see scripts/bench-vs-baseline)",
                    b.display()
                );
            }
        }
        let (targets, pg) = targets().await;
        println!(
            "rounds {rounds}; ingest {} events by {} senders; end to end {} s at {}/s (SQLite), {}/s (PostgreSQL); Destination concurrency {}; baseline {}",
            cfg.ingest_events,
            cfg.concurrency,
            cfg.seconds,
            cfg.rate,
            cfg.pg_rate,
            std::env::var("BENCH_DESTINATION_CONCURRENCY").unwrap_or_else(|_| "default".into()),
            baseline
                .as_ref()
                .map_or("not run (set BENCH_BASELINE)".to_string(), |b| b.display().to_string()),
        );
        let mut summary = Summary::default();
        let tck = clock_ticks();
        for round in 1..=rounds {
            println!("\n== round {round} of {rounds}");
            for &target in &targets {
                let mut ctx = Ctx {
                    cfg: &cfg,
                    pg: pg.as_ref(),
                    summary: &mut summary,
                    tck,
                };
                let gateway = bench_ingest(&mut ctx, target).await;
                tokio::time::sleep(pause).await;
                if let (Backend::Sqlite, Some(b)) = (target.backend, &baseline) {
                    let bare = bench_bare_ingest(&mut ctx, b).await;
                    println!(
                        "  gateway durable ingest / bare server ingest = {:.2}",
                        gateway / bare
                    );
                    ctx.summary
                        .add("sqlite ingest / bare server ingest".into(), gateway / bare);
                    tokio::time::sleep(pause).await;
                }
                if ingest_only {
                    continue;
                }
                let rate = match target.backend {
                    Backend::Sqlite => cfg.rate,
                    Backend::Postgres => cfg.pg_rate,
                };
                bench_end_to_end(&mut ctx, target, rate).await;
                tokio::time::sleep(pause).await;
                if let Some(b) = &baseline {
                    let rates = match (target.backend, target.replicas) {
                        (Backend::Sqlite, _) => cfg.gen_rates.clone(),
                        (Backend::Postgres, 1) => cfg.pg_gen_rates.clone(),
                        _ => Vec::new(),
                    };
                    for rate in rates {
                        bench_gen(&mut ctx, target, b, rate).await;
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        summary.print(rounds);
        if baseline.is_some() {
            print_targets(&summary);
        }
    });
}
