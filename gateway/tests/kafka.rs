//! The `kafka` destination type against a real Apache Kafka broker: records are read back
//! with an independent consumer; a broker outage loses nothing and holds back no other
//! destination; a missing topic dead-letters at once; SASL credentials come from a Secret
//! and never show.
//!
//! The broker is `HOOKSTREAM_TEST_KAFKA` (`host:port` of a PLAINTEXT listener; its
//! SASL_PLAINTEXT listener is `HOOKSTREAM_TEST_KAFKA_SASL`, default the next port but one,
//! with user `hookstream` / `hookstream-secret`), else the one `scripts/kafka-up` starts,
//! once per test binary. The outage test runs a private broker of its own.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Gateway, Receiver};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// SASL user and password of the brokers `scripts/kafka-up` starts.
const SASL_USER: &str = "hookstream";
const SASL_PASSWORD: &str = "hookstream-secret";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Runs `scripts/kafka-up` (or `kafka-down`, with `args`) with `env`; returns the last line
/// of its output.
fn script(name: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let output = Command::new(scripts().join(name))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "{name} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The shared broker's PLAINTEXT address.
fn kafka() -> &'static str {
    static ADDRESS: OnceLock<String> = OnceLock::new();
    ADDRESS.get_or_init(|| match std::env::var("HOOKSTREAM_TEST_KAFKA") {
        Ok(address) if !address.is_empty() => address,
        _ => script("kafka-up", &[], &[]),
    })
}

/// The shared broker's SASL_PLAINTEXT address.
fn kafka_sasl() -> String {
    if let Ok(address) = std::env::var("HOOKSTREAM_TEST_KAFKA_SASL") {
        if !address.is_empty() {
            return address;
        }
    }
    let (host, port) = kafka().rsplit_once(':').unwrap();
    format!("{host}:{}", port.parse::<u16>().unwrap() + 2)
}

/// The shared broker's SSL address and the PEM of the CA that signed its certificate
/// (`scripts/kafka-up` makes both; the CA is not among the system's roots).
fn kafka_tls() -> (String, String) {
    let (host, port) = kafka().rsplit_once(':').unwrap();
    let state = std::env::var("HOOKSTREAM_KAFKA_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| scripts().join(".kafka"));
    let ca = std::fs::read_to_string(state.join("tls/ca.pem")).unwrap();
    (format!("{host}:{}", port.parse::<u16>().unwrap() + 3), ca)
}

/// A topic name no other test uses.
fn unique_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Creates `topic` with `partitions` partitions on `bootstrap`.
async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin.create_topics([&new], &options).await.unwrap();
    for r in results {
        r.unwrap();
    }
}

/// A record read back from the broker.
#[derive(Debug, Clone)]
struct Record {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: String,
    headers: HashMap<String, String>,
}

/// Reads `topic`'s records (partitions `0..partitions`, from the start) with a consumer of
/// its own until there are `n` or `within` has passed.
async fn read_back(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    n: usize,
    within: Duration,
) -> Vec<Record> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("reader-{}", unique_topic("g")))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition_offset(&topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&list).unwrap();
        let deadline = Instant::now() + within;
        let mut records = Vec::new();
        while records.len() < n && Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = message.unwrap();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                headers,
            });
        }
        records
    })
    .await
    .unwrap()
}

async fn ingest_id(gw: &Gateway, body: &str) -> String {
    let r = gw.ingest("t", "in", body, &[]).await;
    assert_eq!(r.status(), 200, "ingest refused");
    let v: Value = r.json().await.unwrap();
    v["event_id"].as_str().unwrap().to_owned()
}

/// The event's attempts (summaries) for the Destination `t/<destination>`.
async fn attempts(gw: &Gateway, id: &str, destination: &str) -> Vec<Value> {
    let (code, event) = gw.get(&format!("/v1/events/{id}")).await;
    assert_eq!(code, StatusCode::OK, "{event}");
    event["delivery_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["destination_id"] == format!("t/{destination}"))
        .cloned()
        .collect()
}

/// One attempt in full.
async fn attempt(gw: &Gateway, summary: &Value) -> Value {
    let id = summary["id"].as_str().unwrap();
    let (code, detail) = gw.get(&format!("/v1/delivery-attempts/{id}")).await;
    assert_eq!(code, StatusCode::OK, "{detail}");
    detail
}

/// A kafka Destination spec (YAML under `spec:`), `extra` lines indented by four spaces
/// going under `kafka:`.
fn kafka_spec(bootstrap: &str, topic: &str, extra: &str, retry: &str) -> String {
    format!(
        "  type: kafka\n  kafka:\n    bootstrapServers: \"{bootstrap}\"\n    topic: {topic}\n{extra}  retry: {retry}\n  circuitBreaker: {{failureThreshold: 1000}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_with_value_key_headers_and_offsets() {
    let bootstrap = kafka();
    let topic = unique_topic("records");
    create_topic(bootstrap, &topic, 3).await;
    let spec = kafka_spec(
        bootstrap,
        &topic,
        "    key: customer\n    timeoutSeconds: 10\n",
        "{maxRetries: 3, backoff: fixed, intervals: [1s]}",
    );
    let gw = Gateway::start(&common::single_route(&spec)).await;

    let bodies = [
        r#"{"customer":"c-1","n":1}"#,
        r#"{"customer":"c-2","n":2}"#,
        r#"{"customer":"c-3","n":3}"#,
        r#"{"n":4}"#,
    ];
    let mut ids = Vec::new();
    for body in bodies {
        ids.push(ingest_id(&gw, body).await);
    }
    for id in &ids {
        gw.wait_event_status(id, "delivered", Duration::from_secs(30))
            .await;
    }

    let records = read_back(bootstrap, &topic, 3, bodies.len(), Duration::from_secs(20)).await;
    assert_eq!(records.len(), bodies.len(), "{records:#?}");
    for (id, body) in ids.iter().zip(bodies) {
        let record = records
            .iter()
            .find(|r| r.headers.get("hookstream-event-id") == Some(id))
            .unwrap_or_else(|| panic!("no record of event {id}: {records:#?}"));
        assert_eq!(record.value, body, "the value is the payload body");
        let customer = serde_json::from_str::<Value>(body).unwrap()["customer"].clone();
        let expected_key = customer.as_str().map_or(id.clone(), str::to_owned);
        assert_eq!(
            record.key.as_deref(),
            Some(expected_key.as_str()),
            "the key is spec.kafka.key, or the event id when it yields nothing"
        );
        assert_eq!(record.headers["hookstream-source-id"], "t/in");
        assert_eq!(record.headers["hookstream-hops"], "1");

        let tries = attempts(&gw, id, "out").await;
        assert_eq!(tries.len(), 1, "{tries:?}");
        let detail = attempt(&gw, &tries[0]).await;
        assert_eq!(detail["status"], "success", "{detail}");
        let result = &detail["provider_result"];
        assert_eq!(result["type"], "kafka", "{detail}");
        assert_eq!(result["topic"], topic.as_str(), "{detail}");
        assert_eq!(result["partition"], record.partition, "{detail}");
        assert_eq!(result["offset"], record.offset, "{detail}");
        let sent = detail["request_headers"].to_string();
        assert!(
            sent.contains("hookstream-event-id") && sent.contains(id.as_str()),
            "the attempt shows the headers sent: {detail}"
        );
    }
    // Records of one key share a partition: the key is what Kafka partitions by.
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(!partitions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_dead_letters_at_once() {
    let bootstrap = kafka();
    let topic = unique_topic("never-created");
    let spec = kafka_spec(
        bootstrap,
        &topic,
        "    timeoutSeconds: 10\n",
        "{maxRetries: 5, backoff: fixed, intervals: [1s]}",
    );
    let gw = Gateway::start(&common::single_route(&spec)).await;
    let id = ingest_id(&gw, r#"{"lost":true}"#).await;
    let started = Instant::now();
    let event = gw
        .wait_event_status(&id, "failed", Duration::from_secs(20))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "no retries for a missing topic"
    );
    let tries = attempts(&gw, &id, "out").await;
    assert_eq!(
        tries.len(),
        1,
        "dead-lettered at the first attempt: {event}"
    );
    let detail = attempt(&gw, &tries[0]).await;
    assert_eq!(detail["is_dlq"], 1, "{detail}");
    let error = detail["error"].as_str().unwrap_or_default();
    eprintln!("missing topic: {error}");
    assert!(
        error.contains(&topic) && error.contains("does not exist"),
        "the attempt says the topic is missing: {detail}"
    );
    assert!(
        event.to_string().contains("does not exist"),
        "the event shows the provider's message: {event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_record_dead_letters_at_once() {
    let bootstrap = kafka();
    let topic = unique_topic("too-large");
    create_topic(bootstrap, &topic, 1).await;
    let spec = kafka_spec(
        bootstrap,
        &topic,
        "    timeoutSeconds: 10\n",
        "{maxRetries: 5, backoff: fixed, intervals: [1s]}",
    );
    let gw = Gateway::start(&common::single_route(&spec)).await;
    // Over the 1 MB a Kafka record may have by default.
    let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(1_200_000));
    let id = ingest_id(&gw, &body).await;
    gw.wait_event_status(&id, "failed", Duration::from_secs(20))
        .await;
    let tries = attempts(&gw, &id, "out").await;
    assert_eq!(
        tries.len(),
        1,
        "dead-lettered at the first attempt: {tries:?}"
    );
    let detail = attempt(&gw, &tries[0]).await;
    let error = detail["error"].as_str().unwrap_or_default();
    eprintln!("too large: {error}");
    assert!(error.contains("too large"), "{detail}");
    assert_eq!(detail["is_dlq"], 1, "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_credentials_come_from_a_secret_and_never_show() {
    let bootstrap = kafka();
    let sasl = kafka_sasl();
    let topic = unique_topic("sasl");
    create_topic(bootstrap, &topic, 1).await;
    let wrong_password = "wrong-password-5521";
    let retry = "{maxRetries: 3, backoff: fixed, intervals: [1s]}";
    let good = kafka_spec(
        &sasl,
        &topic,
        "    saslMechanism: SCRAM-SHA-256\n    timeoutSeconds: 10\n  credentialsRef: {name: kafka-creds}\n",
        retry,
    );
    let bad = kafka_spec(
        &sasl,
        &topic,
        "    saslMechanism: SCRAM-SHA-256\n    timeoutSeconds: 5\n  credentialsRef: {name: kafka-wrong}\n",
        retry,
    );
    let manifests = format!(
        r#"{}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: wrong, namespace: t}}
spec:
{bad}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c2, namespace: t}}
spec: {{source: in, destination: wrong}}
---
apiVersion: v1
kind: Secret
metadata: {{name: kafka-creds, namespace: t}}
stringData: {{username: {SASL_USER}, password: {SASL_PASSWORD}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: kafka-wrong, namespace: t}}
stringData: {{username: {SASL_USER}, password: {wrong_password}}}
"#,
        common::single_route(&good)
    );
    let gw = Gateway::start(&manifests).await;
    let id = ingest_id(&gw, r#"{"secure":true}"#).await;

    let records = read_back(bootstrap, &topic, 1, 1, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 1, "the right credentials deliver");
    assert_eq!(records[0].headers["hookstream-event-id"], id);

    // The wrong password fails for good, with the broker's reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    let wrong = loop {
        let tries = attempts(&gw, &id, "wrong").await;
        if tries.iter().any(|a| a["is_dlq"] == 1) {
            break tries;
        }
        assert!(Instant::now() < deadline, "no dead letter: {tries:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        wrong.len(),
        1,
        "authentication failure is permanent: {wrong:?}"
    );
    let detail = attempt(&gw, &wrong[0]).await;
    let error = detail["error"].as_str().unwrap_or_default().to_lowercase();
    eprintln!("wrong password: {error}");
    assert!(error.contains("authentication"), "{detail}");

    let (_, event) = gw.get(&format!("/v1/events/{id}")).await;
    let (_, list) = gw.get("/v1/delivery-attempts").await;
    let (_, destinations) = gw.get("/v1/destinations").await;
    let shown = format!("{event}{list}{detail}{destinations}{}", gw.log());
    for secret in [SASL_PASSWORD, wrong_password] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

/// Start times and durations (ms) of a Destination's attempts, from the API.
async fn attempt_spans(gw: &Gateway, ids: &[String], destination: &str) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    for id in ids {
        for a in attempts(gw, id, destination).await {
            let at = chrono::DateTime::parse_from_rfc3339(a["attempted_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            spans.push((at, a["latency_ms"].as_i64().unwrap()));
        }
    }
    spans.sort();
    spans
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_loses_nothing_and_holds_back_no_other_destination() {
    // A private broker, so the shared one stays up for the other tests.
    let state = tempfile::tempdir().unwrap();
    let env = [
        (
            "HOOKSTREAM_KAFKA_STATE",
            state.path().join("kafka").display().to_string(),
        ),
        ("HOOKSTREAM_KAFKA_PORT", "19192".to_owned()),
    ];
    struct Down<'a>(&'a [(&'a str, String)]);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            script("kafka-down", &[], self.0);
        }
    }
    let bootstrap = script("kafka-up", &[], &env);
    let _down = Down(&env);
    let topic = unique_topic("outage");
    create_topic(&bootstrap, &topic, 1).await;
    script("kafka-down", &["--keep"], &env);

    let receiver = Receiver::start().await;
    let kafka = kafka_spec(
        &bootstrap,
        &topic,
        "    timeoutSeconds: 2\n  concurrency: 1\n",
        "{maxRetries: 20, backoff: fixed, intervals: [1s]}",
    );
    let manifests = format!(
        r#"{}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: web, namespace: t}}
spec:
  type: http
  http: {{url: "{}/hook", timeoutSeconds: 5}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c2, namespace: t}}
spec: {{source: in, destination: web}}
"#,
        common::single_route(&kafka),
        receiver.url
    );
    let gw = Gateway::start(&manifests).await;

    let bodies: Vec<String> = (0..4).map(|i| format!(r#"{{"n":{i}}}"#)).collect();
    let started = Instant::now();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(ingest_id(&gw, body).await);
    }
    // The HTTP destination gets every event at once, while Kafka is down.
    let got = receiver
        .wait_for(bodies.len(), Duration::from_secs(5))
        .await;
    assert_eq!(got.len(), bodies.len());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the HTTP deliveries waited for Kafka: {:?}",
        started.elapsed()
    );

    // Kafka attempts fail and are retried, one at a time (concurrency: 1).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let spans = attempt_spans(&gw, &ids, "out").await;
    assert!(spans.len() >= 2, "attempts were made and failed: {spans:?}");
    for pair in spans.windows(2) {
        let ((a, a_len), (b, _)) = (pair[0], pair[1]);
        assert!(
            b + 50 >= a + a_len,
            "two attempts overlapped despite concurrency 1: {spans:?}"
        );
    }
    for id in &ids {
        let (_, event) = gw.get(&format!("/v1/events/{id}")).await;
        assert_ne!(event["status"], "delivered", "{event}");
        for a in attempts(&gw, id, "out").await {
            assert_eq!(a["status"], "failed", "{a}");
            assert_eq!(a["is_dlq"], 0, "an outage is not permanent: {a}");
        }
    }

    // The broker comes back: everything arrives, once.
    assert_eq!(script("kafka-up", &[], &env), bootstrap);
    for id in &ids {
        gw.wait_event_status(id, "delivered", Duration::from_secs(60))
            .await;
    }
    let records = read_back(
        &bootstrap,
        &topic,
        1,
        bodies.len() + 1,
        Duration::from_secs(5),
    )
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &records {
        *seen
            .entry(r.headers["hookstream-event-id"].clone())
            .or_default() += 1;
    }
    for (id, body) in ids.iter().zip(&bodies) {
        assert!(seen.contains_key(id), "event {id} lost: {records:#?}");
        let record = records
            .iter()
            .find(|r| &r.headers["hookstream-event-id"] == id)
            .unwrap();
        assert_eq!(&record.value, body);
    }
    assert_eq!(
        records.len(),
        bodies.len(),
        "each event exactly once: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_policy_refuses_the_brokers() {
    let bootstrap = kafka();
    let topic = unique_topic("egress");
    let spec = kafka_spec(
        bootstrap,
        &topic,
        "    timeoutSeconds: 5\n",
        "{maxRetries: 5, backoff: fixed, intervals: [1s]}",
    );
    let gw = Gateway::start_with(
        &common::single_route(&spec),
        &["--egress-deny", "127.0.0.0/8,::1/128"],
    )
    .await;
    let id = ingest_id(&gw, r#"{"n":1}"#).await;
    gw.wait_event_status(&id, "failed", Duration::from_secs(10))
        .await;
    let tries = attempts(&gw, &id, "out").await;
    assert_eq!(tries.len(), 1, "a denied address is permanent: {tries:?}");
    let error = tries[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("denied by the egress policy") && error.contains("127.0.0.0/8"),
        "{error}"
    );
}

/// TLS with the certificate authority from a Secret delivers; without it (the system's roots
/// do not know the broker's CA) every attempt fails on the certificate. SASL PLAIN with the
/// Secret's username and password delivers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_from_a_secret_and_sasl_plain_deliver() {
    use base64::Engine as _;
    let bootstrap = kafka();
    let (tls, ca) = kafka_tls();
    let topic = unique_topic("tls");
    create_topic(bootstrap, &topic, 1).await;
    let retry = "{maxRetries: 1, backoff: fixed, intervals: [1s]}";
    let trusted = kafka_spec(
        &tls,
        &topic,
        "    tls: {caSecretRef: {name: kafka-tls, key: ca.pem}}\n    timeoutSeconds: 10\n",
        retry,
    );
    let untrusted = kafka_spec(&tls, &topic, "    tls: {}\n    timeoutSeconds: 5\n", retry);
    let plain = kafka_spec(
        &kafka_sasl(),
        &topic,
        "    saslMechanism: PLAIN\n    timeoutSeconds: 10\n  credentialsRef: {name: kafka-creds}\n",
        retry,
    );
    let mut manifests = common::single_route(&trusted);
    for (name, spec) in [("untrusted", &untrusted), ("plain", &plain)] {
        manifests.push_str(&format!(
            "---\napiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: {name}, namespace: t}}\nspec:\n{spec}---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: to-{name}, namespace: t}}\nspec: {{source: in, destination: {name}}}\n"
        ));
    }
    manifests.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: kafka-tls, namespace: t}}\ndata: {{ca.pem: {}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: kafka-creds, namespace: t}}\nstringData: {{username: {SASL_USER}, password: {SASL_PASSWORD}}}\n",
        base64::engine::general_purpose::STANDARD.encode(&ca)
    ));
    let gw = Gateway::start(&manifests).await;
    let id = ingest_id(&gw, r#"{"over":"tls"}"#).await;

    // Two records: one over TLS, one over SASL PLAIN.
    let records = read_back(bootstrap, &topic, 1, 2, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records
        .iter()
        .all(|r| r.headers["hookstream-event-id"] == id));
    for destination in ["out", "plain"] {
        let tries = attempts(&gw, &id, destination).await;
        assert_eq!(tries.len(), 1, "{destination}: {tries:?}");
        assert_eq!(tries[0]["status"], "success", "{destination}: {tries:?}");
    }

    // Without the CA the handshake fails, and says why.
    let deadline = Instant::now() + Duration::from_secs(40);
    let failed = loop {
        let tries = attempts(&gw, &id, "untrusted").await;
        if tries.iter().any(|a| a["is_dlq"] == 1) {
            break tries;
        }
        assert!(Instant::now() < deadline, "no dead letter: {tries:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(failed.iter().all(|a| a["status"] == "failed"), "{failed:?}");
    let detail = attempt(&gw, failed.last().unwrap()).await;
    let error = detail["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("ssl"),
        "{detail}"
    );
    let records = read_back(bootstrap, &topic, 1, 3, Duration::from_secs(2)).await;
    assert_eq!(
        records.len(),
        2,
        "nothing arrived without the CA: {records:?}"
    );
}
