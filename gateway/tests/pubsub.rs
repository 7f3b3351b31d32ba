//! The `pubsub` destination type against Google's own Pub/Sub server (pstest, from
//! `scripts/pubsub-up`, or the server at `HOOKSTREAM_TEST_PUBSUB`): messages are read back
//! with an independent Pub/Sub client, an outage of a private server loses nothing, a missing
//! topic dead-letters at once, and a service account key never shows.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{single_route, Gateway, API_KEY};
use gcloud_gax::conn::Environment;
use gcloud_pubsub::client::{Client, ClientConfig};
use gcloud_pubsub::subscriber::ReceivedMessage;
use gcloud_pubsub::subscription::{Subscription, SubscriptionConfig};
use serde_json::Value;

const PROJECT: &str = "hookstream-test";
const RETRY: &str = "{maxRetries: 20, backoff: fixed, intervals: [1s]}";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// The shared server's `host:port`: `HOOKSTREAM_TEST_PUBSUB`, else `scripts/pubsub-up`'s
/// last line (run once per test binary).
fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(address) = std::env::var("HOOKSTREAM_TEST_PUBSUB") {
            if !address.is_empty() {
                return address;
            }
        }
        let out = Command::new(scripts().join("pubsub-up"))
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "scripts/pubsub-up failed");
        let stdout = String::from_utf8(out.stdout).unwrap();
        stdout.lines().last().unwrap().trim().to_owned()
    })
}

/// A unique name for this test's topic or subscription.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// An independent Pub/Sub client of the server at `address`.
async fn client(address: &str) -> Client {
    let config = ClientConfig {
        project_id: Some(PROJECT.to_owned()),
        environment: Environment::Emulator(address.to_owned()),
        ..ClientConfig::default()
    };
    Client::new(config).await.unwrap()
}

/// A new topic and a subscription to it with message ordering.
async fn topic_with_subscription(client: &Client, topic: &str) -> Subscription {
    let t = client.topic(topic);
    t.create(None, None).await.unwrap();
    let subscription = client.subscription(&format!("{topic}-sub"));
    let config = SubscriptionConfig {
        enable_message_ordering: true,
        ..SubscriptionConfig::default()
    };
    subscription
        .create(t.fully_qualified_name(), config, None)
        .await
        .unwrap();
    subscription
}

/// Pulls and acknowledges until `count` messages came, within `within`.
async fn pull(subscription: &Subscription, count: usize, within: Duration) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages within {within:?}",
            got.len()
        );
        for m in subscription.pull(10, None).await.unwrap() {
            m.ack().await.unwrap();
            got.push(m);
        }
        if got.len() < count {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    got
}

fn pubsub_spec(topic: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "  type: pubsub\n  pubsub: {{projectId: {PROJECT}, topicId: {topic}, endpoint: \"{endpoint}\", timeoutSeconds: 3{extra}}}\n  retry: {RETRY}"
    )
}

async fn ingest(gw: &Gateway, body: &str) -> String {
    let r = gw.ingest("t", "in", body, &[]).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn attribute<'a>(m: &'a ReceivedMessage, name: &str) -> &'a str {
    m.message
        .attributes
        .get(name)
        .map(String::as_str)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_the_payload_attributes_and_ordering_key_and_their_message_id() {
    let admin = client(server()).await;
    let topic = unique("orders");
    let subscription = topic_with_subscription(&admin, &topic).await;
    let spec = pubsub_spec(&topic, server(), ", orderingKey: customer");
    let gw = Gateway::start(&single_route(&spec)).await;

    let bodies: Vec<String> = (0..3)
        .map(|n| format!(r#"{{"customer":"c-7","n":{n}}}"#))
        .collect();
    let mut ids = Vec::new();
    for body in &bodies {
        let id = ingest(&gw, body).await;
        gw.wait_event_status(&id, "delivered", Duration::from_secs(15))
            .await;
        ids.push(id);
    }

    let got = pull(&subscription, 3, Duration::from_secs(15)).await;
    for (i, id) in ids.iter().enumerate() {
        let m = got
            .iter()
            .find(|m| attribute(m, "event_id") == id)
            .unwrap_or_else(|| panic!("no message for {id}"));
        assert_eq!(String::from_utf8_lossy(&m.message.data), bodies[i]);
        assert_eq!(attribute(m, "source_id"), "t/in");
        assert_eq!(m.message.ordering_key, "c-7");

        let (_, event) = gw.get(&format!("/v1/events/{id}")).await;
        let attempt_id = event["delivery_attempts"][0]["id"].as_str().unwrap();
        let (code, attempt) = gw.get(&format!("/v1/delivery-attempts/{attempt_id}")).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(attempt["provider_result"]["type"], "pubsub", "{attempt}");
        assert_eq!(
            attempt["provider_result"]["message_id"], m.message.message_id,
            "the attempt records the id the server assigned: {attempt}"
        );
    }
    // With one ordering key, a subscription with message ordering gets them in order.
    let order: Vec<&str> = got.iter().map(|m| attribute(m, "event_id")).collect();
    assert_eq!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A pstest process of this test's own, on `port`, with `topic` and its subscription
/// `{topic}-sub` in place from the moment it answers.
fn start_private_server(port: u16, topic: &str) -> Child {
    server(); // pubsub-up builds the binary.
    let cache = std::env::var("HOOKSTREAM_PUBSUB_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/hookstream-pubsub",
            std::env::var("HOME").unwrap()
        )
    });
    let binary = Path::new(&cache).join("pstest-server");
    if !binary.exists() {
        let status = Command::new(scripts().join("pubsub-up")).status().unwrap();
        assert!(status.success());
    }
    let topic_name = format!("projects/{PROJECT}/topics/{topic}");
    let mut child = Command::new(binary)
        .arg("-port")
        .arg(port.to_string())
        .arg("-topic")
        .arg(&topic_name)
        .arg("-subscription")
        .arg(format!(
            "projects/{PROJECT}/subscriptions/{topic}-sub={topic_name}"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&port.to_string()), "pstest printed {line:?}");
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_the_server_is_retried_and_loses_nothing() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let topic = unique("outage");
    let mut private = start_private_server(port, &topic);
    let gw = Gateway::start(&single_route(&pubsub_spec(&topic, &address, ""))).await;
    let first = ingest(&gw, r#"{"n":0}"#).await;
    gw.wait_event_status(&first, "delivered", Duration::from_secs(15))
        .await;

    private.kill().unwrap();
    private.wait().unwrap();
    let bodies: Vec<String> = (1..=3).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(ingest(&gw, body).await);
    }
    // Every event fails at least once while the server is down.
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        loop {
            let (_, event) = gw.get(&format!("/v1/events/{id}")).await;
            let failed = event["delivery_attempts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["status"] == "failed"));
            if failed {
                assert_ne!(event["status"], "failed", "not dead-lettered: {event}");
                break;
            }
            assert!(Instant::now() < deadline, "no failed attempt: {event}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // pstest keeps nothing: the restarted server has the topic and subscription anew.
    let mut private = start_private_server(port, &topic);
    for id in &ids {
        gw.wait_event_status(id, "delivered", Duration::from_secs(30))
            .await;
    }
    let admin = client(&address).await;
    let subscription = admin.subscription(&format!("{topic}-sub"));
    let got = pull(&subscription, 3, Duration::from_secs(15)).await;
    for (id, body) in ids.iter().zip(&bodies) {
        let m = got
            .iter()
            .find(|m| attribute(m, "event_id") == id)
            .unwrap_or_else(|| panic!("no message for {id}"));
        assert_eq!(String::from_utf8_lossy(&m.message.data), *body);
    }
    let (_, event) = gw.get(&format!("/v1/events/{}", ids[0])).await;
    let error = event["delivery_attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("UNAVAILABLE"), "{event}");
    private.kill().unwrap();
    private.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_dead_letters_at_once_with_the_servers_message() {
    let topic = unique("missing");
    let gw = Gateway::start(&single_route(&pubsub_spec(&topic, server(), ""))).await;
    let id = ingest(&gw, r#"{"n":1}"#).await;
    let event = gw
        .wait_event_status(&id, "failed", Duration::from_secs(15))
        .await;
    let attempts = event["delivery_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "no retries: {event}");
    assert_eq!(attempts[0]["is_dlq"], 1, "{event}");
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(error.contains("NOT_FOUND"), "{event}");
    assert!(error.to_ascii_lowercase().contains("topic"), "{event}");
}

/// A service account key that parses, with markers that must never show.
const KEY_MARKER: &str = "MARKER-pk-5c0ffee";
const EMAIL_MARKER: &str = "marker-sa-91b2";

fn key_json() -> String {
    format!(
        r#"{{"type": "service_account", "project_id": "{PROJECT}", "private_key_id": "k1", "private_key": "-----BEGIN PRIVATE KEY-----\n{KEY_MARKER}\n-----END PRIVATE KEY-----\n", "client_email": "{EMAIL_MARKER}@{PROJECT}.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"}}"#
    )
}

fn secret_yaml(value: &str) -> String {
    let indented: String = value.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: gcp, namespace: t}}\nstringData:\n  serviceAccountJson: |\n{indented}---\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_that_is_not_a_service_account_key_is_refused_without_its_text() {
    const NOT_A_KEY: &str = "MARKER-not-a-key-0d15ea5e";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!(
        "{}\n  credentialsRef: {{name: gcp}}",
        pubsub_spec("t", "127.0.0.1:1", "")
    );
    std::fs::write(
        dir.join("main.yaml"),
        format!("{}{}", secret_yaml(NOT_A_KEY), single_route(&spec)),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookstream-gateway"))
        .arg("--manifests")
        .arg(&dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database")
        .arg(format!("sqlite://{}", tmp.path().join("h.db").display()))
        .env("HOOKSTREAM_API_KEYS", API_KEY)
        .env_remove("HOOKSTREAM_MANIFESTS")
        .env_remove("HOOKSTREAM_DATABASE_URL")
        .env_remove("HOOKSTREAM_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.credentialsRef") && stderr.contains("not a service account key"),
        "{stderr}"
    );
    assert!(!stderr.contains(NOT_A_KEY), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_key_never_shows_in_the_log_or_api_answers() {
    let admin = client(server()).await;
    let topic = unique("keyed");
    let subscription = topic_with_subscription(&admin, &topic).await;
    // The emulator endpoint takes no credentials; the second Destination, Google's
    // endpoint, must make a token from the key, which cannot sign.
    let emulator = format!(
        "{}\n  credentialsRef: {{name: gcp}}",
        pubsub_spec(&topic, server(), "")
    );
    let google = format!(
        "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: google, namespace: t}}\nspec:\n  type: pubsub\n  pubsub: {{projectId: {PROJECT}, topicId: {topic}}}\n  credentialsRef: {{name: gcp}}\n  retry: {RETRY}\n---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c2, namespace: t}}\nspec: {{source: in, destination: google}}\n"
    );
    let manifests = format!(
        "{}{}\n---\n{google}",
        secret_yaml(&key_json()),
        single_route(&emulator)
    );
    let gw = Gateway::start(&manifests).await;
    let id = ingest(&gw, r#"{"n":1}"#).await;
    pull(&subscription, 1, Duration::from_secs(15)).await;
    let event = gw
        .wait_event_status(&id, "failed", Duration::from_secs(15))
        .await;

    let attempts = event["delivery_attempts"].as_array().unwrap();
    let refused = attempts
        .iter()
        .find(|a| a["destination_name"] == "google")
        .unwrap();
    assert_eq!(
        refused["is_dlq"], 1,
        "an unusable key is permanent: {event}"
    );
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("serviceAccountJson"), "{event}");

    let mut answers = vec![event.to_string()];
    for a in attempts {
        let (_, detail) = gw
            .get(&format!(
                "/v1/delivery-attempts/{}",
                a["id"].as_str().unwrap()
            ))
            .await;
        answers.push(detail.to_string());
    }
    answers.push(gw.get("/v1/delivery-attempts").await.1.to_string());
    answers.push(gw.get("/v1/events").await.1.to_string());
    answers.push(gw.get("/v1/destinations/t/out/circuit").await.1.to_string());
    answers.push(gw.log());
    for text in answers {
        for marker in [KEY_MARKER, EMAIL_MARKER, "BEGIN PRIVATE KEY"] {
            assert!(!text.contains(marker), "{marker} shows in {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_resolves_to_a_denied_address_is_refused_permanently() {
    let port = server().rsplit_once(':').unwrap().1;
    let spec = pubsub_spec("t", &format!("localhost:{port}"), "");
    let gw = Gateway::start_with(
        &single_route(&spec),
        &["--egress-deny", "127.0.0.0/8,::1/128"],
    )
    .await;
    let id = ingest(&gw, r#"{"n":1}"#).await;
    let event = gw
        .wait_event_status(&id, "failed", Duration::from_secs(15))
        .await;
    let attempts = event["delivery_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "no retries: {event}");
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(error.contains("denied by the egress policy"), "{event}");
}
