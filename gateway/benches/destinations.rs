//! Delivered events/s per destination type: the same load through one Connection to an HTTP
//! receiver, a Kafka topic and an SQS queue, each on a real server on loopback, from a real
//! gateway process (release build, SQLite).
//!
//! Each run sends `BENCH_EVENTS` webhooks (closed loop, `BENCH_CONCURRENCY` senders), then
//! waits until the gateway counts every delivery as succeeded. It prints, per type: ingest
//! events/s, delivered events/s (events over the time from the first send to the last
//! delivery), and the gateway's CPU seconds (with its transform workers) per 1,000
//! deliveries. The broker runs on the same two cores, so its own cost is in every figure
//! but HTTP's; the machine's busy cores are printed beside.
//!
//! Run: `cargo bench -p hookstream-gateway --bench destinations`. Environment:
//! - `BENCH_DESTINATIONS`: comma-separated `http`, `kafka`, `sqs` (default all three).
//! - `BENCH_KAFKA`: `host:port` of a Kafka broker (default: `scripts/kafka-up` starts one).
//! - `BENCH_MOTO`: URL of a moto server (default: `scripts/moto-up` starts one).
//! - `BENCH_EVENTS` (20000), `BENCH_CONCURRENCY` (64), `BENCH_ROUNDS` (1).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The last stdout line of an idempotent `scripts/NAME-up`.
fn script_up(name: &str) -> String {
    let out = Command::new(root().join("scripts").join(format!("{name}-up")))
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("scripts/{name}-up: {e}"));
    assert!(out.status.success(), "scripts/{name}-up failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// utime + stime (with reaped children) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = text.rfind(')').map(|i| &text[i + 2..]).unwrap_or_default();
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks: u64 = fields.iter().skip(11).take(4).sum();
    ticks as f64 / 100.0
}

/// Busy seconds of the whole machine (every core).
fn machine_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy: u64 = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, f)| f.parse::<u64>().unwrap_or(0))
        .sum();
    busy as f64 / 100.0
}

/// A gateway process on its own SQLite database, killed when dropped.
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
    let port = free_port();
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
        .env("HOOKSTREAM_API_KEYS", format!("hs_test_{}", "0".repeat(64)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gateway binary runs");
    let gateway = Gateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{}/readyz", gateway.base)).send().await {
            if r.status().is_success() {
                return gateway;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not become ready");
}

/// Successful attempts the gateway counted for `bench/out`.
async fn delivered(client: &reqwest::Client, base: &str) -> u64 {
    let Ok(r) = client.get(format!("{base}/metrics")).send().await else {
        return 0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("hookstream_gateway_delivery_attempts_total{")
                && l.contains("destination=\"bench/out\"")
                && l.contains("result=\"success\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The manifests of one Source routed to `destination` (the Destination's spec body).
fn manifests(destination: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: bench}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: bench}}
spec:
{destination}
  concurrency: 64
  retry: {{maxRetries: 5, backoff: fixed, intervals: [1s]}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: bench}}
spec: {{source: in, destination: out}}
{extra}"#
    )
}

/// A local HTTP receiver answering 200 to everything.
async fn http_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}/hooks")
}

async fn kafka_topic(bootstrap: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::ClientConfig;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("Kafka admin client");
    let topics = [NewTopic::new(topic, 3, TopicReplication::Fixed(1))];
    let results = admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// Creates queue `name` on the moto server at `endpoint` with SQS's query API (moto tells
/// services apart by the credential scope; it checks no signature) and returns its URL.
async fn sqs_queue(endpoint: &str, name: &str) -> String {
    let answer = reqwest::Client::new()
        .post(endpoint)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=00",
        )
        .form(&[("Action", "CreateQueue"), ("QueueName", name)])
        .send()
        .await
        .expect("moto answers")
        .text()
        .await
        .expect("an answer");
    let url = answer
        .split("<QueueUrl>")
        .nth(1)
        .and_then(|rest| rest.split("</QueueUrl>").next())
        .unwrap_or_else(|| panic!("no queue URL in {answer}"));
    url.to_owned()
}

/// The Destination of `kind` on a fresh topic, queue or receiver.
async fn destination(kind: &str, round: u64) -> String {
    let unique = format!("bench-{}-{round}", std::process::id());
    match kind {
        "http" => manifests(
            &format!(
                "  type: http\n  http: {{url: \"{}\"}}",
                http_receiver().await
            ),
            "",
        ),
        "kafka" => {
            let bootstrap = std::env::var("BENCH_KAFKA").unwrap_or_else(|_| script_up("kafka"));
            kafka_topic(&bootstrap, &unique).await;
            manifests(
                &format!("  type: kafka\n  kafka: {{bootstrapServers: \"{bootstrap}\", topic: {unique}}}"),
                "",
            )
        }
        "sqs" => {
            let endpoint = std::env::var("BENCH_MOTO").unwrap_or_else(|_| script_up("moto"));
            let queue = sqs_queue(&endpoint, &unique).await;
            manifests(
                &format!(
                    "  type: sqs\n  credentialsRef: {{name: aws}}\n  sqs: {{queueUrl: \"{queue}\", region: us-east-1, endpointUrl: \"{endpoint}\"}}"
                ),
                "---\napiVersion: v1\nkind: Secret\nmetadata: {name: aws, namespace: bench}\nstringData: {accessKeyId: bench, secretAccessKey: bench}\n",
            )
        }
        other => panic!("unknown destination type {other} (use http, kafka or sqs)"),
    }
}

/// Sends `events` webhooks with `concurrency` senders; returns the seconds it took.
async fn send(url: &str, events: u64, concurrency: u64) -> f64 {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    break;
                }
                let body = format!(
                    r#"{{"type":"order.created","n":{n},"data":{{"id":"ord_{n}","amount":4999}}}}"#
                );
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                assert!(
                    sent.is_ok_and(|r| r.status().is_success()),
                    "a webhook was refused"
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    started.elapsed().as_secs_f64()
}

async fn run(kind: &str, round: u64, events: u64, concurrency: u64) {
    let gateway = start_gateway(&destination(kind, round).await).await;
    let client = reqwest::Client::new();
    let pid = gateway.child.id();
    let (cpu_before, machine_before) = (cpu_seconds(pid), machine_seconds());
    let started = Instant::now();
    let ingest = send(
        &format!("{}/v1/ingest/bench/in", gateway.base),
        events,
        concurrency,
    )
    .await;
    let deadline = started + Duration::from_secs(env_or("BENCH_DEADLINE", 300));
    while delivered(&client, &gateway.base).await < events {
        if Instant::now() >= deadline {
            let failed = client
                .get(format!(
                    "{}/v1/delivery-attempts?status=failed&limit=5",
                    gateway.base
                ))
                .header("x-api-key", format!("hs_test_{}", "0".repeat(64)))
                .send()
                .await
                .map(|r| r.text());
            let failed = match failed {
                Ok(text) => text.await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            let done = delivered(&client, &gateway.base).await;
            panic!("{kind}: {done} of {events} delivered in time; failed attempts: {failed}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let machine = machine_seconds() - machine_before;
    println!(
        "{kind:>6}: {events} events, ingest {:.0}/s, delivered {:.0}/s, gateway {:.3} CPU s per 1,000 deliveries, machine {:.2} cores busy",
        events as f64 / ingest,
        events as f64 / seconds,
        cpu * 1000.0 / events as f64,
        machine / seconds,
    );
}

#[tokio::main]
async fn main() {
    let kinds = std::env::var("BENCH_DESTINATIONS").unwrap_or_else(|_| "http,kafka,sqs".into());
    let (events, concurrency) = (
        env_or("BENCH_EVENTS", 20_000),
        env_or("BENCH_CONCURRENCY", 64),
    );
    for round in 0..env_or("BENCH_ROUNDS", 1) {
        for kind in kinds.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            run(kind, round, events, concurrency).await;
        }
    }
}
