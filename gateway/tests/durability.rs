//! Acknowledged events survive a SIGKILL; SIGTERM finishes work in flight; events stored
//! before an upgrade are found and delivered after it.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

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

/// A database made before event ids carried their row number (migrations up to 0005), with
/// an event still waiting for its delivery and one already finished.
async fn database_before_ids_carried_their_number(
    dir: &std::path::Path,
    waiting: &str,
    finished: &str,
) -> String {
    use sqlx::{ConnectOptions, Connection};
    let old = dir.join("migrations");
    std::fs::create_dir_all(&old).unwrap();
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0006" {
            std::fs::copy(&path, old.join(name)).unwrap();
        }
    }
    let url = format!("sqlite://{}", dir.join("hookstream.db").display());
    let mut conn = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(old)
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for (id, status) in [(finished, "received"), (waiting, "processing")] {
        sqlx::query(
            "INSERT INTO events (id, namespace, source, method, path, query, headers, body, content_type, source_ip, received_at, status)
             VALUES (?1, 't', 'in', 'POST', '/v1/ingest/t/in', '', '{}', ?2, 'application/json', '127.0.0.1', ?3, ?4)",
        )
        .bind(id)
        .bind(format!(r#"{{"stored_as":"{id}"}}"#).into_bytes())
        .bind(now - 60_000)
        .bind(status)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, namespace, destination, route_kind, route, state, due_at, created_at, updated_at)
         VALUES ('dlv_0190000000000000000000000001', ?1, 't', 'out', 'connection', 'c', 'pending', ?2, ?2, ?2)",
    )
    .bind(waiting)
    .bind(now - 60_000)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_before_the_upgrade_are_delivered_found_and_retried() {
    if common::postgres_server().is_some() {
        eprintln!("SQLite only: the upgrade is of a SQLite database");
        return;
    }
    // Ids of the old form: milliseconds, then random bits (no number of their own).
    let (waiting, finished) = (
        "evt_01900000000a7f3c9e4b2d1a00c0ffee",
        "evt_01900000000b11aa22bb33cc44dd55ee",
    );
    let dir = tempfile::tempdir().unwrap();
    let url = database_before_ids_carried_their_number(dir.path(), waiting, finished).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start_on(&manifests(&receiver.url), &url).await;

    // The waiting event is delivered, and its status follows.
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let first = &receiver.received()[0];
    assert_eq!(
        first.header("x-hookstream-event-id").as_deref(),
        Some(waiting)
    );
    assert_eq!(first.json()["stored_as"], waiting);
    gw.wait_event_status(waiting, "delivered", Duration::from_secs(10))
        .await;
    let (status, body) = gw.get(&format!("/v1/events/{finished}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "received");

    // A new event is stored beside them, listed first, and found by its id.
    let r = gw.ingest("t", "in", r#"{"new":true}"#, &[]).await;
    assert_eq!(r.status(), 200);
    let new = r.json::<serde_json::Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    gw.wait_event_status(&new, "delivered", Duration::from_secs(10))
        .await;
    let (_, listed) = gw.get("/v1/events?limit=10").await;
    let order: Vec<&str> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [new.as_str(), waiting, finished], "newest first");

    // An old event can be sent again.
    let (status, body) = gw.post(&format!("/v1/events/{waiting}/retry")).await;
    assert!(status.is_success(), "{status} {body}");
    receiver.wait_for(3, Duration::from_secs(10)).await;
    let again = receiver
        .received()
        .iter()
        .filter(|r| r.header("x-hookstream-event-id").as_deref() == Some(waiting))
        .count();
    assert_eq!(again, 2, "the retried old event is delivered a second time");
    let (status, _) = gw
        .get("/v1/events/evt_01900000000a7f3c9e4b2d1a00c0ffef")
        .await;
    assert_eq!(status, 404, "a near miss of an old id finds nothing");
}
