//! Delivery: the headers and signature a destination receives, retry timing for each backoff
//! kind, `Retry-After`, timeouts, dead-lettering, the circuit breaker and the retry endpoints.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{metric, Answer, Gateway, Received, Receiver};
use serde_json::Value;

/// A Source `t/in`, a Destination `t/out` with the given `spec` (YAML, indented by two
/// spaces) and a Connection `t/c` between them.
fn manifests(destination_spec: &str) -> String {
    common::single_route(destination_spec)
}

/// A Destination spec for `url` with a retry policy and a circuit that never opens unless
/// `circuit` says otherwise.
fn http_spec(url: &str, retry: &str, circuit: &str) -> String {
    format!(
        "  type: http\n  http: {{url: \"{url}/hook\", timeoutSeconds: 5}}\n  retry: {retry}\n  circuitBreaker: {circuit}\n"
    )
}

const NO_CIRCUIT: &str = "{failureThreshold: 1000}";

async fn ingest_id(gw: &Gateway, body: &str) -> String {
    let r = gw.ingest("t", "in", body, &[]).await;
    assert_eq!(r.status(), 200, "ingest refused");
    let v: Value = r.json().await.unwrap();
    v["event_id"]
        .as_str()
        .expect("event_id in the ingest answer")
        .to_owned()
}

fn event_id_of(r: &Received) -> String {
    r.header("x-hookstream-event-id")
        .expect("X-Hookstream-Event-Id on every delivery")
}

/// Seconds between consecutive arrivals.
fn gaps(got: &[Received]) -> Vec<f64> {
    got.windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64())
        .collect()
}

async fn circuit_state(gw: &Gateway) -> Value {
    let (code, body) = gw.get("/v1/destinations/t/out/circuit").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body
}

/// Polls the circuit until it is in `state`.
async fn wait_circuit(gw: &Gateway, state: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let body = circuit_state(gw).await;
        if body["state"] == state {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "circuit not {state} within {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hex_hmac(secret: &str, message: &str) -> String {
    common::hmac_sha256_hex(secret, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_carry_hookstream_headers_secret_headers_and_a_valid_signature() {
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500)]);
    let spec = format!(
        r#"  type: http
  http:
    url: "{}/hooks/in?tenant=7"
    method: PUT
    headers: {{X-Team: shop, X-Env: test}}
    headersFrom:
      - name: Authorization
        secretRef: {{name: creds, key: token}}
    timeoutSeconds: 5
  signing: {{secretRef: {{name: creds, key: signing}}}}
  retry: {{maxRetries: 3, backoff: fixed, intervals: [100ms]}}
  circuitBreaker: {NO_CIRCUIT}"#,
        receiver.url
    );
    let secret = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: t}
stringData: {token: "Bearer tok-123", signing: "outbound-signing-key"}
"#;
    let gw = Gateway::start(&format!("{}{secret}", manifests(&spec))).await;

    let body = r#"{"order":"o-1","amount":42}"#;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/ingest/t/in", gw.base))
        .header("content-type", "application/cloudevents+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    for (i, req) in got.iter().enumerate() {
        assert_eq!(req.method, "PUT", "method comes from the Destination");
        assert_eq!(req.uri.path(), "/hooks/in");
        assert_eq!(req.uri.query(), Some("tenant=7"));
        assert_eq!(
            req.header("x-hookstream-event-id").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(
            req.header("x-hookstream-delivery-attempt"),
            Some((i + 1).to_string())
        );
        assert_eq!(
            req.header("content-type").as_deref(),
            Some("application/cloudevents+json")
        );
        assert_eq!(req.header("x-team").as_deref(), Some("shop"));
        assert_eq!(req.header("x-env").as_deref(), Some("test"));
        assert_eq!(
            req.header("authorization").as_deref(),
            Some("Bearer tok-123")
        );
        assert_eq!(
            &req.body[..],
            body.as_bytes(),
            "the original body is delivered unchanged"
        );

        let ts = req
            .header("x-hookstream-timestamp")
            .expect("X-Hookstream-Timestamp");
        let ts_num: i64 = ts.parse().expect("timestamp is unix seconds");
        assert!(
            (ts_num - common::unix_now()).abs() <= 60,
            "timestamp {ts_num} is not now"
        );
        let expected = format!(
            "sha256={}",
            hex_hmac("outbound-signing-key", &format!("{id}.{ts}.{body}"))
        );
        assert_eq!(
            req.header("x-hookstream-signature"),
            Some(expected),
            "signature of attempt {}",
            i + 1
        );
    }

    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    let attempts = event["delivery_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{event}");
    assert_eq!(attempts[0]["status"], "failed");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[1]["status"], "success");
    assert_eq!(attempts[1]["status_code"], 200);
    assert_eq!(
        receiver.received().len(),
        2,
        "no delivery after the success"
    );
}

/// Ingests one event to a destination that always fails with `retry`, returns the delay of
/// the first attempt after ingest and the gaps between the attempts.
async fn measure_backoff(retry: &str, attempts: usize) -> (Duration, Vec<f64>) {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(500));
    let gw = Gateway::start(&manifests(&http_spec(&receiver.url, retry, NO_CIRCUIT))).await;
    let sent = Instant::now();
    let id = ingest_id(&gw, r#"{"n":1}"#).await;
    let got = receiver.wait_for(attempts, Duration::from_secs(15)).await;
    gw.wait_event_status(&id, "failed", Duration::from_secs(5))
        .await;
    assert_eq!(
        receiver.received().len(),
        attempts,
        "maxRetries + 1 attempts in all"
    );
    let numbers: Vec<String> = got
        .iter()
        .map(|r| r.header("x-hookstream-delivery-attempt").unwrap())
        .collect();
    let want: Vec<String> = (1..=attempts).map(|n| n.to_string()).collect();
    assert_eq!(numbers, want);
    (got[0].at.duration_since(sent), gaps(&got))
}

/// Each gap is at least its interval (never early) and at most 150 ms late.
fn assert_gaps(kind: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{kind}: gaps {got:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            *g >= w - 0.03 && *g <= w + 0.15,
            "{kind}: retry {} came after {g:.3}s, expected {w}s (all gaps {got:?})",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_takes_the_next_interval_and_repeats_the_last() {
    let (first, got) = measure_backoff(
        "{maxRetries: 3, backoff: exponential, intervals: [300ms, 600ms]}",
        4,
    )
    .await;
    assert!(
        first < Duration::from_millis(500),
        "first attempt is immediate, took {first:?}"
    );
    assert_gaps("exponential", &got, &[0.3, 0.6, 0.6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_backoff_multiplies_the_first_interval() {
    let (first, got) =
        measure_backoff("{maxRetries: 3, backoff: linear, intervals: [300ms]}", 4).await;
    assert!(
        first < Duration::from_millis(500),
        "first attempt is immediate, took {first:?}"
    );
    assert_gaps("linear", &got, &[0.3, 0.6, 0.9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_backoff_always_waits_the_first_interval() {
    let (first, got) =
        measure_backoff("{maxRetries: 3, backoff: fixed, intervals: [400ms, 5s]}", 4).await;
    assert!(
        first < Duration::from_millis(500),
        "first attempt is immediate, took {first:?}"
    );
    assert_gaps("fixed", &got, &[0.4, 0.4, 0.4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_new_events_does_not_postpone_retries() {
    let flaky = Receiver::start().await;
    flaky.script([Answer::status(500)]);
    let busy = Receiver::start().await;
    let yaml = format!(
        r#"{}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: stream, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: busy, namespace: t}}
spec: {{type: http, http: {{url: "{}/busy"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: s, namespace: t}}
spec: {{source: stream, destination: busy}}
"#,
        manifests(&http_spec(
            &flaky.url,
            "{maxRetries: 3, backoff: fixed, intervals: [300ms]}",
            NO_CIRCUIT
        )),
        busy.url
    );
    let gw = std::sync::Arc::new(Gateway::start(&yaml).await);
    // New events to another destination every 40 ms for 2 s, each delivered at once.
    let streamer = {
        let gw = gw.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                let r = gw
                    .ingest("t", "stream", &format!(r#"{{"i":{i}}}"#), &[])
                    .await;
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = ingest_id(&gw, r#"{"retry":"me"}"#).await;
    let got = flaky.wait_for(2, Duration::from_secs(3)).await;
    let gap = gaps(&got)[0];
    assert!(
        (0.27..=0.45).contains(&gap),
        "the retry due after 300 ms came after {gap:.3}s"
    );
    gw.wait_event_status(&id, "delivered", Duration::from_secs(3))
        .await;
    streamer.await.unwrap();
    busy.wait_for(50, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_dead_letter_the_delivery_and_stop() {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(500));
    let retry = "{maxRetries: 2, backoff: fixed, intervals: [100ms]}";
    let gw = Gateway::start(&manifests(&http_spec(&receiver.url, retry, NO_CIRCUIT))).await;
    let id = ingest_id(&gw, r#"{"doomed":true}"#).await;

    let event = gw
        .wait_event_status(&id, "failed", Duration::from_secs(10))
        .await;
    let attempts = event["delivery_attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 3, "maxRetries 2 means 3 attempts: {event}");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a["status"], "failed");
        assert_eq!(a["status_code"], 500);
        let last = i == attempts.len() - 1;
        assert_eq!(
            a["is_dlq"],
            i64::from(last),
            "only the last attempt dead-letters: {a}"
        );
    }

    let last_id = attempts[2]["id"].as_str().unwrap();
    let (code, detail) = gw.get(&format!("/v1/delivery-attempts/{last_id}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(detail["attempt_number"], 3);
    assert_eq!(
        detail["next_retry_at"],
        Value::Null,
        "no retry after the last attempt"
    );
    let (_, first) = gw
        .get(&format!(
            "/v1/delivery-attempts/{}",
            attempts[0]["id"].as_str().unwrap()
        ))
        .await;
    assert!(
        first["next_retry_at"].is_string(),
        "a failed attempt with retries left shows when the next comes: {first}"
    );

    let (code, dlq) = gw.get("/v1/delivery-attempts?is_dlq=1").await;
    assert_eq!(code, StatusCode::OK);
    let listed = dlq["delivery_attempts"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{dlq}");
    assert_eq!(listed[0]["id"], last_id);
    assert_eq!(listed[0]["event_id"], id.as_str());
    assert_eq!(listed[0]["is_dlq"], 1);

    // Ten retry intervals later nothing more has been sent.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "no attempt after dead-lettering"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "hookstream_gateway_dead_lettered_total",
            &[("destination", "t/out")]
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// A `status` answer with `Retry-After: 1` postpones the retry to one second although the
/// backoff interval is 100 ms.
async fn retry_after_is_honoured(status: u16) {
    let receiver = Receiver::start().await;
    receiver.script([Answer {
        status,
        headers: vec![("Retry-After".into(), "1".into())],
        delay: Duration::ZERO,
    }]);
    let retry = "{maxRetries: 3, backoff: fixed, intervals: [100ms]}";
    let gw = Gateway::start(&manifests(&http_spec(&receiver.url, retry, NO_CIRCUIT))).await;
    let id = ingest_id(&gw, r#"{"busy":true}"#).await;
    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let gap = gaps(&got)[0];
    assert!(
        (0.97..=1.4).contains(&gap),
        "{status} with Retry-After: 1 was retried after {gap:.3}s"
    );
    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    assert_eq!(event["delivery_attempts"][0]["status_code"], status);
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_delays_the_next_attempt() {
    retry_after_is_honoured(429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_503_delays_the_next_attempt() {
    retry_after_is_honoured(503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_slower_than_its_timeout_is_a_failed_attempt() {
    let receiver = Receiver::start().await;
    receiver.script([Answer {
        status: 200,
        headers: Vec::new(),
        delay: Duration::from_millis(3000),
    }]);
    let spec = format!(
        "  type: http\n  http: {{url: \"{}/slow\", timeoutSeconds: 1}}\n  retry: {{maxRetries: 1, backoff: fixed, intervals: [100ms]}}\n",
        receiver.url
    );
    let gw = Gateway::start(&manifests(&spec)).await;
    let id = ingest_id(&gw, r#"{"slow":1}"#).await;

    let got = receiver.wait_for(2, Duration::from_secs(6)).await;
    let gap = gaps(&got)[0];
    assert!(
        (1.0..2.0).contains(&gap),
        "the retry follows the 1 s timeout plus 100 ms, not the 3 s answer: {gap:.3}s"
    );
    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    let first = &event["delivery_attempts"][0];
    assert_eq!(first["status"], "failed", "{event}");
    assert_eq!(
        first["status_code"],
        Value::Null,
        "no response came: {first}"
    );
    let error = first["error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "error names the timeout: {first}"
    );
    let latency = first["latency_ms"].as_i64().unwrap();
    assert!(
        (900..2000).contains(&latency),
        "the attempt lasted the timeout: {latency} ms"
    );
    assert_eq!(event["delivery_attempts"][1]["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_opens_holds_deliveries_probes_once_and_drains_in_order_when_closed() {
    let receiver = Receiver::start().await;
    let slow_failure = Answer {
        status: 500,
        headers: Vec::new(),
        delay: Duration::from_millis(800),
    };
    // Three failures open the circuit; the first probe fails slowly; everything after succeeds.
    receiver.script([
        Answer::status(500),
        Answer::status(500),
        Answer::status(500),
        slow_failure,
    ]);
    let retry = "{maxRetries: 20, backoff: fixed, intervals: [100ms]}";
    let circuit = "{failureThreshold: 3, cooldown: 2s}";
    // One delivery in flight at a time: waiting deliveries then also arrive in order (with
    // more, they start in order and run side by side).
    let spec = format!(
        "{}  concurrency: 1\n",
        http_spec(&receiver.url, retry, circuit)
    );
    let gw = Gateway::start(&manifests(&spec)).await;

    let first = ingest_id(&gw, r#"{"n":0}"#).await;
    receiver.wait_for(3, Duration::from_secs(5)).await;
    let open = wait_circuit(&gw, "open", Duration::from_secs(2)).await;
    assert_eq!(open["failure_count"], 3, "{open}");
    assert!(open["opened_at"].is_string(), "{open}");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "hookstream_gateway_circuit_state",
            &[("destination", "t/out")]
        ),
        Some(1.0)
    );

    // Let the first event's next retry fall due, so it is the oldest waiting delivery.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut queued = Vec::new();
    for n in 1..=5 {
        queued.push(ingest_id(&gw, &format!(r#"{{"n":{n}}}"#)).await);
    }
    assert_eq!(circuit_state(&gw).await["state"], "open");
    assert_eq!(
        receiver.received().len(),
        3,
        "nothing is attempted while the circuit is open"
    );

    // After the cooldown exactly one probe goes out; it is in flight for 800 ms.
    let got = receiver.wait_for(4, Duration::from_secs(5)).await;
    let wait = got[3].at.duration_since(got[2].at).as_secs_f64();
    assert!(
        wait >= 1.9,
        "the probe waited for the 2 s cooldown, not {wait:.3}s"
    );
    assert_eq!(
        event_id_of(&got[3]),
        first,
        "the probe is the oldest waiting delivery"
    );
    let half = circuit_state(&gw).await;
    assert_eq!(half["state"], "half_open", "{half}");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "hookstream_gateway_circuit_state",
            &[("destination", "t/out")]
        ),
        Some(2.0)
    );
    assert_eq!(receiver.received().len(), 4, "one probe at a time");

    // The probe fails: open again for another cooldown, still nothing else sent.
    wait_circuit(&gw, "open", Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 4);

    // The second probe succeeds, the circuit closes and every waiting delivery drains.
    let closed = wait_circuit(&gw, "closed", Duration::from_secs(6)).await;
    assert_eq!(closed["failure_count"], 0, "{closed}");
    let got = receiver.wait_for(10, Duration::from_secs(5)).await;
    let probe_wait = got[4].at.duration_since(got[3].at).as_secs_f64();
    assert!(
        probe_wait >= 0.8 + 1.9,
        "second probe came {probe_wait:.3}s after the first"
    );
    for id in queued.iter().chain([&first]) {
        gw.wait_event_status(id, "delivered", Duration::from_secs(5))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = receiver.received();
    let mut successes: HashMap<String, usize> = HashMap::new();
    for r in all.iter().filter(|r| r.status == 200) {
        *successes.entry(event_id_of(r)).or_default() += 1;
    }
    for id in queued.iter().chain([&first]) {
        assert_eq!(
            successes.get(id),
            Some(&1),
            "event {id} delivered exactly once"
        );
    }
    assert_eq!(
        all.len(),
        4 + 6,
        "3 failures, 1 failed probe, 6 successes: {}",
        all.len()
    );
    // The events that waited behind the open circuit arrive in the order they were received.
    let order: Vec<String> = all[4..]
        .iter()
        .map(event_id_of)
        .filter(|id| queued.contains(id))
        .collect();
    assert_eq!(order, queued, "queued events drain in order of arrival");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "hookstream_gateway_circuit_state",
            &[("destination", "t/out")]
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_reset_closes_an_open_circuit_and_deliveries_resume() {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(500));
    let retry = "{maxRetries: 20, backoff: fixed, intervals: [100ms]}";
    let circuit = "{failureThreshold: 2, cooldown: 1h}";
    let gw = Gateway::start(&manifests(&http_spec(&receiver.url, retry, circuit))).await;

    let a = ingest_id(&gw, r#"{"n":"a"}"#).await;
    receiver.wait_for(2, Duration::from_secs(5)).await;
    wait_circuit(&gw, "open", Duration::from_secs(2)).await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "hookstream_gateway_circuit_state",
            &[("destination", "t/out")]
        ),
        Some(1.0),
        "{metrics}"
    );
    let b = ingest_id(&gw, r#"{"n":"b"}"#).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "an open circuit holds deliveries"
    );

    receiver.set_default(Answer::status(200));
    let (code, reset) = gw.post("/v1/destinations/t/out/circuit/reset").await;
    assert_eq!(code, StatusCode::OK, "{reset}");
    assert_eq!(reset["state"], "closed");
    assert_eq!(reset["failure_count"], 0);
    assert_eq!(circuit_state(&gw).await["state"], "closed");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "hookstream_gateway_circuit_state",
            &[("destination", "t/out")]
        ),
        Some(0.0),
        "{metrics}"
    );

    // Without waiting for the one-hour cooldown, both events are delivered.
    gw.wait_event_status(&a, "delivered", Duration::from_secs(3))
        .await;
    gw.wait_event_status(&b, "delivered", Duration::from_secs(3))
        .await;

    let (code, missing) = gw.get("/v1/destinations/t/nope/circuit").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("t/nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_lettered_attempt_delivers_it_once_the_receiver_is_fixed() {
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(500));
    let retry = "{maxRetries: 1, backoff: fixed, intervals: [100ms]}";
    let gw = Gateway::start(&manifests(&http_spec(&receiver.url, retry, NO_CIRCUIT))).await;
    let id = ingest_id(&gw, r#"{"again":true}"#).await;
    let event = gw
        .wait_event_status(&id, "failed", Duration::from_secs(5))
        .await;
    let dead = event["delivery_attempts"][1].clone();
    assert_eq!(dead["is_dlq"], 1, "{event}");
    assert_eq!(receiver.received().len(), 2);

    receiver.set_default(Answer::status(200));
    let (code, body) = gw
        .post(&format!(
            "/v1/delivery-attempts/{}/retry",
            dead["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["delivery_attempt"]["event_id"], id.as_str());
    assert_eq!(body["delivery_attempt"]["status"], "pending");

    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    let attempts = event["delivery_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{event}");
    assert_eq!(attempts[2]["status"], "success");
    assert_eq!(attempts[2]["attempt_number"], 3);
    let got = receiver.wait_for(3, Duration::from_secs(1)).await;
    assert_eq!(
        got[2].header("x-hookstream-event-id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        got[2].header("x-hookstream-delivery-attempt").as_deref(),
        Some("3")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "one delivery per manual retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_an_event_redelivers_it_through_every_matching_route() {
    let one = Receiver::start().await;
    let two = Receiver::start().await;
    let unmatched = Receiver::start().await;
    let yaml = format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: one, namespace: t}}
spec: {{type: http, http: {{url: "{}/a"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: two, namespace: t}}
spec: {{type: http, http: {{url: "{}/b"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: three, namespace: t}}
spec: {{type: http, http: {{url: "{}/c"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-one, namespace: t}}
spec: {{source: in, destination: one}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-two, namespace: t}}
spec: {{source: in, destination: two, filters: [{{field: body.kind, op: eq, value: order}}]}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-three, namespace: t}}
spec: {{source: in, destination: three, filters: [{{field: body.kind, op: eq, value: refund}}]}}
"#,
        one.url, two.url, unmatched.url
    );
    let gw = Gateway::start(&yaml).await;
    let id = ingest_id(&gw, r#"{"kind":"order"}"#).await;
    gw.wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    one.wait_for(1, Duration::from_secs(2)).await;
    two.wait_for(1, Duration::from_secs(2)).await;

    let (code, body) = gw.post(&format!("/v1/events/{id}/retry")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["errors"], serde_json::json!([]), "{body}");
    let mut retried: Vec<(String, String)> = body["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["destination_id"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    retried.sort();
    assert_eq!(
        retried,
        vec![
            ("t/one".to_owned(), "queued".to_owned()),
            ("t/two".to_owned(), "queued".to_owned())
        ]
    );

    let got_one = one.wait_for(2, Duration::from_secs(5)).await;
    let got_two = two.wait_for(2, Duration::from_secs(5)).await;
    for got in [&got_one, &got_two] {
        assert_eq!(
            got[1].header("x-hookstream-event-id").as_deref(),
            Some(id.as_str())
        );
        assert_eq!(got[1].json(), serde_json::json!({"kind": "order"}));
    }
    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    assert_eq!(
        event["delivery_attempts"].as_array().unwrap().len(),
        4,
        "original attempts are kept: {event}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        unmatched.received().is_empty(),
        "a route whose filter does not match gets nothing"
    );
    assert_eq!(one.received().len(), 2);
    assert_eq!(two.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_endpoints_answer_404_for_unknown_ids() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&manifests(&http_spec(
        &receiver.url,
        "{maxRetries: 0}",
        NO_CIRCUIT,
    )))
    .await;
    for path in [
        "/v1/events/evt_00000000000000000000000000000000/retry",
        "/v1/delivery-attempts/da_00000000000000000000000000000000/retry",
    ] {
        let (code, body) = gw.post(path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["status"], 404, "{body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("not found")),
            "{body}"
        );
        assert!(
            body["request_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("req_")),
            "{body}"
        );
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_new_events_does_not_keep_a_closed_circuit_draining() {
    let receiver = Receiver::start().await;
    // One failure opens the circuit; afterwards every answer takes 100 ms, so deliveries sent
    // one at a time manage at most ten a second.
    receiver.script([Answer::status(500)]);
    receiver.set_default(Answer {
        status: 200,
        headers: Vec::new(),
        delay: Duration::from_millis(100),
    });
    let retry = "{maxRetries: 20, backoff: fixed, intervals: [100ms]}";
    let circuit = "{failureThreshold: 1, cooldown: 500ms}";
    let gw = Gateway::start(&manifests(&http_spec(&receiver.url, retry, circuit))).await;
    ingest_id(&gw, r#"{"n":"opens"}"#).await;
    wait_circuit(&gw, "open", Duration::from_secs(2)).await;
    wait_circuit(&gw, "closed", Duration::from_secs(5)).await;

    // Sixty events in three seconds after the circuit closed. Sent one at a time they would
    // need six seconds; in parallel, as a closed circuit should send them once the backlog
    // of the outage is gone, each arrives about 100 ms after it was sent.
    let started = std::time::Instant::now();
    let mut sent = Vec::new();
    for n in 0..60 {
        sent.push(ingest_id(&gw, &format!(r#"{{"n":{n}}}"#)).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &sent {
        gw.wait_event_status(id, "delivered", Duration::from_secs(10))
            .await;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(4500),
        "60 events over 3 s took {took:?} to deliver: new events were still sent one at a time"
    );
}
