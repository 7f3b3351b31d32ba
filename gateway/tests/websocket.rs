//! The `websocket` destination type: clients of `GET /v1/ws` subscribe to a Destination's
//! channel and receive its deliveries; with no subscriber a delivery fails and is retried.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, API_KEY};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const MANIFESTS: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: live, namespace: t}
spec:
  type: websocket
  retry: {maxRetries: 5, backoff: fixed, intervals: [1s]}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: c, namespace: t}
spec: {source: in, destination: live}
"#;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gw: &Gateway, key: Option<&str>) -> Result<Socket, String> {
    let url = format!("{}/v1/ws", gw.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
        .map_err(|e| e.to_string())
}

/// The next JSON text message, within `within`.
async fn next_json(socket: &mut Socket, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn ingest(gw: &Gateway, body: &str) -> String {
    let r = gw.ingest("t", "in", body, &[]).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_deliveries_and_none_connected_is_a_retried_failure() {
    let gw = Gateway::start(MANIFESTS).await;

    // Nobody listens yet: a failed attempt, scheduled for a retry.
    let early = ingest(&gw, r#"{"n":1}"#).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        let (_, list) = gw
            .get(&format!("/v1/delivery-attempts?event_id={early}"))
            .await;
        if let Some(a) = list["delivery_attempts"]
            .as_array()
            .and_then(|l| l.last().cloned())
        {
            break a;
        }
        assert!(Instant::now() < deadline, "no attempt:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first["status"], "failed", "{first}");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("no client is subscribed to channel deliveries:t/live"),
        "{first}"
    );
    assert_eq!(first["is_dlq"], 0, "retried, not dead-lettered: {first}");

    // Without an API key the upgrade is refused.
    let refused = connect(&gw, None).await.unwrap_err();
    assert!(refused.contains("401"), "{refused}");

    let mut socket = connect(&gw, Some(API_KEY)).await.unwrap();
    socket
        .send(Message::Text(
            r#"{"type":"subscribe","channel":"nonsense"}"#.into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(2)).await["type"],
        "error"
    );
    socket
        .send(Message::Text(
            r#"{"type":"subscribe","channel":"deliveries:t/live"}"#.into(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut socket, Duration::from_secs(2)).await,
        json!({"type": "subscribed", "channel": "deliveries:t/live"})
    );

    // The retry reaches the subscriber, and so does a new event, in the reference's format.
    let retried = next_json(&mut socket, Duration::from_secs(5)).await;
    assert_eq!(retried["type"], "delivery");
    assert_eq!(retried["channel"], "deliveries:t/live");
    assert_eq!(retried["data"]["event_id"], early.as_str());
    assert_eq!(retried["data"]["status"], "delivered");
    assert_eq!(retried["data"]["body"], json!({"n": 1}));
    assert!(retried["data"]["delivered_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    gw.wait_event_status(&early, "delivered", Duration::from_secs(3))
        .await;

    let later = ingest(&gw, r#"{"n":2}"#).await;
    let got = next_json(&mut socket, Duration::from_secs(3)).await;
    assert_eq!(got["data"]["event_id"], later.as_str());
    assert_eq!(got["data"]["body"], json!({"n": 2}));
    gw.wait_event_status(&later, "delivered", Duration::from_secs(3))
        .await;

    // A client that leaves is no longer counted: deliveries fail again.
    socket.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gone = ingest(&gw, r#"{"n":3}"#).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, event) = gw.get(&format!("/v1/events/{gone}")).await;
    assert_eq!(
        event["status"], "processing",
        "waiting for a subscriber: {event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_scoped_to_other_namespaces_cannot_subscribe_to_a_channel() {
    const OTHER_KEY: &str =
        "hs_test_6666666666666666666666666666666666666666666666666666666666666666";
    let manifests = format!(
        "{MANIFESTS}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: billing-team\n  namespace: hookstream\n  labels: {{hookstream.io/api-key: \"true\"}}\n  annotations: {{hookstream.io/namespaces: billing}}\nstringData:\n  key: {OTHER_KEY}\n"
    );
    let gw = Gateway::start(&manifests).await;
    let mut socket = connect(&gw, Some(OTHER_KEY)).await.unwrap();
    socket
        .send(Message::Text(
            r#"{"type":"subscribe","channel":"deliveries:t/live"}"#.into(),
        ))
        .await
        .unwrap();
    let answer = next_json(&mut socket, Duration::from_secs(2)).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("not found"),
        "{answer}"
    );
    // Nothing reaches it: the delivery finds no subscriber.
    let id = ingest(&gw, r#"{"n":1}"#).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, event) = gw.get(&format!("/v1/events/{id}")).await;
    assert_eq!(event["status"], "processing", "{event}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.next())
            .await
            .is_err(),
        "no message for another namespace's channel"
    );
}
