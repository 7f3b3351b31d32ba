//! The `rabbitmq` destination type against a real RabbitMQ node: deliveries are read back
//! with an independent AMQP client (lapin in this process), with their properties, headers
//! and routing keys, in both modes (`amqp` and `management`); an unroutable message and a
//! missing exchange are dead-lettered at once; credentials from a Secret are really checked
//! by the broker and never shown; a broker outage loses nothing.
//!
//! The node comes from `scripts/rabbitmq-up` (once per test binary) unless
//! `HOOKSTREAM_TEST_RABBITMQ` holds its AMQP URL (then `HOOKSTREAM_TEST_RABBITMQ_MANAGEMENT`
//! may hold its management URL, default `http://guest:guest@127.0.0.1:35672`). The outage test
//! runs a second, private node of its own (`hookstream-outage`, AMQP port 25682), so stopping
//! it disturbs no other test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Gateway;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

/// The shared test node.
struct Broker {
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    amqp: String,
    /// `http://guest:guest@127.0.0.1:PORT`.
    management: String,
}

impl Broker {
    /// `host:port` of the AMQP listener.
    fn amqp_address(&self) -> String {
        let url = url::Url::parse(&self.amqp).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672))
    }

    /// `host:port` of the management API.
    fn management_address(&self) -> String {
        let url = url::Url::parse(&self.management).unwrap();
        format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
    }
}

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Runs a broker script with `env`; returns the last line of its stdout.
fn run_script(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(scripts_dir().join(name))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    assert!(out.status.success(), "scripts/{name} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let amqp = std::env::var("HOOKSTREAM_TEST_RABBITMQ")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| run_script("rabbitmq-up", &[], &[]));
        let management = std::env::var("HOOKSTREAM_TEST_RABBITMQ_MANAGEMENT")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "http://guest:guest@127.0.0.1:35672".to_owned());
        Broker { amqp, management }
    })
}

/// A name no other test uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

async fn connect(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Declares a direct exchange and, for each `(queue, binding key)`, a queue bound to it.
async fn topology(channel: &Channel, exchange: &str, bindings: &[(&str, &str)]) {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: false,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for (queue, key) in bindings {
        declare_queue(channel, queue, false).await;
        channel
            .queue_bind(
                (*queue).into(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
}

async fn declare_queue(channel: &Channel, queue: &str, durable: bool) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// A message read back from a queue.
#[derive(Debug)]
struct Got {
    body: String,
    routing_key: String,
    exchange: String,
    content_type: Option<String>,
    delivery_mode: Option<u8>,
    message_id: Option<String>,
    headers: Vec<(String, String)>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Takes `n` messages from `queue` (acknowledged as they are taken), waiting up to `within`.
async fn take(channel: &Channel, queue: &str, n: usize, within: Duration) -> Vec<Got> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        let Some(message) = message else {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages in {queue}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let delivery = &message.delivery;
        let properties = &delivery.properties;
        let headers = properties
            .headers()
            .as_ref()
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .map(|(k, v)| {
                        let text = match v {
                            AMQPValue::LongString(s) => s.to_string(),
                            AMQPValue::ShortString(s) => s.to_string(),
                            other => format!("{other:?}"),
                        };
                        (k.to_string(), text)
                    })
                    .collect()
            })
            .unwrap_or_default();
        got.push(Got {
            body: String::from_utf8_lossy(&delivery.data).into_owned(),
            routing_key: delivery.routing_key.to_string(),
            exchange: delivery.exchange.to_string(),
            content_type: properties.content_type().as_ref().map(|s| s.to_string()),
            delivery_mode: *properties.delivery_mode(),
            message_id: properties.message_id().as_ref().map(|s| s.to_string()),
            headers,
        });
    }
    got
}

/// The number of messages waiting in `queue`.
async fn depth(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// Creates a broker user with `password`, every permission on vhost `/` and the
/// `management` tag (which the management API requires), through the management API as
/// guest.
async fn create_user(management: &str, user: &str, password: &str) {
    let base = url::Url::parse(management).unwrap();
    let origin = format!(
        "http://{}:{}",
        base.host_str().unwrap(),
        base.port().unwrap()
    );
    let http = reqwest::Client::new();
    let put = |path: String, body: Value| {
        http.put(format!("{origin}{path}"))
            .basic_auth("guest", Some("guest"))
            .json(&body)
            .send()
    };
    let r = put(
        format!("/api/users/{user}"),
        json!({"password": password, "tags": "management"}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "create user: {}", r.status());
    let r = put(
        format!("/api/permissions/%2f/{user}"),
        json!({"configure": ".*", "write": ".*", "read": ".*"}),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "set permissions: {}", r.status());
}

async fn ingest(gw: &Gateway, source: &str, body: &str) -> String {
    let r = gw.ingest("t", source, body, &[]).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Source `in-NAME`, Destination `NAME` with `spec` (lines indented by two spaces), and the
/// Connection between them.
fn route(name: &str, spec: &str) -> String {
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in-{name}, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: {name}, namespace: t}}
spec:
{spec}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c-{name}, namespace: t}}
spec: {{source: in-{name}, destination: {name}}}
"#
    )
}

fn secret(name: &str, username: &str, password: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: t}}
stringData: {{username: "{username}", password: "{password}"}}
"#
    )
}

const RETRY: &str = "  retry: {maxRetries: 20, backoff: fixed, intervals: [1s]}\n  circuitBreaker: {failureThreshold: 1000}";

/// The attempt `attempt` (from an event's `delivery_attempts`) in full.
async fn attempt_detail(gw: &Gateway, attempt: &Value) -> Value {
    let id = attempt["id"].as_str().unwrap();
    let (code, detail) = gw.get(&format!("/v1/delivery-attempts/{id}")).await;
    assert_eq!(code, 200, "{detail}");
    detail
}

/// An event dead-lettered at its first attempt, whose error contains every one of `words`.
async fn assert_dead_lettered_at_once(gw: &Gateway, id: &str, words: &[&str]) -> Value {
    let event = gw
        .wait_event_status(id, "failed", Duration::from_secs(20))
        .await;
    let attempts = event["delivery_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "dead-lettered at once: {event}");
    assert_eq!(attempts[0]["is_dlq"], 1, "{event}");
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    for word in words {
        assert!(error.contains(word), "{word:?} not in {error:?}");
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_deliveries_arrive_with_properties_headers_and_routing_key_under_secret_credentials() {
    let broker = broker();
    let (_conn, channel) = connect(&broker.amqp).await;
    let exchange = unique("hs-orders");
    let created = unique("hs-created");
    let other = unique("hs-other");
    topology(
        &channel,
        &exchange,
        &[(&created, "order.created"), (&other, "order.other")],
    )
    .await;
    let user = unique("hs-user");
    let password = "pw-RABBIT-SECRET-4711";
    create_user(&broker.management, &user, password).await;

    let spec = format!(
        "  type: rabbitmq\n  credentialsRef: {{name: creds}}\n  rabbitmq: {{url: \"amqp://{}\", exchange: {exchange}, routingKeyFrom: kind, routingKey: order.other}}\n{RETRY}",
        broker.amqp_address()
    );
    let wrong = format!(
        "  type: rabbitmq\n  credentialsRef: {{name: wrong}}\n  rabbitmq: {{url: \"amqp://{}\", exchange: {exchange}, routingKey: order.other}}\n{RETRY}",
        broker.amqp_address()
    );
    let manifests = format!(
        "{}{}{}{}",
        secret("creds", &user, password),
        secret("wrong", &user, "pw-WRONG-SECRET-0815"),
        route("amqp", &spec),
        route("denied", &wrong)
    );
    let gw = Gateway::start(&manifests).await;

    let keyed_body = r#"{"kind":"order.created","order":"o-1"}"#;
    let keyed = ingest(&gw, "in-amqp", keyed_body).await;
    let plain_body = r#"{"order":"o-2"}"#;
    let plain = ingest(&gw, "in-amqp", plain_body).await;
    for id in [&keyed, &plain] {
        gw.wait_event_status(id, "delivered", Duration::from_secs(20))
            .await;
    }

    let got = take(&channel, &created, 1, Duration::from_secs(5)).await;
    let m = &got[0];
    assert_eq!(m.body, keyed_body);
    assert_eq!(m.routing_key, "order.created");
    assert_eq!(m.exchange, exchange);
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.delivery_mode, Some(2), "persistent");
    assert_eq!(m.message_id.as_deref(), Some(keyed.as_str()));
    assert_eq!(m.header("hookstream-event-id"), Some(keyed.as_str()));
    assert_eq!(m.header("hookstream-source-id"), Some("t/in-amqp"));
    let got = take(&channel, &other, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body, plain_body);
    assert_eq!(
        got[0].routing_key, "order.other",
        "routingKey when the payload has no kind"
    );
    assert_eq!(got[0].message_id.as_deref(), Some(plain.as_str()));

    // The attempt shows what the broker took.
    let (_, event) = gw.get(&format!("/v1/events/{keyed}")).await;
    let detail = attempt_detail(&gw, &event["delivery_attempts"][0]).await;
    assert_eq!(
        detail["provider_result"],
        json!({"type": "rabbitmq", "exchange": exchange, "routing_key": "order.created"}),
        "{detail}"
    );
    let shown = detail["request_headers"].to_string();
    assert!(shown.contains("hookstream-source-id"), "{detail}");

    // A wrong password is refused by the broker: permanent, dead-lettered at once.
    let refused = ingest(&gw, "in-denied", r#"{"n":1}"#).await;
    let event = assert_dead_lettered_at_once(&gw, &refused, &["403", "ACCESS_REFUSED"]).await;
    eprintln!("wrong password: {}", event["delivery_attempts"][0]["error"]);

    // Neither password shows anywhere.
    let (_, attempts) = gw
        .get(&format!("/v1/delivery-attempts?event_id={keyed}"))
        .await;
    let (_, dead) = gw.get("/v1/delivery-attempts?is_dlq=1").await;
    for text in [
        gw.log(),
        event.to_string(),
        detail.to_string(),
        attempts.to_string(),
        dead.to_string(),
    ] {
        assert!(!text.contains("RABBIT-SECRET"), "password leaked: {text}");
        assert!(!text.contains("WRONG-SECRET"), "password leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_and_missing_exchanges_are_dead_lettered_at_once() {
    let broker = broker();
    let (_conn, channel) = connect(&broker.amqp).await;
    let exchange = unique("hs-unbound");
    topology(&channel, &exchange, &[]).await;
    let missing = unique("hs-missing");
    let amqp = broker.amqp_address();
    let unbound_spec = format!(
        "  type: rabbitmq\n  rabbitmq: {{url: \"amqp://{amqp}\", exchange: {exchange}, routingKey: nobody.listens}}\n{RETRY}"
    );
    let missing_spec = format!(
        "  type: rabbitmq\n  rabbitmq: {{url: \"amqp://{amqp}\", exchange: {missing}, routingKey: k}}\n{RETRY}"
    );
    let manifests = format!(
        "{}{}",
        route("unbound", &unbound_spec),
        route("missing", &missing_spec)
    );
    let gw = Gateway::start(&manifests).await;

    let unroutable = ingest(&gw, "in-unbound", r#"{"n":1}"#).await;
    assert_dead_lettered_at_once(
        &gw,
        &unroutable,
        &[
            "no queue is bound for routing key \"nobody.listens\"",
            &exchange,
        ],
    )
    .await;

    let lost = ingest(&gw, "in-missing", r#"{"n":2}"#).await;
    assert_dead_lettered_at_once(&gw, &lost, &["does not exist", "404", &missing]).await;

    // The channel the broker closed is replaced: a later event on the same destination is
    // again judged by the broker, not by a dead channel.
    let again = ingest(&gw, "in-missing", r#"{"n":3}"#).await;
    assert_dead_lettered_at_once(&gw, &again, &["does not exist", "404"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_mode_publishes_through_the_http_api_and_needs_routed_true() {
    let broker = broker();
    let (_conn, channel) = connect(&broker.amqp).await;
    let exchange = unique("hs-mgmt");
    let queue = unique("hs-mgmt-q");
    topology(&channel, &exchange, &[(&queue, "invoices")]).await;
    let user = unique("hs-mgmt-user");
    let password = "pw-MGMT-SECRET-2718";
    create_user(&broker.management, &user, password).await;
    let management = broker.management_address();

    let spec = format!(
        "  type: rabbitmq\n  credentialsRef: {{name: creds}}\n  rabbitmq: {{mode: management, url: \"http://{management}\", exchange: {exchange}, routingKey: invoices}}\n{RETRY}"
    );
    let unbound = format!(
        "  type: rabbitmq\n  credentialsRef: {{name: creds}}\n  rabbitmq: {{mode: management, url: \"http://{management}\", exchange: {exchange}, routingKey: nobody}}\n{RETRY}"
    );
    let missing = format!(
        "  type: rabbitmq\n  credentialsRef: {{name: creds}}\n  rabbitmq: {{mode: management, url: \"http://{management}\", exchange: {}, routingKey: k}}\n{RETRY}",
        unique("hs-absent")
    );
    let wrong = format!(
        "  type: rabbitmq\n  credentialsRef: {{name: wrong}}\n  rabbitmq: {{mode: management, url: \"http://{management}\", exchange: {exchange}, routingKey: invoices}}\n{RETRY}"
    );
    let manifests = format!(
        "{}{}{}{}{}{}",
        secret("creds", &user, password),
        secret("wrong", &user, "pw-WRONG-SECRET-0815"),
        route("mgmt", &spec),
        route("unbound", &unbound),
        route("missing", &missing),
        route("denied", &wrong),
    );
    let gw = Gateway::start(&manifests).await;

    let body = r#"{"invoice":"i-1","total":"12.50 €"}"#;
    let id = ingest(&gw, "in-mgmt", body).await;
    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(20))
        .await;
    let got = take(&channel, &queue, 1, Duration::from_secs(5)).await;
    let m = &got[0];
    assert_eq!(m.body, body);
    assert_eq!(m.routing_key, "invoices");
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.delivery_mode, Some(2));
    assert_eq!(m.message_id.as_deref(), Some(id.as_str()));
    assert_eq!(m.header("hookstream-event-id"), Some(id.as_str()));
    assert_eq!(m.header("hookstream-source-id"), Some("t/in-mgmt"));
    let detail = attempt_detail(&gw, &event["delivery_attempts"][0]).await;
    assert_eq!(
        detail["provider_result"],
        json!({"type": "rabbitmq", "exchange": exchange, "routing_key": "invoices"}),
        "{detail}"
    );

    let unroutable = ingest(&gw, "in-unbound", r#"{"n":1}"#).await;
    assert_dead_lettered_at_once(&gw, &unroutable, &["no queue is bound", "routed: false"]).await;
    let absent = ingest(&gw, "in-missing", r#"{"n":2}"#).await;
    assert_dead_lettered_at_once(&gw, &absent, &["does not exist", "404"]).await;
    let refused = ingest(&gw, "in-denied", r#"{"n":3}"#).await;
    let event = assert_dead_lettered_at_once(&gw, &refused, &["401"]).await;
    assert_eq!(depth(&channel, &queue).await, 0, "nothing else arrived");

    for text in [gw.log(), event.to_string(), detail.to_string()] {
        assert!(!text.contains("MGMT-SECRET"), "password leaked: {text}");
        assert!(!text.contains("WRONG-SECRET"), "password leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_egress_policy_refuses_the_resolved_broker_address_in_both_modes() {
    let broker = broker();
    let (_conn, channel) = connect(&broker.amqp).await;
    let exchange = unique("hs-egress");
    let queue = unique("hs-egress-q");
    topology(&channel, &exchange, &[(&queue, "k")]).await;
    // `localhost` is a name: only the gateway's own resolution sees 127.0.0.1 or ::1.
    let amqp_port = url::Url::parse(&broker.amqp).unwrap().port().unwrap();
    let management_port = url::Url::parse(&broker.management).unwrap().port().unwrap();
    let amqp = format!(
        "  type: rabbitmq\n  rabbitmq: {{url: \"amqp://localhost:{amqp_port}\", exchange: {exchange}, routingKey: k}}\n{RETRY}"
    );
    let management = format!(
        "  type: rabbitmq\n  rabbitmq: {{mode: management, url: \"http://localhost:{management_port}\", exchange: {exchange}, routingKey: k}}\n{RETRY}"
    );
    let manifests = format!("{}{}", route("amqp", &amqp), route("mgmt", &management));
    let gw = Gateway::start_with(&manifests, &["--egress-deny", "127.0.0.0/8,::1/128"]).await;
    for source in ["in-amqp", "in-mgmt"] {
        let id = ingest(&gw, source, r#"{"n":1}"#).await;
        assert_dead_lettered_at_once(&gw, &id, &["denied by the egress policy"]).await;
    }
    assert_eq!(
        depth(&channel, &queue).await,
        0,
        "nothing reached the broker"
    );
}

/// The private node of the outage test.
const OUTAGE_NODE: [(&str, &str); 4] = [
    ("HOOKSTREAM_RABBITMQ_NODE", "hookstream-outage"),
    ("HOOKSTREAM_RABBITMQ_PORT", "25682"),
    ("HOOKSTREAM_RABBITMQ_MANAGEMENT_PORT", "35682"),
    ("HOOKSTREAM_RABBITMQ_DIST_PORT", "45682"),
];

/// Stops the outage node and deletes its state even when the test fails.
struct OutageNode;

impl Drop for OutageNode {
    fn drop(&mut self) {
        let _ = Command::new(scripts_dir().join("rabbitmq-down"))
            .envs(OUTAGE_NODE.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing() {
    let node = OutageNode;
    let url = run_script("rabbitmq-up", &[], &OUTAGE_NODE);
    let queue = unique("hs-outage");
    {
        let (connection, channel) = connect(&url).await;
        declare_queue(&channel, &queue, true).await;
        connection.close(200, "done".into()).await.unwrap();
    }
    let spec = format!(
        "  type: rabbitmq\n  rabbitmq: {{url: \"amqp://127.0.0.1:25682\", exchange: \"\", routingKey: {queue}, timeoutSeconds: 5}}\n{RETRY}"
    );
    let gw = Gateway::start(&route("outage", &spec)).await;
    // The gateway's connection is up and in use when the broker goes away.
    let before_body = r#"{"n":"before"}"#.to_owned();
    let before = ingest(&gw, "in-outage", &before_body).await;
    gw.wait_event_status(&before, "delivered", Duration::from_secs(20))
        .await;

    // Down, with its durable queue (and the message in it) kept for when it comes back.
    run_script("rabbitmq-down", &["--keep"], &OUTAGE_NODE);
    let mut sent = Vec::new();
    for n in 0..5 {
        let body = format!(r#"{{"n":{n},"during":"outage"}}"#);
        sent.push((ingest(&gw, "in-outage", &body).await, body));
    }
    // Every event fails (connection refused) and waits for a retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    for (id, _) in &sent {
        loop {
            let (_, event) = gw.get(&format!("/v1/events/{id}")).await;
            let attempts = event["delivery_attempts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if let Some(first) = attempts.first() {
                assert_eq!(first["status"], "failed", "{event}");
                assert_eq!(first["is_dlq"], 0, "retried, not dead-lettered: {event}");
                let error = first["error"].as_str().unwrap();
                assert!(error.contains("broker"), "{event}");
                eprintln!("while the broker is down: {error}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no attempt: {event}\n{}",
                gw.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let url = run_script("rabbitmq-up", &[], &OUTAGE_NODE);
    for (id, _) in &sent {
        gw.wait_event_status(id, "delivered", Duration::from_secs(60))
            .await;
    }
    let (_conn, channel) = connect(&url).await;
    sent.push((before, before_body));
    let mut got = take(&channel, &queue, sent.len(), Duration::from_secs(10)).await;
    got.sort_by(|a, b| a.body.cmp(&b.body));
    sent.sort_by(|a, b| a.1.cmp(&b.1));
    for ((id, body), m) in sent.iter().zip(&got) {
        assert_eq!(&m.body, body);
        assert_eq!(m.message_id.as_deref(), Some(id.as_str()));
        assert_eq!(m.header("hookstream-event-id"), Some(id.as_str()));
    }
    assert_eq!(depth(&channel, &queue).await, 0, "each event exactly once");
    drop(node);
}

/// The broker's open connections of `user` (management API).
async fn connections_of(management: &str, user: &str) -> usize {
    let base = url::Url::parse(management).unwrap();
    let origin = format!(
        "http://{}:{}",
        base.host_str().unwrap(),
        base.port().unwrap()
    );
    let list: Value = reqwest::Client::new()
        .get(format!("{origin}/api/connections"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["user"] == user)
        .count()
}

/// A Destination that is deleted leaves no connection open: a tenant who creates and deletes
/// Destinations cannot pile connections up on the gateway or on the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_destination_closes_its_connection() {
    let broker = broker();
    let (_conn, channel) = connect(&broker.amqp).await;
    let exchange = unique("hs-gone");
    let queue = unique("hs-gone-q");
    topology(&channel, &exchange, &[(&queue, "k")]).await;
    let user = unique("hs-gone-user");
    create_user(&broker.management, &user, "pw-gone-1").await;
    let spec = format!(
        "  type: rabbitmq\n  credentialsRef: {{name: creds}}\n  rabbitmq: {{url: \"amqp://{}\", exchange: {exchange}, routingKey: k}}\n{RETRY}",
        broker.amqp_address()
    );
    let kept = route(
        "kept",
        "  type: http\n  http: {url: \"http://127.0.0.1:9/unused\"}",
    );
    let with_destination = format!(
        "{}{}{kept}",
        secret("creds", &user, "pw-gone-1"),
        route("amqp", &spec)
    );
    let gw = Gateway::start(&with_destination).await;
    let id = ingest(&gw, "in-amqp", r#"{"n":1}"#).await;
    gw.wait_event_status(&id, "delivered", Duration::from_secs(20))
        .await;
    assert_eq!(
        take(&channel, &queue, 1, Duration::from_secs(5))
            .await
            .len(),
        1
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while connections_of(&broker.management, &user).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the delivery's connection is not listed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The Destination and its Connection leave the manifests.
    std::fs::write(
        gw.manifests_dir().join("main.yaml"),
        format!("{}{kept}", secret("creds", &user, "pw-gone-1")),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while connections_of(&broker.management, &user).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the deleted Destination's connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
