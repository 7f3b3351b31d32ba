//! Catch-up after an outage: how fast a backlog drains once its destination is back.
//!
//! A release gateway (SQLite) routes to a local receiver that answers 503: the circuit opens
//! and `BENCH_BACKLOG` events (default 9,000) wait. Then the receiver answers 200 again; after
//! the cooldown one probe closes the circuit and the backlog drains at the destination's
//! concurrency. Prints the drain rate, and how long events sent during the drain waited (they
//! queue behind the backlog, so about the rest of the drain, never longer).
//!
//! Run: `cargo bench -p hookstream-gateway --bench catchup`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

struct Receiver {
    up: AtomicBool,
    /// Arrival time of each event's first 2xx delivery.
    delivered: Mutex<HashMap<String, Instant>>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap) -> StatusCode {
    if !r.up.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(id) = headers
        .get("x-hookstream-event-id")
        .and_then(|v| v.to_str().ok())
    {
        r.delivered
            .lock()
            .expect("receiver lock")
            .entry(id.to_owned())
            .or_insert_with(Instant::now);
    }
    StatusCode::OK
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

fn start_gateway(receiver: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("m")).expect("manifests dir");
    let manifests = format!(
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
  http: {{url: "{receiver}/hook", timeoutSeconds: 5}}
  retry: {{maxRetries: 20, backoff: fixed, intervals: [1s]}}
  circuitBreaker: {{failureThreshold: 5, cooldown: 1s}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: t}}
spec: {{source: in, destination: out}}
"#
    );
    std::fs::write(dir.path().join("m/bench.yaml"), manifests).expect("manifests");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_hookstream-gateway"))
        .arg("--manifests")
        .arg(dir.path().join("m"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("db.sqlite").display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway not ready");
}

/// Sends `n` events with 32 senders; returns their ids with their send times.
async fn send(http: &reqwest::Client, base: &str, n: usize) -> Vec<(String, Instant)> {
    let url = format!("{base}/v1/ingest/t/in");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, url, next) = (http.clone(), url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let at = Instant::now();
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"type":"order.paid","amount":4999}"#)
                    .send()
                    .await
                    .expect("ingest");
                let body: serde_json::Value = r.json().await.expect("ingest answer");
                sent.push((body["event_id"].as_str().expect("event_id").to_owned(), at));
            }
            sent
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("sender"));
    }
    all
}

#[tokio::main]
async fn main() {
    let backlog = std::env::var("BENCH_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9_000usize);
    let receiver = Arc::new(Receiver {
        up: AtomicBool::new(false),
        delivered: Mutex::new(HashMap::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver port");
    let addr: SocketAddr = listener.local_addr().expect("receiver addr");
    let app = axum::Router::new()
        .fallback(receive)
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });

    let gw = start_gateway(&format!("http://{addr}"));
    let http = reqwest::Client::new();
    wait_ready(&http, &gw.base).await;
    let waiting = send(&http, &gw.base, backlog).await;
    // Let the circuit open and every delivery settle into the queue.
    tokio::time::sleep(Duration::from_secs(2)).await;

    receiver.up.store(true, Ordering::Relaxed);
    let back = Instant::now();
    // Events sent while the backlog drains queue behind it.
    let during = send(&http, &gw.base, 200).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = receiver.delivered.lock().expect("receiver lock").len();
        if n >= backlog + during.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} delivered after 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = receiver.delivered.lock().expect("receiver lock").clone();
    let backlog_times: Vec<Instant> = waiting.iter().map(|(id, _)| delivered[id]).collect();
    let first = *backlog_times.iter().min().expect("a delivery");
    let last = *backlog_times.iter().max().expect("a delivery");
    let drain = last.duration_since(first).as_secs_f64();
    let mut waits: Vec<f64> = during
        .iter()
        .map(|(id, sent)| delivered[id].duration_since(*sent).as_secs_f64())
        .collect();
    waits.sort_by(f64::total_cmp);
    println!(
        "catch-up: {backlog} waiting deliveries drained in {drain:.2} s ({:.0}/s), the first {:.2} s after the destination came back (cooldown 1 s, then one probe)",
        backlog as f64 / drain.max(1e-9),
        first.duration_since(back).as_secs_f64()
    );
    println!(
        "catch-up: {} events sent during the drain waited p50 {:.2} s, max {:.2} s (the backlog ahead of them took {:.2} s from their send)",
        waits.len(),
        waits[waits.len() / 2],
        waits[waits.len() - 1],
        last.duration_since(during[0].1).as_secs_f64()
    );
}
