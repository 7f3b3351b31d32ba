//! Where deliveries may go: the egress policy checked on the address a delivery connects to,
//! the gateway's own listen address, capped response bodies in attempt records, and the hop
//! count that stops delivery loops between gateways.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Gateway, Receiver};
use serde_json::Value;

const SOURCE_ONLY: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#;

/// A Destination `t/{name}` at `url` that retries a few times, and a Connection from `t/in`.
fn destination(name: &str, url: &str) -> String {
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: {name}, namespace: t}}
spec:
  type: http
  http: {{url: "{url}", timeoutSeconds: 2}}
  retry: {{maxRetries: 3, intervals: ["1s"]}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-{name}, namespace: t}}
spec: {{source: in, destination: {name}}}
"#
    )
}

async fn ingest_id(gw: &Gateway, headers: &[(&str, &str)]) -> String {
    let r = gw.ingest("t", "in", r#"{"n":1}"#, headers).await;
    assert_eq!(r.status(), 200, "ingest refused");
    let v: Value = r.json().await.unwrap();
    v["event_id"].as_str().unwrap().to_owned()
}

/// The attempts of an event, oldest first.
async fn attempts(gw: &Gateway, event_id: &str) -> Vec<Value> {
    let (code, body) = gw
        .get(&format!("/v1/delivery-attempts?event_id={event_id}"))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let mut list = body["delivery_attempts"].as_array().unwrap().clone();
    list.reverse();
    list
}

/// Replaces the manifests with `text` and waits until the gateway has loaded Destination
/// `t/{name}` (its circuit endpoint answers).
async fn reload(gw: &Gateway, text: &str, name: &str) {
    std::fs::write(gw.manifests_dir().join("main.yaml"), text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw
        .get(&format!("/v1/destinations/t/{name}/circuit"))
        .await
        .0
        != StatusCode::OK
    {
        assert!(
            Instant::now() < deadline,
            "{name} not loaded:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn port_of(gw: &Gateway) -> u16 {
    gw.base.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_host_name_that_resolves_to_a_denied_range_is_refused_at_connect_time() {
    let receiver = Receiver::start().await;
    let port = receiver.url.rsplit(':').next().unwrap();
    // `localhost` is a name: only the resolver that connects sees it is 127.0.0.1 or ::1.
    let manifests = format!(
        "{SOURCE_ONLY}{}",
        destination("out", &format!("http://localhost:{port}/hook"))
    );
    let gw = Gateway::start_with(&manifests, &["--egress-deny", "127.0.0.0/8,::1/128"]).await;
    let id = ingest_id(&gw, &[]).await;
    gw.wait_event_status(&id, "failed", Duration::from_secs(10))
        .await;
    let tried = attempts(&gw, &id).await;
    assert_eq!(tried.len(), 1, "a refusal is not retried: {tried:?}");
    let error = tried[0]["error"].as_str().unwrap();
    assert!(
        error.contains("denied by the egress policy") && error.contains("127.0.0.0/8"),
        "{error}"
    );
    assert_eq!(tried[0]["is_dlq"], 1, "dead-lettered at once");
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver"
    );
    // The destination is not down: its circuit did not count the refusal.
    let (_, circuit) = gw.get("/v1/destinations/t/out/circuit").await;
    assert_eq!(circuit["state"], "closed", "{circuit}");
    assert_eq!(circuit["failure_count"], 0, "{circuit}");
}

#[tokio::test]
async fn the_gateways_own_listen_address_is_refused_in_every_spelling() {
    // Loopback is allowed by the binary's defaults; the gateway itself is not.
    let gw = Gateway::start(SOURCE_ONLY).await;
    let port = port_of(&gw);
    let mut manifests = SOURCE_ONLY.to_owned();
    for (name, url) in [
        ("literal", format!("http://127.0.0.1:{port}/metrics")),
        (
            "mapped",
            format!("http://[::ffff:127.0.0.1]:{port}/metrics"),
        ),
        ("decimal", format!("http://2130706433:{port}/v1/events")),
        ("named", format!("http://localhost:{port}/metrics")),
    ] {
        manifests.push_str(&destination(name, &url));
    }
    reload(&gw, &manifests, "named").await;
    let id = ingest_id(&gw, &[]).await;
    gw.wait_event_status(&id, "failed", Duration::from_secs(10))
        .await;
    let tried = attempts(&gw, &id).await;
    assert_eq!(
        tried.len(),
        4,
        "one refused attempt per destination: {tried:?}"
    );
    for a in &tried {
        let error = a["error"].as_str().unwrap();
        assert!(
            error.contains("denied by the egress policy")
                && error.contains("gateway's own listen address"),
            "{a}"
        );
        assert_eq!(a["is_dlq"], 1, "{a}");
    }
    // The gateway answered none of them: its ingest and API saw one request, the test's.
    let (_, events) = gw.get("/v1/events").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");
}

#[tokio::test]
async fn long_response_bodies_are_cut_to_a_few_kib_and_marked() {
    let long = "x".repeat(200_000);
    let app = axum::Router::new().fallback(move || {
        let long = long.clone();
        async move { (StatusCode::INTERNAL_SERVER_ERROR, long) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let gw = Gateway::start(&format!("{SOURCE_ONLY}{}", destination("out", &url))).await;
    let id = ingest_id(&gw, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        if let Some(a) = attempts(&gw, &id).await.first().cloned() {
            break a;
        }
        assert!(Instant::now() < deadline, "no attempt:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, detail) = gw
        .get(&format!(
            "/v1/delivery-attempts/{}",
            first["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(detail["status_code"], 500);
    assert_eq!(detail["response_body"].as_str().unwrap().len(), 4096);
    assert_eq!(
        detail["response_body_truncated"], true,
        "{}",
        detail["response_body_truncated"]
    );
}

#[tokio::test]
async fn deliveries_count_hops_and_ingest_refuses_a_request_over_the_limit() {
    let receiver = Receiver::start().await;
    let manifests = format!(
        "{SOURCE_ONLY}{}",
        destination("out", &format!("{}/hook", receiver.url))
    );
    let gw = Gateway::start_with(&manifests, &["--max-hops", "5"]).await;
    ingest_id(&gw, &[]).await;
    ingest_id(&gw, &[("x-hookstream-hops", "3")]).await;
    ingest_id(&gw, &[("x-hookstream-hops", "5")]).await;
    let got = receiver.wait_for(3, Duration::from_secs(10)).await;
    let mut hops: Vec<String> = got
        .iter()
        .map(|r| r.header("x-hookstream-hops").unwrap())
        .collect();
    hops.sort();
    assert_eq!(
        hops,
        ["1", "4", "6"],
        "each delivery: the event's hops plus one"
    );

    let r = gw
        .ingest("t", "in", "{}", &[("x-hookstream-hops", "6")])
        .await;
    assert_eq!(r.status(), 508);
    let body: Value = r.json().await.unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("over the limit of 5"), "{body}");
    let (_, events) = gw.get("/v1/events").await;
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        3,
        "the refused request stored nothing"
    );
}

async fn count(gw: &Gateway) -> usize {
    let (_, events) = gw.get("/v1/events?limit=100").await;
    events["events"].as_array().unwrap().len()
}

#[tokio::test]
async fn two_gateways_delivering_to_each_other_stop_at_the_hop_limit() {
    let a = Gateway::start_with(SOURCE_ONLY, &["--max-hops", "3"]).await;
    let b = Gateway::start_with(SOURCE_ONLY, &["--max-hops", "3"]).await;
    reload(
        &a,
        &format!(
            "{SOURCE_ONLY}{}",
            destination("peer", &format!("{}/v1/ingest/t/in", b.base))
        ),
        "peer",
    )
    .await;
    reload(
        &b,
        &format!(
            "{SOURCE_ONLY}{}",
            destination("peer", &format!("{}/v1/ingest/t/in", a.base))
        ),
        "peer",
    )
    .await;
    ingest_id(&a, &[]).await;

    // Hops 0 (the original, on a), 1 (b), 2 (a) and 3 (b) are stored; the delivery carrying
    // hop 4 is refused with 508 and dead-lettered, not retried.
    let deadline = Instant::now() + Duration::from_secs(15);
    while count(&a).await + count(&b).await < 4 {
        assert!(
            Instant::now() < deadline,
            "the loop did not run:\n{}\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a runaway loop time to show itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        (count(&a).await, count(&b).await),
        (2, 2),
        "hops 0 to 3, no more"
    );
    let (_, dead) = b.get("/v1/delivery-attempts?is_dlq=1").await;
    let dead = dead["delivery_attempts"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["status_code"], 508);
    let (_, all) = b.get("/v1/delivery-attempts?status=failed").await;
    assert_eq!(
        all["delivery_attempts"].as_array().unwrap().len(),
        1,
        "508 is not retried"
    );
}
