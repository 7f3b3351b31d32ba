//! One destination's trouble stays its own: per-destination concurrency and rate limits, a
//! backlog that drains at the destination's concurrency (also after a restart), and events
//! whose sender hung up while they were being stored still go out.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Answer, Gateway, Received, Receiver};
use serde_json::Value;

const SOURCE: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#;

/// A Destination `name` to `url` with `extra` spec lines, and a Connection from `t/in` to it.
fn destination(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: {name}, namespace: t}}
spec:
  type: http
  http: {{url: "{url}/hook", timeoutSeconds: 10}}
  retry: {{maxRetries: 20, backoff: fixed, intervals: [200ms]}}
{extra}---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-{name}, namespace: t}}
spec: {{source: in, destination: {name}}}
"#
    )
}

fn slow(delay_ms: u64) -> Answer {
    Answer {
        status: 200,
        headers: Vec::new(),
        delay: Duration::from_millis(delay_ms),
    }
}

async fn send(gw: &Gateway, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let r = gw.ingest("t", "in", &format!(r#"{{"n":{i}}}"#), &[]).await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.json::<Value>().await.unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    ids
}

/// The most requests that arrived within any `window` (with answers that take at least
/// `window`, that is the most that were in flight at once).
fn most_at_once(got: &[Received], window: Duration) -> usize {
    let mut times: Vec<Instant> = got.iter().map(|r| r.at).collect();
    times.sort();
    let mut most = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

fn delivered_ids(receiver: &Receiver) -> HashSet<String> {
    receiver
        .received()
        .iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.header("x-hookstream-event-id"))
        .collect()
}

async fn wait_delivered(receiver: &Receiver, ids: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = delivered_ids(receiver);
        let missing = ids.iter().filter(|id| !got.contains(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} not delivered",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_destination_fills_only_its_own_slots() {
    let slow_receiver = Receiver::start().await;
    slow_receiver.set_default(slow(3_000));
    let fast_receiver = Receiver::start().await;
    let manifests = format!(
        "{SOURCE}{}{}",
        destination("slow", &slow_receiver.url, "  concurrency: 4\n"),
        destination("fast", &fast_receiver.url, "")
    );
    // Fewer gateway slots than events: before per-destination lanes, the slow destination
    // took every one of them.
    let gw = Gateway::start_with(&manifests, &["--max-in-flight", "16"]).await;
    let started = Instant::now();
    let ids = send(&gw, 60).await;
    wait_delivered(&fast_receiver, &ids, Duration::from_secs(5)).await;
    let fast_done = started.elapsed();
    assert!(
        fast_done < Duration::from_millis(2_900),
        "the healthy destination got everything while the slow one still held its first \
         deliveries, not after {fast_done:?}"
    );
    let slow_got = slow_receiver.received();
    assert_eq!(
        slow_got.len(),
        4,
        "the slow destination has its 4 deliveries in flight and no more"
    );
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let slow_got = slow_receiver.received();
    assert!(
        (5..=8).contains(&slow_got.len()),
        "the next 4 went out as slots freed: {}",
        slow_got.len()
    );
    assert!(most_at_once(&slow_got, Duration::from_millis(2_900)) <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_paces_deliveries_in_order() {
    let receiver = Receiver::start().await;
    let manifests = format!(
        "{SOURCE}{}",
        destination("paced", &receiver.url, "  rateLimit: 5\n")
    );
    let gw = Gateway::start(&manifests).await;
    let ids = send(&gw, 15).await;
    wait_delivered(&receiver, &ids, Duration::from_secs(10)).await;
    let got = receiver.received();
    let spread = got.last().unwrap().at.duration_since(got[0].at);
    assert!(
        spread >= Duration::from_millis(1_700),
        "15 deliveries at 5 a second take about 2 s, not {spread:?}"
    );
    assert!(
        most_at_once(&got, Duration::from_millis(950)) <= 6,
        "a burst over the rate"
    );
    let order: Vec<String> = got
        .iter()
        .filter_map(|r| r.header("x-hookstream-event-id"))
        .collect();
    assert_eq!(order, ids, "paced deliveries keep their order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_the_destination_concurrency_also_after_a_restart() {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(503));
    let manifests = format!(
        "{SOURCE}{}",
        destination(
            "down",
            &receiver.url,
            "  concurrency: 3\n  circuitBreaker: {failureThreshold: 3, cooldown: 500ms}\n"
        )
    );
    let mut gw = Gateway::start(&manifests).await;
    let ids = send(&gw, 120).await;
    // The circuit opens and the backlog waits; the destination comes back slowly.
    tokio::time::sleep(Duration::from_millis(800)).await;
    receiver.set_default(slow(150));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // A crash in the middle of the catch-up, and a restart: no flood of retries.
    let killed_at = Instant::now();
    gw.kill9();
    gw.restart().await;
    wait_delivered(&receiver, &ids, Duration::from_secs(40)).await;
    let successes: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    assert!(
        successes.iter().any(|r| r.at < killed_at),
        "the catch-up began before the crash"
    );
    // Answers to requests of the killed process overlap the new ones, so each side of the
    // crash is measured on its own. A request the killed process wrote just before it died
    // can arrive after `killed_at`; it came on one of that process's connections.
    let old_connections: HashSet<SocketAddr> = receiver
        .received()
        .iter()
        .filter(|r| r.at < killed_at)
        .map(|r| r.peer)
        .collect();
    let (before, after): (Vec<Received>, Vec<Received>) = successes
        .iter()
        .cloned()
        .partition(|r| r.at < killed_at || old_connections.contains(&r.peer));
    for (side, got) in [("before", before), ("after", after)] {
        let most = most_at_once(&got, Duration::from_millis(140));
        assert!(
            most <= 3,
            "{side} the crash: {most} in flight, over the destination's 3"
        );
    }
    let mut seen = HashSet::new();
    let duplicates = successes
        .iter()
        .filter_map(|r| r.header("x-hookstream-event-id"))
        .filter(|id| !seen.insert(id.clone()))
        .count();
    assert!(
        duplicates <= 3,
        "a crash repeats at most the deliveries in flight: {duplicates}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_senders_that_hung_up_are_still_delivered() {
    let receiver = Receiver::start().await;
    let manifests = format!("{SOURCE}{}", destination("out", &receiver.url, ""));
    let gw = Gateway::start(&manifests).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    for i in 0..200 {
        let _ = impatient
            .post(format!("{}/v1/ingest/t/in", gw.base))
            .header("content-type", "application/json")
            .body(format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(20_000)))
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, listed) = gw.get("/v1/events?limit=100").await;
    let stored: Vec<String> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    wait_delivered(&receiver, &stored, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_show_every_destination_and_the_oldest_wait() {
    let down = Receiver::start().await;
    down.set_default(Answer::status(503));
    let idle = Receiver::start().await;
    let manifests = format!(
        "{SOURCE}{}{}",
        destination(
            "down",
            &down.url,
            "  circuitBreaker: {failureThreshold: 2, cooldown: 1h}\n"
        ),
        // A destination no route sends to: its queue is empty.
        destination("idle", &idle.url, "").replace(
            "spec: {source: in, destination: idle}",
            "spec: {source: in, destination: idle, filters: [{field: body.never, op: exists}]}"
        )
    );
    let gw = Gateway::start(&manifests).await;
    send(&gw, 5).await;
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let text = gw.metrics().await;
        let depth = |d: &str| {
            common::metric(
                &text,
                "hookstream_gateway_queue_depth",
                &[("destination", d)],
            )
        };
        let age = common::metric(
            &text,
            "hookstream_gateway_queue_oldest_age_seconds",
            &[("destination", "t/down")],
        );
        if depth("t/down") == Some(5.0) && age.is_some_and(|a| a >= 1.0) {
            assert_eq!(
                depth("t/idle"),
                Some(0.0),
                "an empty queue reads 0, not absent"
            );
            let idle_age = common::metric(
                &text,
                "hookstream_gateway_queue_oldest_age_seconds",
                &[("destination", "t/idle")],
            );
            assert_eq!(idle_age, Some(0.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue gauges: {depth:?} {age:?}",
            depth = depth("t/down")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
