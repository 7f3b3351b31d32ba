//! The `sqs`, `s3` and `eventbridge` destination types against a real AWS API server (moto):
//! deliveries are read back with the AWS SDK's own clients, an outage of the server loses
//! nothing, a missing queue dead-letters at once, and the credentials from the Destination's
//! Secret never show in the log or the API.
//!
//! The server is `scripts/moto-up`'s (started once per test binary), or the one at
//! `HOOKSTREAM_TEST_MOTO`. The outage test runs a private server of its own on another port.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use axum::http::StatusCode;
use common::Gateway;
use serde_json::{json, Value};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
/// Fixed and Secret credentials: moto accepts any key.
const ACCESS_KEY: &str = "AKIAHOOKSTREAMTEST77";
const SECRET_KEY: &str = "s3cr3t-never-shown-0f9e8d7c6b5a";
const NO_CIRCUIT: &str = "{failureThreshold: 1000}";

/// The shared moto server's URL.
fn moto() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = std::env::var("HOOKSTREAM_TEST_MOTO")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return url;
        }
        moto_up(None)
    })
}

fn scripts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Runs `scripts/moto-up` (on `port` when given) and returns the URL it prints last.
fn moto_up(port: Option<u16>) -> String {
    let mut cmd = Command::new(scripts_dir().join("moto-up"));
    if let Some(port) = port {
        cmd.env("HOOKSTREAM_MOTO_PORT", port.to_string());
    }
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/moto-up failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().trim().to_owned()
}

/// A private moto server of `scripts/moto-up`, stopped with `scripts/moto-down` when
/// dropped (also when the test fails).
struct PrivateMoto(u16);

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        moto_down(self.0);
    }
}

fn moto_down(port: u16) {
    let status = Command::new(scripts_dir().join("moto-down"))
        .env("HOOKSTREAM_MOTO_PORT", port.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A name no other test uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// The SDK's HTTP client for the test's own clients: plain reqwest, nothing of the gateway.
#[derive(Clone, Debug)]
struct TestConnector(reqwest::Client);

impl HttpConnector for TestConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().unwrap();
            let (parts, body) = request.into_parts();
            let body = body.bytes().unwrap_or_default().to_vec();
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| ConnectorError::io(Box::new(e)))?;
            let mut answer = http::Response::builder().status(response.status());
            for (k, v) in response.headers() {
                answer = answer.header(k, v);
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| ConnectorError::io(Box::new(e)))?;
            Ok(HttpResponse::try_from(answer.body(SdkBody::from(bytes)).unwrap()).unwrap())
        })
    }
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    let credentials =
        aws_credential_types::Credentials::new("AKIATEST", "test", None, None, "test");
    sdk_config_as(endpoint, credentials).await
}

async fn sdk_config_as(
    endpoint: &str,
    credentials: aws_credential_types::Credentials,
) -> aws_config::SdkConfig {
    let connector = SharedHttpConnector::new(TestConnector(reqwest::Client::new()));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .http_client(http_client_fn(move |_, _| connector.clone()))
        .load()
        .await
}

async fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config(endpoint).await)
}

async fn create_queue(client: &aws_sdk_sqs::Client, name: &str, fifo: bool) -> String {
    let mut req = client.create_queue().queue_name(name);
    if fifo {
        req = req.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    req.send().await.unwrap().queue_url().unwrap().to_owned()
}

/// Receives messages until `n` have come, within 20 s.
async fn receive(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    n: usize,
) -> Vec<aws_sdk_sqs::types::Message> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} messages in {queue_url}",
            got.len()
        );
        let out = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages() {
            client
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            got.push(m.clone());
        }
    }
    got
}

fn attribute<'a>(m: &'a aws_sdk_sqs::types::Message, name: &str) -> Option<&'a str> {
    m.message_attributes()
        .and_then(|a| a.get(name))
        .and_then(|v| v.string_value())
}

fn secret(name: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: t}}
stringData: {{accessKeyId: "{ACCESS_KEY}", secretAccessKey: "{SECRET_KEY}"}}
"#
    )
}

/// Manifests of Source `t/in` → Destination `t/out` with `spec` lines (indented two spaces),
/// plus the Secret `aws`.
fn manifests(spec: &str) -> String {
    format!("{}{}", common::single_route(spec), secret("aws"))
}

async fn ingest(gw: &Gateway, body: &str) -> String {
    let r = gw.ingest("t", "in", body, &[]).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The event's attempts, oldest first, each as `GET /v1/delivery-attempts/{id}` shows it.
async fn attempts(gw: &Gateway, event_id: &str) -> Vec<Value> {
    let (code, body) = gw
        .get(&format!("/v1/delivery-attempts?event_id={event_id}"))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let mut out = Vec::new();
    for a in body["delivery_attempts"].as_array().unwrap().iter().rev() {
        let (code, full) = gw
            .get(&format!(
                "/v1/delivery-attempts/{}",
                a["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(code, StatusCode::OK, "{full}");
        out.push(full);
    }
    out
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// Neither the log nor any API answer holds a credential from the Secret.
async fn assert_no_secret(gw: &Gateway, event_ids: &[String]) {
    assert_none_of(gw, event_ids, &[ACCESS_KEY, SECRET_KEY]).await;
}

/// Neither the log nor any API answer holds any of `secrets`.
async fn assert_none_of(gw: &Gateway, event_ids: &[String], secrets: &[&str]) {
    let mut texts = vec![gw.log()];
    for path in [
        "/v1/destinations",
        "/v1/destinations/t/out",
        "/v1/delivery-attempts",
    ] {
        texts.push(gw.get(path).await.1.to_string());
    }
    for id in event_ids {
        texts.push(gw.get(&format!("/v1/events/{id}")).await.1.to_string());
        for a in attempts(gw, id).await {
            texts.push(a.to_string());
        }
    }
    for text in texts {
        for secret in secrets {
            assert!(!text.contains(secret), "a credential leaked: {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_messages_carry_the_payload_and_attributes_and_fifo_groups_by_source() {
    let endpoint = moto();
    let client = sqs_client(endpoint).await;
    let standard = create_queue(&client, &unique("std"), false).await;
    let fifo = create_queue(&client, &format!("{}.fifo", unique("ord")), true).await;
    let spec = format!(
        "  type: sqs\n  credentialsRef: {{name: aws}}\n  sqs: {{queueUrl: \"{standard}\", region: {REGION}, endpointUrl: \"{endpoint}\"}}\n"
    );
    let fifo_dest = format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: ordered, namespace: t}}
spec:
  type: sqs
  credentialsRef: {{name: aws}}
  sqs: {{queueUrl: "{fifo}", region: {REGION}, messageGroupId: customer.id}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c2, namespace: t}}
spec: {{source: in, destination: ordered}}
"#
    );
    let gw = Gateway::start(&format!("{}{fifo_dest}", manifests(&spec))).await;

    let bodies = [
        json!({"customer": {"id": "c-1"}, "n": 1}).to_string(),
        json!({"customer": {"id": "c-2"}, "n": 2}).to_string(),
        json!({"n": 3}).to_string(),
    ];
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(ingest(&gw, body).await);
    }
    for id in &ids {
        gw.wait_event_status(id, "delivered", Duration::from_secs(20))
            .await;
    }

    let got = receive(&client, &standard, 3).await;
    let by_id: HashMap<&str, &aws_sdk_sqs::types::Message> = got
        .iter()
        .map(|m| (attribute(m, "event_id").unwrap(), m))
        .collect();
    for (id, body) in ids.iter().zip(&bodies) {
        let m = by_id[id.as_str()];
        assert_eq!(m.body(), Some(body.as_str()));
        assert_eq!(attribute(m, "source_id"), Some("t/in"));
    }

    let got = receive(&client, &fifo, 3).await;
    for m in &got {
        let id = attribute(m, "event_id").unwrap();
        let i = ids.iter().position(|e| e == id).unwrap();
        assert_eq!(m.body(), Some(bodies[i].as_str()));
        let attrs = m.attributes().unwrap();
        let group = attrs
            .get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
            .unwrap();
        let want = ["c-1", "c-2", "t/in"][i];
        assert_eq!(
            group, want,
            "the group comes from customer.id, else the Source"
        );
        assert_eq!(
            attrs
                .get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageDeduplicationId)
                .map(String::as_str),
            Some(id)
        );
    }

    // The attempt shows what SQS returned and the attributes sent.
    for (i, id) in ids.iter().enumerate() {
        let tried = attempts(&gw, id).await;
        let standard_attempt = tried
            .iter()
            .find(|a| a["destination_id"] == "t/out")
            .unwrap();
        let result = &standard_attempt["provider_result"];
        assert!(
            result["message_id"].as_str().is_some_and(|m| !m.is_empty()),
            "{standard_attempt}"
        );
        let sent = &standard_attempt["request_headers"];
        assert_eq!(header(sent, "event_id"), Some(id.as_str()), "{sent}");
        assert_eq!(header(sent, "source_id"), Some("t/in"), "{sent}");
        let fifo_attempt = tried
            .iter()
            .find(|a| a["destination_id"] == "t/ordered")
            .unwrap();
        // SQS returns a SequenceNumber for FIFO sends; moto does not, so only the id is
        // checked here.
        assert!(
            fifo_attempt["provider_result"]["message_id"].is_string(),
            "{fifo_attempt}"
        );
        assert_eq!(
            header(&fifo_attempt["request_headers"], "MessageGroupId"),
            Some(["c-1", "c-2", "t/in"][i])
        );
    }
    assert_no_secret(&gw, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_are_stored_at_the_pattern_key_as_the_event_or_the_raw_payload() {
    let endpoint = moto();
    let config = sdk_config(endpoint).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let bucket = unique("hooks");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let spec = format!(
        "  type: s3\n  credentialsRef: {{name: aws}}\n  s3: {{bucket: {bucket}, region: {REGION}, prefix: json/, forcePathStyle: true, endpointUrl: \"{endpoint}\"}}\n"
    );
    let raw = format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: raw, namespace: t}}
spec:
  type: s3
  credentialsRef: {{name: aws}}
  s3:
    bucket: {bucket}
    region: {REGION}
    keyPattern: "raw/{{namespace}}/{{source}}/{{yyyy}}{{mm}}{{dd}}{{hh}}/{{event_id}}"
    format: raw
    forcePathStyle: true
    endpointUrl: "{endpoint}"
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c2, namespace: t}}
spec: {{source: in, destination: raw}}
"#
    );
    let gw = Gateway::start(&format!("{}{raw}", manifests(&spec))).await;
    let body = r#"{"order":"o-7","total":12.5}"#;
    let id = ingest(&gw, body).await;
    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(20))
        .await;
    let received: chrono::DateTime<chrono::Utc> =
        event["received_at"].as_str().unwrap().parse().unwrap();

    let json_key = format!("json/{}/{id}.json", received.format("%Y/%m/%d"));
    let raw_key = format!("raw/t/in/{}/{id}", received.format("%Y%m%d%H"));
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let mut keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort();
    assert_eq!(keys, vec![json_key.as_str(), raw_key.as_str()]);

    let object = s3
        .get_object()
        .bucket(&bucket)
        .key(&json_key)
        .send()
        .await
        .unwrap();
    assert_eq!(object.content_type(), Some("application/json"));
    let stored: Value =
        serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(stored["event_id"], id.as_str());
    assert_eq!(stored["source_id"], "t/in");
    assert_eq!(stored["method"], "POST");
    assert_eq!(stored["headers"]["content-type"], "application/json");
    assert_eq!(stored["body"], serde_json::from_str::<Value>(body).unwrap());
    assert_eq!(stored["received_at"], event["received_at"]);

    let object = s3
        .get_object()
        .bucket(&bucket)
        .key(&raw_key)
        .send()
        .await
        .unwrap();
    assert_eq!(object.content_type(), Some("application/json"));
    assert_eq!(
        object
            .metadata()
            .and_then(|m| m.get("event-id"))
            .map(String::as_str),
        Some(id.as_str())
    );
    let bytes = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], body.as_bytes());

    for a in attempts(&gw, &id).await {
        let result = &a["provider_result"];
        assert_eq!(result["bucket"], bucket.as_str(), "{a}");
        let key = if a["destination_id"] == "t/out" {
            &json_key
        } else {
            &raw_key
        };
        assert_eq!(result["key"], key.as_str(), "{a}");
        assert!(result["etag"].is_string(), "{a}");
    }
    assert_no_secret(&gw, std::slice::from_ref(&id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_entries_reach_a_rule_target_with_source_detail_type_and_detail() {
    let endpoint = moto();
    let config = sdk_config(endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let events = aws_sdk_eventbridge::Client::new(&config);
    let queue_name = unique("bus-target");
    let queue = create_queue(&sqs, &queue_name, false).await;
    let bus = unique("bus");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let rule = unique("rule");
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(json!({"source": ["hookstream.test"]}).to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue_name}"))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let spec = format!(
        "  type: eventbridge\n  credentialsRef: {{name: aws}}\n  eventbridge: {{eventBusArn: {bus}, region: {REGION}, source: hookstream.test, detailType: Fallback, detailTypeFrom: kind, endpointUrl: \"{endpoint}\"}}\n"
    );
    let gw = Gateway::start(&manifests(&spec)).await;
    let typed = json!({"kind": "order.created", "id": 1}).to_string();
    let untyped = json!({"id": 2}).to_string();
    let first = ingest(&gw, &typed).await;
    let second = ingest(&gw, &untyped).await;
    for id in [&first, &second] {
        gw.wait_event_status(id, "delivered", Duration::from_secs(20))
            .await;
    }

    let got = receive(&sqs, &queue, 2).await;
    let mut seen: Vec<(String, Value)> = got
        .iter()
        .map(|m| {
            let envelope: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            assert_eq!(envelope["source"], "hookstream.test", "{envelope}");
            (
                envelope["detail-type"].as_str().unwrap().to_owned(),
                envelope["detail"].clone(),
            )
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            (
                "Fallback".to_owned(),
                serde_json::from_str(&untyped).unwrap()
            ),
            (
                "order.created".to_owned(),
                serde_json::from_str(&typed).unwrap()
            ),
        ]
    );
    let tried = attempts(&gw, &first).await;
    assert!(
        tried[0]["provider_result"]["entry_id"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        tried[0]
    );
    assert_eq!(
        header(&tried[0]["request_headers"], "DetailType"),
        Some("order.created")
    );
    assert_no_secret(&gw, &[first, second]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_does_not_exist_dead_letters_at_once_with_sqs_words() {
    let endpoint = moto();
    let missing = format!("{endpoint}/{ACCOUNT}/{}", unique("missing"));
    let spec = format!(
        "  type: sqs\n  credentialsRef: {{name: aws}}\n  sqs: {{queueUrl: \"{missing}\", region: {REGION}}}\n  retry: {{maxRetries: 20, backoff: fixed, intervals: [1s]}}\n"
    );
    let gw = Gateway::start(&manifests(&spec)).await;
    let id = ingest(&gw, r#"{"a":1}"#).await;
    let event = gw
        .wait_event_status(&id, "failed", Duration::from_secs(20))
        .await;
    let tried = attempts(&gw, &id).await;
    assert_eq!(tried.len(), 1, "not retried: {tried:?}");
    let error = tried[0]["error"].as_str().unwrap();
    assert!(
        error.contains("NonExistentQueue") || error.contains("QueueDoesNotExist"),
        "{error}"
    );
    assert!(error.contains("does not exist"), "{error}");
    assert_eq!(tried[0]["is_dlq"], 1, "{}", tried[0]);
    assert!(
        event.to_string().contains("does not exist"),
        "the event shows why: {event}"
    );
    assert_no_secret(&gw, &[id]).await;
}

/// A moto server started with one queue already in it, so no request can find the server
/// up and the queue missing. Killed when dropped.
struct PreloadedMoto(Child);

impl PreloadedMoto {
    fn start(port: u16, queue: &str) -> PreloadedMoto {
        PreloadedMoto::with(
            port,
            &format!(
                "from moto.sqs.models import sqs_backends\nsqs_backends[\"{ACCOUNT}\"][\"{REGION}\"].create_queue(\"{queue}\")"
            ),
        )
    }

    /// A moto server that runs `setup` (Python, on moto's backends) before it listens.
    fn with(port: u16, setup: &str) -> PreloadedMoto {
        let cache = std::env::var("HOOKSTREAM_MOTO_CACHE").unwrap_or_else(|_| {
            format!("{}/.cache/hookstream-moto", std::env::var("HOME").unwrap())
        });
        let script = format!(
            r#"
import sys, time
from moto.server import ThreadedMotoServer
{setup}
ThreadedMotoServer(ip_address="127.0.0.1", port={port}, verbose=False).start()
while True:
    time.sleep(3600)
"#
        );
        let child = Command::new(format!("{cache}/venv/bin/python"))
            .arg("-c")
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        PreloadedMoto(child)
    }
}

impl Drop for PreloadedMoto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_outage_loses_nothing_once_the_server_is_back() {
    moto(); // installs moto when missing
    let port = free_port();
    let endpoint = moto_up(Some(port));
    let private = PrivateMoto(port);
    let name = unique("outage");
    let client = sqs_client(&endpoint).await;
    let queue = create_queue(&client, &name, false).await;
    let spec = format!(
        "  type: sqs\n  credentialsRef: {{name: aws}}\n  sqs: {{queueUrl: \"{queue}\", region: {REGION}, timeoutSeconds: 2}}\n  retry: {{maxRetries: 20, backoff: fixed, intervals: [1s]}}\n  circuitBreaker: {NO_CIRCUIT}\n"
    );
    let gw = Gateway::start(&manifests(&spec)).await;
    drop(private);

    let bodies: Vec<String> = (0..5).map(|i| json!({"n": i}).to_string()).collect();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(ingest(&gw, body).await);
    }
    // Every event fails at least once while the server is down.
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        loop {
            let tried = attempts(&gw, id).await;
            if tried.iter().any(|a| a["status"] == "failed") {
                let error = tried[0]["error"].as_str().unwrap_or_default();
                assert!(error.contains("cannot reach SQS"), "{error}");
                assert_eq!(tried[0]["is_dlq"], 0, "a retried failure: {}", tried[0]);
                break;
            }
            assert!(Instant::now() < deadline, "no failed attempt for {id}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let _server = PreloadedMoto::start(port, &name);
    for id in &ids {
        gw.wait_event_status(id, "delivered", Duration::from_secs(30))
            .await;
    }
    for id in &ids {
        let tried = attempts(&gw, id).await;
        assert!(tried.len() >= 2, "failed, then retried: {tried:?}");
        assert_eq!(tried.last().unwrap()["status"], "success");
    }
    let got = receive(&client, &queue, 5).await;
    let mut delivered: Vec<(String, String)> = got
        .iter()
        .map(|m| {
            (
                attribute(m, "event_id").unwrap().to_owned(),
                m.body().unwrap().to_owned(),
            )
        })
        .collect();
    delivered.sort();
    let mut sent: Vec<(String, String)> = ids.iter().cloned().zip(bodies.clone()).collect();
    sent.sort();
    assert_eq!(delivered, sent, "every event once, as sent");
    // Nothing more arrives.
    let extra = client
        .receive_message()
        .queue_url(&queue)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(extra.messages().is_empty(), "no duplicates");
}

/// Temporary credentials of a role in account `account`, from moto's STS. Moto acts as the
/// account a request's access key belongs to, so what these credentials create lives in that
/// account and other keys do not see it.
async fn assume_role(endpoint: &str, account: &str) -> (String, String, String) {
    let text = reqwest::Client::new()
        .post(format!("{endpoint}/"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIASTSCALLER/20260101/us-east-1/sts/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            (
                "RoleArn",
                &format!("arn:aws:iam::{account}:role/hookstream"),
            ),
            ("RoleSessionName", "hookstream-test"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let field = |name: &str| {
        let start = text.find(&format!("<{name}>")).unwrap() + name.len() + 2;
        let end = text.find(&format!("</{name}>")).unwrap();
        text[start..end].to_owned()
    };
    (
        field("AccessKeyId"),
        field("SecretAccessKey"),
        field("SessionToken"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secrets_credentials_sign_the_requests_and_are_never_shown() {
    let endpoint = moto();
    let (key, secret_key, token) = assume_role(endpoint, "210987654321").await;
    let owner = sqs_client_as(endpoint, &key, &secret_key, &token).await;
    let queue = create_queue(&owner, &unique("private"), false).await;
    assert!(queue.contains("/210987654321/"), "{queue}");
    let manifests = format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: v1
kind: Secret
metadata: {{name: role, namespace: t}}
stringData: {{accessKeyId: "{key}", secretAccessKey: "{secret_key}", sessionToken: "{token}"}}
{other}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec:
  type: sqs
  credentialsRef: {{name: role}}
  sqs: {{queueUrl: "{queue}", region: {REGION}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: other, namespace: t}}
spec:
  type: sqs
  credentialsRef: {{name: aws}}
  sqs: {{queueUrl: "{queue}", region: {REGION}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: t}}
spec: {{source: in, destination: out}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c2, namespace: t}}
spec: {{source: in, destination: other}}
"#,
        other = secret("aws"),
    );
    let gw = Gateway::start(&manifests).await;
    let id = ingest(&gw, r#"{"private":true}"#).await;
    let got = receive(&owner, &queue, 1).await;
    assert_eq!(attribute(&got[0], "event_id"), Some(id.as_str()));
    // The same queue URL with the other Secret's key is another account: no such queue.
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let tried = attempts(&gw, &id).await;
        if let Some(a) = tried.iter().find(|a| a["destination_id"] == "t/other") {
            break a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no attempt to t/other: {tried:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{refused}"
    );
    assert_none_of(
        &gw,
        &[id],
        &[&key, &secret_key, &token, ACCESS_KEY, SECRET_KEY],
    )
    .await;
}

async fn sqs_client_as(
    endpoint: &str,
    key: &str,
    secret: &str,
    token: &str,
) -> aws_sdk_sqs::Client {
    let credentials =
        aws_credential_types::Credentials::new(key, secret, Some(token.to_owned()), None, "test");
    aws_sdk_sqs::Client::new(&sdk_config_as(endpoint, credentials).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_resolves_to_a_denied_range_is_refused_at_once() {
    let port = moto().rsplit(':').next().unwrap().to_owned();
    // `localhost` is a name: only the resolver the SDK's client connects with sees that it is
    // 127.0.0.1 or ::1.
    let queue = format!("http://localhost:{port}/{ACCOUNT}/{}", unique("denied"));
    let spec = format!(
        "  type: sqs\n  credentialsRef: {{name: aws}}\n  sqs: {{queueUrl: \"{queue}\", region: {REGION}}}\n  retry: {{maxRetries: 20, backoff: fixed, intervals: [1s]}}\n"
    );
    let gw =
        Gateway::start_with(&manifests(&spec), &["--egress-deny", "127.0.0.0/8,::1/128"]).await;
    let id = ingest(&gw, r#"{"a":1}"#).await;
    gw.wait_event_status(&id, "failed", Duration::from_secs(20))
        .await;
    let tried = attempts(&gw, &id).await;
    assert_eq!(tried.len(), 1, "a refusal is not retried: {tried:?}");
    let error = tried[0]["error"].as_str().unwrap();
    assert!(error.contains("denied by the egress policy"), "{error}");
    assert_eq!(tried[0]["is_dlq"], 1);
}

/// An S3 bucket that does not exist, and an EventBridge bus that does not exist: each is
/// dead-lettered after its first attempt with the service's own words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_or_bus_dead_letters_at_once_with_the_services_words() {
    let endpoint = moto();
    let retry = "  retry: {maxRetries: 20, backoff: fixed, intervals: [1s]}\n";
    let cases = [
        (
            format!(
                "  type: s3\n  credentialsRef: {{name: aws}}\n  s3: {{bucket: {}, region: {REGION}, forcePathStyle: true, endpointUrl: \"{endpoint}\"}}\n{retry}",
                unique("no-such-bucket")
            ),
            "NoSuchBucket",
        ),
        (
            format!(
                "  type: eventbridge\n  credentialsRef: {{name: aws}}\n  eventbridge: {{eventBusArn: {}, region: {REGION}, endpointUrl: \"{endpoint}\"}}\n{retry}",
                unique("no-such-bus")
            ),
            "does not exist",
        ),
    ];
    for (spec, words) in cases {
        let gw = Gateway::start(&manifests(&spec)).await;
        let id = ingest(&gw, r#"{"a":1}"#).await;
        gw.wait_event_status(&id, "failed", Duration::from_secs(20))
            .await;
        let tried = attempts(&gw, &id).await;
        assert_eq!(tried.len(), 1, "not retried: {tried:?}");
        let error = tried[0]["error"].as_str().unwrap();
        assert!(error.contains(words), "{error}");
        assert_eq!(tried[0]["is_dlq"], 1, "{}", tried[0]);
        assert_no_secret(&gw, &[id]).await;
    }
}

/// While the S3 and EventBridge endpoint is down every delivery fails and is retried; once
/// it is back (with the bucket) each event is stored or put exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_and_eventbridge_outage_loses_nothing_once_the_server_is_back() {
    moto(); // installs moto when missing
    let port = free_port();
    let endpoint = moto_up(Some(port));
    let private = PrivateMoto(port);
    let bucket = unique("outage-bucket");
    let spec = format!(
        "  type: s3\n  credentialsRef: {{name: aws}}\n  s3: {{bucket: {bucket}, region: {REGION}, format: raw, forcePathStyle: true, endpointUrl: \"{endpoint}\", timeoutSeconds: 2}}\n  retry: {{maxRetries: 20, backoff: fixed, intervals: [1s]}}\n  circuitBreaker: {NO_CIRCUIT}\n"
    );
    let bus = format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: bus, namespace: t}}
spec:
  type: eventbridge
  credentialsRef: {{name: aws}}
  eventbridge: {{region: {REGION}, endpointUrl: "{endpoint}", timeoutSeconds: 2}}
  retry: {{maxRetries: 20, backoff: fixed, intervals: [1s]}}
  circuitBreaker: {NO_CIRCUIT}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c2, namespace: t}}
spec: {{source: in, destination: bus}}
"#
    );
    let gw = Gateway::start(&format!("{}{bus}", manifests(&spec))).await;
    drop(private);

    let bodies: Vec<String> = (0..4).map(|i| json!({"n": i}).to_string()).collect();
    let mut ids = Vec::new();
    for body in &bodies {
        ids.push(ingest(&gw, body).await);
    }
    // Both destinations of every event fail at least once while the server is down.
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        loop {
            let tried = attempts(&gw, id).await;
            let failed = |service: &str| {
                tried.iter().any(|a| {
                    a["status"] == "failed"
                        && a["is_dlq"] == 0
                        && a["error"]
                            .as_str()
                            .is_some_and(|e| e.contains(&format!("cannot reach {service}")))
                })
            };
            if failed("S3") && failed("EventBridge") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no retried failure of both for {id}: {tried:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let _server = PreloadedMoto::with(
        port,
        &format!(
            "from moto.s3.models import s3_backends\ns3_backends[\"{ACCOUNT}\"][\"aws\"].create_bucket(\"{bucket}\", \"{REGION}\")"
        ),
    );
    for id in &ids {
        gw.wait_event_status(id, "delivered", Duration::from_secs(30))
            .await;
    }
    let config = sdk_config(&endpoint).await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    for (id, body) in ids.iter().zip(&bodies) {
        let tried = attempts(&gw, id).await;
        let last_of = |kind: &str| {
            tried
                .iter()
                .rev()
                .find(|a| a["destination_name"] == kind)
                .cloned()
                .unwrap()
        };
        assert_eq!(last_of("out")["status"], "success", "{tried:?}");
        assert_eq!(last_of("bus")["status"], "success", "{tried:?}");
        let detail = gw
            .get(&format!(
                "/v1/delivery-attempts/{}",
                last_of("out")["id"].as_str().unwrap()
            ))
            .await
            .1;
        let key = detail["provider_result"]["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let object = s3
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap();
        let stored = object.body.collect().await.unwrap().into_bytes();
        assert_eq!(String::from_utf8_lossy(&stored), *body, "{key}");
        let detail = gw
            .get(&format!(
                "/v1/delivery-attempts/{}",
                last_of("bus")["id"].as_str().unwrap()
            ))
            .await
            .1;
        assert!(
            detail["provider_result"]["entry_id"].is_string(),
            "{detail}"
        );
    }
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert_eq!(listed.contents().len(), ids.len(), "each event stored once");
}
