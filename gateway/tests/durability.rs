//! Acknowledged events survive a SIGKILL; SIGTERM finishes work in flight.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Answer, Gateway, Receiver};

fn manifests(url: &str) -> String {
    common::single_route(&format!(
        r#"  type: http
  http: {{url: "{url}/hook", timeoutSeconds: 5}}
  # A retry budget (20 x 500 ms) far longer than sending the events takes, so none is
  # dead-lettered before the kill, even on a loaded machine.
  retry: {{maxRetries: 20, backoff: fixed, intervals: [500ms]}}
  circuitBreaker: {{failureThreshold: 1000}}"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_deliveries_pending_loses_no_acknowledged_event() {
    let receiver = Receiver::start().await;
    // The receiver is down (answers 503) while the gateway is killed, so every delivery is
    // pending or scheduled for a retry at that moment.
    receiver.set_default(Answer::status(503));
    let mut gw = Gateway::start(&manifests(&receiver.url)).await;
    let mut acknowledged = HashSet::new();
    for i in 0..200 {
        let r = gw.ingest("t", "in", &format!(r#"{{"n":{i}}}"#), &[]).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        acknowledged.insert(body["event_id"].as_str().unwrap().to_owned());
    }
    gw.kill9();
    receiver.set_default(Answer::status(200));
    gw.restart().await;

    // Every acknowledged event reaches the receiver with a 2xx after the restart.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.header("x-hookstream-event-id"))
            .collect();
        let missing: Vec<_> = acknowledged.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} acknowledged events never delivered after restart",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in &acknowledged {
        gw.wait_event_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_deliveries_in_flight_then_exits() {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer {
        status: 200,
        headers: Vec::new(),
        delay: Duration::from_millis(800),
    });
    let mut gw = Gateway::start(&manifests(&receiver.url)).await;
    let r = gw.ingest("t", "in", r#"{"slow":true}"#, &[]).await;
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    receiver.wait_for(1, Duration::from_secs(5)).await;
    let status = gw.terminate();
    assert!(status.success(), "gateway exit status {status}");
    // The attempt that was in flight finished and was recorded before the exit.
    gw.restart().await;
    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(1))
        .await;
    assert_eq!(event["delivery_attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        receiver.received().len(),
        1,
        "no second delivery after a clean shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_attempts_keep_stopping_the_gateway_is_dead_lettered_after_its_retries() {
    let receiver = Receiver::start().await;
    // The destination never answers within the attempt: each time, the gateway is killed
    // while the attempt is in flight, as if the delivery itself brought it down.
    receiver.set_default(Answer {
        status: 200,
        headers: Vec::new(),
        delay: Duration::from_secs(300),
    });
    let manifests = common::single_route(&format!(
        "  type: http\n  http: {{url: \"{}/hook\", timeoutSeconds: 60}}\n  retry: {{maxRetries: 1, intervals: [100ms]}}\n",
        receiver.url
    ));
    let mut gw = Gateway::start(&manifests).await;
    let r = gw.ingest("t", "in", r#"{"n":1}"#, &[]).await;
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // One attempt and one retry are allowed: both are cut short by a SIGKILL.
    for n in 1..=2 {
        receiver.wait_for(n, Duration::from_secs(60)).await;
        gw.kill9();
        gw.restart().await;
    }
    // The third claim finds the retries used up: dead-lettered without a third request.
    gw.wait_event_status(&id, "failed", Duration::from_secs(60))
        .await;
    let (_, attempts) = gw
        .get(&format!("/v1/delivery-attempts?event_id={id}"))
        .await;
    let list = attempts["delivery_attempts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only the last claim is recorded: {list:?}");
    let error = list[0]["error"].as_str().unwrap();
    assert!(error.contains("retries used up"), "{error}");
    assert_eq!(list[0]["is_dlq"], 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "not run again after the restart"
    );
}
