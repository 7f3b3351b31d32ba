//! Throughput and latency of a real gateway process (release build, SQLite on local disk):
//!
//! 1. durable ingest: as many signed-off (200) events per second as concurrent senders can
//!    get acknowledged, with no routes;
//! 2. end to end: a paced load (default 5,000 events/s for 10 s) through one Connection to a
//!    local HTTP receiver; reports delivered events/s and the latency from sending the
//!    webhook to its arrival at the receiver (p50, p95, p99, max).
//!
//! Run: `cargo bench -p hookstream-gateway --bench pipeline`. Tunables (environment):
//! `BENCH_INGEST_EVENTS` (default 60000), `BENCH_CONCURRENCY` (ingest senders, 64),
//! `BENCH_RATE` (5000), `BENCH_SECONDS` (10), `BENCH_E2E_CONCURRENCY` (paced senders, 256).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Gateway {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_gateway(manifests: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("m")).expect("manifests dir");
    std::fs::write(dir.path().join("m/bench.yaml"), manifests).expect("manifests");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_hookstream-gateway"))
        .arg("--manifests")
        .arg(dir.path().join("m"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("bench.db").display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway binary runs");
    // Owned by `Gateway` at once, whose drop kills and reaps it on every path.
    let gw = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if client
            .get(format!("{}/readyz", gw.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return gw;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not become ready");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .tcp_nodelay(true)
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

async fn bench_ingest(events: u64, concurrency: u64) {
    let gw = start_gateway(
        "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {name: in, namespace: bench}\nspec: {}\n",
    )
    .await;
    let url = format!("{}/v1/ingest/bench/in", gw.base);
    let client = client();
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, failures) =
            (client.clone(), url.clone(), next.clone(), failures.clone());
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
                    .post(&url)
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
    let elapsed = started.elapsed().as_secs_f64();
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "ingest (durable, no routes): {events} events in {elapsed:.2} s = {:.0} events/s acknowledged ({failed} failed, {concurrency} concurrent senders)",
        (events - failed) as f64 / elapsed
    );
}

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

async fn bench_end_to_end(rate: u64, seconds: u64, concurrency: u64) {
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(arrivals.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    let gw = start_gateway(&format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: bench}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: bench}}
spec:
  type: http
  http: {{url: "http://{addr}/hook"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: all, namespace: bench}}
spec:
  source: in
  destination: out
  filters: [{{field: body.type, op: eq, value: order.created}}]
"#
    ))
    .await;
    let url = format!("{}/v1/ingest/bench/in", gw.base);
    let client = client();
    let total = rate * seconds;
    let per_sender = Duration::from_secs_f64(concurrency as f64 / rate as f64);
    let ack_us = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..concurrency {
        let (client, url, ack_us, failures) = (
            client.clone(),
            url.clone(),
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
                    .post(&url)
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
    let (mut lat, last) = {
        let a = arrivals.lock().expect("lock");
        (a.latencies_us.clone(), a.last)
    };
    let span = last.map_or(sending, |l| l.duration_since(started).as_secs_f64());
    lat.sort_unstable();
    let mut acks = ack_us.lock().expect("lock").clone();
    acks.sort_unstable();
    println!(
        "end to end: offered {rate}/s for {seconds} s; sent in {sending:.2} s ({:.0}/s), {accepted} accepted, {} delivered in {span:.2} s = {:.0} delivered events/s",
        total as f64 / sending,
        lat.len(),
        lat.len() as f64 / span
    );
    println!(
        "end to end latency (send -> receiver): p50 {} p95 {} p99 {} max {}",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.95)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or(0))
    );
    println!(
        "ingest acknowledgement latency: p50 {} p99 {}",
        ms(percentile(&acks, 0.50)),
        ms(percentile(&acks, 0.99))
    );
    drop(gw);
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not used.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let concurrency = env_or("BENCH_CONCURRENCY", 64);
        bench_ingest(env_or("BENCH_INGEST_EVENTS", 60_000), concurrency).await;
        // Paced senders wait for each answer, so the offered rate needs enough of them to
        // absorb the answer latency.
        bench_end_to_end(
            env_or("BENCH_RATE", 5_000),
            env_or("BENCH_SECONDS", 10),
            env_or("BENCH_E2E_CONCURRENCY", 256),
        )
        .await;
    });
}
