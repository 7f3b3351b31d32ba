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
