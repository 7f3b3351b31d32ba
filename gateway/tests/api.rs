//! The management API: keys, pagination, filters, the shapes of events and attempts,
//! redaction of credentials, and the Prometheus metrics.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{metric, Answer, Gateway, Receiver, API_KEY};
use serde_json::{json, Value};

const SOURCE_ONLY: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#;

async fn ingest_id(gw: &Gateway, ns: &str, source: &str, body: &str) -> String {
    let r = gw.ingest(ns, source, body, &[]).await;
    assert_eq!(r.status(), 200, "ingest to {ns}/{source} refused");
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `id` of every item of a list answer's `key` array.
fn ids(body: &Value, key: &str) -> Vec<String> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not a list: {body}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn set(list: &[&String]) -> HashSet<String> {
    list.iter().map(|s| (*s).clone()).collect()
}

async fn list_ids(gw: &Gateway, path: &str, key: &str) -> HashSet<String> {
    let (code, body) = gw.get(path).await;
    assert_eq!(code, StatusCode::OK, "{path}: {body}");
    assert_eq!(
        body["has_more"], false,
        "{path}: more than one page: {body}"
    );
    ids(&body, key).into_iter().collect()
}

/// Asserts a JSON error of the documented shape and returns its message.
fn error_message(code: StatusCode, body: &Value, want: StatusCode) -> String {
    assert_eq!(code, want, "{body}");
    assert_eq!(body["status"], want.as_u16(), "{body}");
    assert!(
        body["request_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("req_")),
        "{body}"
    );
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"))
        .to_owned()
}

/// A header of a JSON headers object, by case-insensitive name.
fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_valid_key_and_ingest_health_and_metrics_do_not() {
    let gw = Gateway::start(SOURCE_ONLY).await;
    let http = reqwest::Client::new();
    let paths = [
        ("GET", "/v1/events"),
        ("GET", "/v1/events/evt_00000000000000000000000000000000"),
        ("GET", "/v1/delivery-attempts"),
        ("GET", "/v1/destinations/t/out/circuit"),
        ("POST", "/v1/destinations/t/out/circuit/reset"),
        (
            "POST",
            "/v1/events/evt_00000000000000000000000000000000/retry",
        ),
    ];
    let wrong = format!("hs_test_{}", "f".repeat(64));
    for (method, path) in paths {
        let url = format!("{}{path}", gw.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let cases: [(Option<&str>, &str); 3] = [
            (None, "x-api-key"),
            (Some(wrong.as_str()), "invalid"),
            (Some("hs_live_short"), "invalid"),
        ];
        for (key, words) in cases {
            let mut req = http.request(method.clone(), &url);
            if let Some(key) = key {
                req = req.header("x-api-key", key);
            }
            let r = req.send().await.unwrap();
            let code = StatusCode::from_u16(r.status().as_u16()).unwrap();
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"));
            let body: Value = r.json().await.unwrap();
            let message = error_message(code, &body, StatusCode::UNAUTHORIZED);
            assert!(
                message.to_ascii_lowercase().contains(words),
                "{path} with key {key:?}: {message}"
            );
        }
    }
    let r = http
        .get(format!("{}/v1/events", gw.base))
        .header("x-api-key", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Public endpoints.
    let r = http
        .post(format!("{}/v1/ingest/t/in", gw.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "ingest needs no key");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = http.get(format!("{}{path}", gw.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} needs no key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_list_pages_newest_first_without_gaps_or_duplicates() {
    let gw = Gateway::start(SOURCE_ONLY).await;
    let mut sent = Vec::new();
    for i in 0..120 {
        sent.push(ingest_id(&gw, "t", "in", &format!(r#"{{"i":{i}}}"#)).await);
    }
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut path = "/v1/events?limit=50".to_owned();
    let mut pages = Vec::new();
    loop {
        let (code, body) = gw.get(&path).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let page = ids(&body, "events");
        pages.push((page.len(), body["has_more"].clone()));
        seen.extend(page);
        match body["cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(body["has_more"], true);
                path = format!("/v1/events?limit=50&cursor={cursor}");
            }
            None => {
                assert_eq!(body["cursor"], Value::Null, "{body}");
                break;
            }
        }
        assert!(pages.len() < 5, "pagination does not end");
    }
    assert_eq!(
        pages,
        vec![(50, json!(true)), (50, json!(true)), (20, json!(false))]
    );
    assert_eq!(
        seen, newest_first,
        "pages are newest first, without gaps or duplicates"
    );

    let (_, default_page) = gw.get("/v1/events").await;
    assert_eq!(
        ids(&default_page, "events"),
        newest_first[..50].to_vec(),
        "the default page is 50"
    );

    for (query, words) in [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=c2VxOmFiYw", "cursor"),
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("limit=ten", "limit"),
    ] {
        let (code, body) = gw.get(&format!("/v1/events?{query}")).await;
        let message = error_message(code, &body, StatusCode::BAD_REQUEST);
        assert!(message.contains(words), "{query}: {message}");
    }
    let (code, body) = gw.get("/v1/events?limit=500").await;
    assert!(
        error_message(code, &body, StatusCode::BAD_REQUEST).contains("100"),
        "the message gives the range"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_list_filters_by_source_status_time_and_search() {
    let ok = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.set_default(Answer::status(500));
    let yaml = format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: a, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: b, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: c, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: a, namespace: u}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: ok, namespace: t}}
spec: {{type: http, http: {{url: "{}/ok"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: bad, namespace: t}}
spec: {{type: http, http: {{url: "{}/bad"}}, retry: {{maxRetries: 0}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: a-ok, namespace: t}}
spec: {{source: a, destination: ok}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: b-bad, namespace: t}}
spec: {{source: b, destination: bad}}
"#,
        ok.url, bad.url
    );
    let gw = Gateway::start(&yaml).await;
    let a1 = ingest_id(&gw, "t", "a", r#"{"note":"needle-7f3 in a haystack"}"#).await;
    let b1 = ingest_id(&gw, "t", "b", r#"{"note":"plain"}"#).await;
    let c1 = ingest_id(&gw, "t", "c", r#"{"note":"plain"}"#).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let middle = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a2 = ingest_id(&gw, "t", "a", r#"{"note":"second"}"#).await;
    let ua1 = ingest_id(&gw, "u", "a", r#"{"note":"other namespace"}"#).await;
    gw.wait_event_status(&a1, "delivered", Duration::from_secs(5))
        .await;
    gw.wait_event_status(&a2, "delivered", Duration::from_secs(5))
        .await;
    gw.wait_event_status(&b1, "failed", Duration::from_secs(5))
        .await;
    gw.wait_event_status(&c1, "received", Duration::from_secs(1))
        .await;

    let q = |p: &str| format!("/v1/events?{p}");
    assert_eq!(
        list_ids(&gw, &q("source=t/a"), "events").await,
        set(&[&a1, &a2])
    );
    assert_eq!(
        list_ids(&gw, &q("source=u/a"), "events").await,
        set(&[&ua1])
    );
    assert_eq!(
        list_ids(&gw, &q("source=t/nobody"), "events").await,
        set(&[])
    );
    assert_eq!(
        list_ids(&gw, &q("status=delivered"), "events").await,
        set(&[&a1, &a2])
    );
    assert_eq!(
        list_ids(&gw, &q("status=failed"), "events").await,
        set(&[&b1])
    );
    assert_eq!(
        list_ids(&gw, &q("status=received"), "events").await,
        set(&[&c1, &ua1])
    );
    assert_eq!(
        list_ids(&gw, &q("source=t/a&status=failed"), "events").await,
        set(&[])
    );

    let at = middle.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        list_ids(&gw, &q(&format!("after={at}")), "events").await,
        set(&[&a2, &ua1])
    );
    assert_eq!(
        list_ids(&gw, &q(&format!("before={at}")), "events").await,
        set(&[&a1, &b1, &c1])
    );
    // The same instant written with an offset.
    let shifted = middle.with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap());
    let at_offset = shifted
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
        .replace('+', "%2B");
    assert_eq!(
        list_ids(&gw, &q(&format!("after={at_offset}")), "events").await,
        set(&[&a2, &ua1])
    );
    assert_eq!(
        list_ids(&gw, &q(&format!("after={at}&source=t/a")), "events").await,
        set(&[&a2]),
        "filters combine"
    );

    assert_eq!(
        // Ids start with their creation time, so a prefix must reach into the random part.
        list_ids(&gw, &q(&format!("search={}", &a1[..24])), "events").await,
        set(&[&a1]),
        "id prefix"
    );
    assert_eq!(
        list_ids(&gw, &q("search=needle-7f3"), "events").await,
        set(&[&a1]),
        "body text"
    );
    assert_eq!(
        list_ids(&gw, &q("search=namespace"), "events").await,
        set(&[&ua1])
    );
    assert_eq!(
        list_ids(&gw, &q("search=%25"), "events").await,
        set(&[]),
        "% is literal, not a wildcard"
    );
    assert_eq!(
        list_ids(&gw, &q("search=_"), "events").await,
        set(&[]),
        "_ is literal, not a wildcard"
    );

    for (query, words) in [
        ("status=lost", "status"),
        ("after=yesterday", "after"),
        ("before=2026-13-01", "before"),
    ] {
        let (code, body) = gw.get(&q(query)).await;
        let message = error_message(code, &body, StatusCode::BAD_REQUEST);
        assert!(message.contains(words), "{query}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_list_filters_by_event_destination_status_and_dlq_and_pages() {
    let ok = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.set_default(Answer::status(500));
    let yaml = format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: ok, namespace: t}}
spec: {{type: http, http: {{url: "{}/ok"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: bad, namespace: t}}
spec:
  type: http
  http: {{url: "{}/bad"}}
  retry: {{maxRetries: 2, backoff: fixed, intervals: [50ms]}}
  circuitBreaker: {{failureThreshold: 1000}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-ok, namespace: t}}
spec: {{source: in, destination: ok}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-bad, namespace: t}}
spec: {{source: in, destination: bad}}
"#,
        ok.url, bad.url
    );
    let gw = Gateway::start(&yaml).await;
    let e1 = ingest_id(&gw, "t", "in", r#"{"n":1}"#).await;
    let e2 = ingest_id(&gw, "t", "in", r#"{"n":2}"#).await;
    gw.wait_event_status(&e1, "failed", Duration::from_secs(5))
        .await;
    gw.wait_event_status(&e2, "failed", Duration::from_secs(5))
        .await;

    let list = |p: &str| format!("/v1/delivery-attempts?{p}");
    let (code, all) = gw.get(&list("")).await;
    assert_eq!(code, StatusCode::OK);
    let all = all["delivery_attempts"].as_array().unwrap().clone();
    assert_eq!(all.len(), 8, "2 successes and 2 x 3 failures");
    for a in &all {
        assert!(a["id"].as_str().unwrap().starts_with("da_"), "{a}");
        assert!(is_rfc3339(&a["attempted_at"]), "{a}");
    }

    for (event, other) in [(&e1, &e2), (&e2, &e1)] {
        let (_, body) = gw.get(&list(&format!("event_id={event}"))).await;
        let items = body["delivery_attempts"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{body}");
        assert!(items
            .iter()
            .all(|a| a["event_id"] == event.as_str() && a["event_id"] != other.as_str()));
    }
    let (_, body) = gw.get(&list("destination=t/ok")).await;
    let items = body["delivery_attempts"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        items
            .iter()
            .all(|a| a["destination_id"] == "t/ok" && a["status"] == "success"),
        "{body}"
    );
    let (_, body) = gw.get(&list("destination=t/bad")).await;
    assert_eq!(body["delivery_attempts"].as_array().unwrap().len(), 6);
    let (_, body) = gw.get(&list("status=success")).await;
    assert_eq!(body["delivery_attempts"].as_array().unwrap().len(), 2);
    let (_, body) = gw.get(&list("status=failed")).await;
    let failed = body["delivery_attempts"].as_array().unwrap();
    assert_eq!(failed.len(), 6);
    assert!(
        failed
            .iter()
            .all(|a| a["status_code"] == 500 && a["destination_id"] == "t/bad"),
        "{body}"
    );

    let (_, body) = gw.get(&list("is_dlq=1")).await;
    let dlq = body["delivery_attempts"].as_array().unwrap();
    assert_eq!(dlq.len(), 2, "{body}");
    assert!(
        dlq.iter().all(|a| a["is_dlq"] == 1
            && a["attempt_number"] == 3
            && a["destination_id"] == "t/bad"),
        "{body}"
    );
    let (_, body) = gw
        .get(&list(&format!("is_dlq=1&event_id={e2}&destination=t/bad")))
        .await;
    let one = body["delivery_attempts"].as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["event_id"], e2.as_str());
    let (_, body) = gw.get(&list("is_dlq=1&destination=t/ok")).await;
    assert_eq!(body["delivery_attempts"], json!([]));

    // Pages of 4 over the 6 failures: no duplicates, no gaps, newest first.
    let (_, first) = gw.get(&list("destination=t/bad&limit=4")).await;
    assert_eq!(first["has_more"], true, "{first}");
    let cursor = first["cursor"].as_str().unwrap();
    let (_, second) = gw
        .get(&list(&format!("destination=t/bad&limit=4&cursor={cursor}")))
        .await;
    assert_eq!(second["has_more"], false);
    assert_eq!(second["cursor"], Value::Null);
    let mut paged = ids(&first, "delivery_attempts");
    paged.extend(ids(&second, "delivery_attempts"));
    let everything: Vec<String> = all
        .iter()
        .filter(|a| a["destination_id"] == "t/bad")
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paged, everything, "paging matches the full list, in order");
    let times: Vec<String> = [first, second]
        .iter()
        .flat_map(|p| p["delivery_attempts"].as_array().unwrap().clone())
        .map(|a| a["attempted_at"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    for (query, words) in [
        ("status=maybe", "status"),
        ("is_dlq=perhaps", "is_dlq"),
        ("cursor=%3F%3F", "cursor"),
        ("limit=101", "limit"),
    ] {
        let (code, body) = gw.get(&list(query)).await;
        let message = error_message(code, &body, StatusCode::BAD_REQUEST);
        assert!(message.contains(words), "{query}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_and_attempt_details_show_everything_but_credentials() {
    let receiver = Receiver::start().await;
    receiver.script([Answer {
        status: 500,
        headers: vec![("X-Receiver".into(), "first".into())],
        delay: Duration::ZERO,
    }]);
    receiver.set_default(Answer {
        status: 202,
        headers: vec![("X-Receiver".into(), "second".into())],
        delay: Duration::ZERO,
    });
    let yaml = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: out-token, namespace: t}}
stringData: {{value: "tok-DETAIL-SECRET-91"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec:
  type: http
  http:
    url: "{}/hook"
    headers: {{X-Static: visible}}
    headersFrom: [{{name: X-Api-Token, secretRef: {{name: out-token, key: value}}}}]
  retry: {{maxRetries: 2, backoff: fixed, intervals: [100ms]}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: t}}
spec: {{source: in, destination: out}}
"#,
        receiver.url
    );
    let gw = Gateway::start(&yaml).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/ingest/t/in?a=1&b=two", gw.base))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sender-credential-55")
        .header("cookie", "session=cookie-credential-66")
        .header("x-custom", "kept")
        .body(r#"{"type":"order.created","data":{"id":"ord_1","amount":4999}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("evt_") && id.len() == 36, "{id}");

    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["source_id"], "t/in");
    assert_eq!(event["method"], "POST");
    assert_eq!(
        event["body"],
        json!({"type": "order.created", "data": {"id": "ord_1", "amount": 4999}})
    );
    assert_eq!(event["query"], json!({"a": "1", "b": "two"}));
    assert!(is_rfc3339(&event["received_at"]), "{event}");
    let headers = &event["headers"];
    assert_eq!(
        header(headers, "authorization"),
        Some("[redacted]"),
        "{headers}"
    );
    assert_eq!(header(headers, "cookie"), Some("[redacted]"), "{headers}");
    assert_eq!(header(headers, "x-custom"), Some("kept"));
    assert_eq!(header(headers, "content-type"), Some("application/json"));
    let text = event.to_string();
    assert!(
        !text.contains("sender-credential-55") && !text.contains("cookie-credential-66"),
        "{text}"
    );

    let attempts = event["delivery_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{event}");
    for (a, (status, code)) in attempts.iter().zip([("failed", 500), ("success", 202)]) {
        assert_eq!(a["status"], status);
        assert_eq!(a["status_code"], code);
        assert!(
            a["latency_ms"]
                .as_i64()
                .is_some_and(|l| (0..5000).contains(&l)),
            "{a}"
        );
        assert!(is_rfc3339(&a["attempted_at"]), "{a}");
        assert_eq!(a["destination_id"], "t/out");
    }

    let (code, first) = gw
        .get(&format!(
            "/v1/delivery-attempts/{}",
            attempts[0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(first["attempt_number"], 1);
    assert_eq!(first["event_id"], id.as_str());
    assert!(
        is_rfc3339(&first["next_retry_at"]),
        "a failed attempt says when the retry is due: {first}"
    );
    assert_eq!(
        header(&first["response_headers"], "x-receiver"),
        Some("first"),
        "{first}"
    );
    assert!(
        first["error"].as_str().is_some_and(|e| e.contains("500")),
        "{first}"
    );

    let (code, second) = gw
        .get(&format!(
            "/v1/delivery-attempts/{}",
            attempts[1]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(second["attempt_number"], 2);
    assert_eq!(second["status"], "success");
    assert_eq!(second["status_code"], 202);
    assert_eq!(second["next_retry_at"], Value::Null);
    assert_eq!(second["response_body"], "ok");
    assert_eq!(
        header(&second["response_headers"], "x-receiver"),
        Some("second"),
        "{second}"
    );
    let sent = &second["request_headers"];
    assert_eq!(header(sent, "x-api-token"), Some("[redacted]"), "{sent}");
    assert_eq!(header(sent, "x-static"), Some("visible"));
    assert_eq!(header(sent, "x-hookstream-event-id"), Some(id.as_str()));
    assert_eq!(header(sent, "x-hookstream-delivery-attempt"), Some("2"));
    assert!(
        !second.to_string().contains("tok-DETAIL-SECRET-91"),
        "{second}"
    );
    // The destination did get the real value.
    assert_eq!(
        receiver.received()[1].header("x-api-token").as_deref(),
        Some("tok-DETAIL-SECRET-91")
    );

    for path in [
        "/v1/events/evt_ffffffffffffffffffffffffffffffff",
        "/v1/delivery-attempts/da_ffffffffffffffffffffffffffffffff",
    ] {
        let (code, body) = gw.get(path).await;
        let message = error_message(code, &body, StatusCode::NOT_FOUND);
        assert!(message.contains("not found"), "{path}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_attempts_latency_dead_letters_and_queue_depth() {
    let ok = Receiver::start().await;
    let dead = Receiver::start().await;
    dead.set_default(Answer::status(500));
    let held = Receiver::start().await;
    held.set_default(Answer::status(503));
    let yaml = format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: ok, namespace: t}}
spec: {{type: http, http: {{url: "{}/ok"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: dead, namespace: t}}
spec: {{type: http, http: {{url: "{}/dead"}}, retry: {{maxRetries: 0}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: held, namespace: t}}
spec: {{type: http, http: {{url: "{}/held"}}, retry: {{maxRetries: 5, intervals: [1h]}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-ok, namespace: t}}
spec: {{source: in, destination: ok}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-dead, namespace: t}}
spec: {{source: in, destination: dead}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-held, namespace: t}}
spec: {{source: in, destination: held}}
"#,
        ok.url, dead.url, held.url
    );
    let gw = Gateway::start(&yaml).await;
    for i in 0..3 {
        ingest_id(&gw, "t", "in", &format!(r#"{{"i":{i}}}"#)).await;
    }
    ok.wait_for(3, Duration::from_secs(5)).await;
    dead.wait_for(3, Duration::from_secs(5)).await;
    held.wait_for(3, Duration::from_secs(5)).await;

    let r = reqwest::get(format!("{}/metrics", gw.base)).await.unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    // Poll until the attempts are recorded and the queue gauge has been refreshed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = gw.metrics().await;
        let depth = metric(
            &text,
            "hookstream_gateway_queue_depth",
            &[("destination", "t/held")],
        );
        let dead_count = metric(
            &text,
            "hookstream_gateway_dead_lettered_total",
            &[("destination", "t/dead")],
        );
        if depth == Some(3.0) && dead_count == Some(3.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "queue depth {depth:?}, dead-lettered {dead_count:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.contains("# TYPE hookstream_gateway_delivery_attempts_total counter"),
        "{text}"
    );
    let attempts = |dest: &str, result: &str| {
        metric(
            &text,
            "hookstream_gateway_delivery_attempts_total",
            &[("destination", dest), ("result", result)],
        )
    };
    assert_eq!(attempts("t/ok", "success"), Some(3.0), "{text}");
    assert_eq!(attempts("t/ok", "failure"), None);
    assert_eq!(attempts("t/dead", "failure"), Some(3.0));
    assert_eq!(attempts("t/held", "failure"), Some(3.0));
    assert_eq!(attempts("t/dead", "success"), None);
    let bucket = |le: &str| {
        metric(
            &text,
            "hookstream_gateway_delivery_duration_seconds_bucket",
            &[("destination", "t/ok"), ("le", le)],
        )
    };
    assert_eq!(bucket("+Inf"), Some(3.0), "{text}");
    assert_eq!(
        bucket("30"),
        Some(3.0),
        "three fast attempts are under 30 s"
    );
    assert_eq!(
        metric(
            &text,
            "hookstream_gateway_delivery_duration_seconds_count",
            &[("destination", "t/ok")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "hookstream_gateway_dead_lettered_total",
            &[("destination", "t/held")]
        ),
        None
    );
    assert_eq!(
        metric(
            &text,
            "hookstream_gateway_queue_depth",
            &[("destination", "t/ok")]
        ),
        Some(0.0),
        "nothing waits for t/ok: the gauge reads 0, it is not absent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_templates_are_listed_with_what_each_sets() {
    let gw = Gateway::start("").await;
    let (status, body) = gw.get("/v1/sources/templates").await;
    assert_eq!(status, 200, "{body}");
    let templates = body["templates"].as_array().unwrap();
    let ids: Vec<&str> = templates
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "stripe", "shopify", "github", "slack", "twilio", "sendgrid", "intercom", "linear",
            "clerk", "svix", "paddle", "resend", "postmark", "typeform", "custom"
        ]
    );
    let stripe = &templates[0];
    assert_eq!(stripe["name"], "Stripe");
    assert_eq!(stripe["verification_type"], "stripe");
    assert_eq!(stripe["sets"]["verification"]["header"], "stripe-signature");
    assert_eq!(stripe["sets"]["verification"]["tolerance"], "300s");
    assert_eq!(
        stripe["sets"]["dedup"],
        serde_json::json!({"strategy": "body-field", "field": "id"})
    );
    let github = &templates[2];
    assert_eq!(github["verification_type"], "hmac_sha256");
    assert_eq!(github["sets"]["verification"]["prefix"], "sha256=");
    assert!(github["docs_url"]
        .as_str()
        .unwrap()
        .starts_with("https://docs.github.com/"));
    assert_eq!(
        templates[14]["sets"]["verification"],
        serde_json::Value::Null
    );
    let anonymous = reqwest::get(format!("{}/v1/sources/templates", gw.base))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

/// Retention: at start and every ten minutes the gateway deletes events received longer ago
/// than `--retention` whose deliveries are finished, with their attempts, oldest first; an
/// event still being delivered stays, and so do newer ones. SQLite only: replicas sharing a
/// PostgreSQL database take the pruning in turns of twenty minutes (`postgres.rs` shows the
/// turns), so a restarted gateway does not prune again there at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_finished_events_and_keeps_the_rest() {
    if common::postgres_server().is_some() {
        eprintln!("SQLite only: on PostgreSQL the restart does not start a pruning turn");
        return;
    }
    let down = Receiver::start().await;
    down.set_default(Answer::status(503));
    let yaml = format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: a, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: b, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: down, namespace: t}}
spec: {{type: http, http: {{url: "{}/down"}}, retry: {{maxRetries: 10, backoff: fixed, intervals: [1h]}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: b-down, namespace: t}}
spec: {{source: b, destination: down}}
"#,
        down.url
    );
    let mut gw = Gateway::start_with(&yaml, &["--retention", "3s"]).await;
    let old = [
        ingest_id(&gw, "t", "a", r#"{"n":1}"#).await,
        ingest_id(&gw, "t", "a", r#"{"n":2}"#).await,
    ];
    let waiting = ingest_id(&gw, "t", "b", r#"{"n":3}"#).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let fresh = ingest_id(&gw, "t", "a", r#"{"n":4}"#).await;
    // The pruner runs when the gateway starts.
    gw.terminate();
    gw.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for id in &old {
        loop {
            let (status, _) = gw.get(&format!("/v1/events/{id}")).await;
            if status == StatusCode::NOT_FOUND {
                break;
            }
            assert!(Instant::now() < deadline, "{id} outlived its retention");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for id in [&waiting, &fresh] {
        let (status, body) = gw.get(&format!("/v1/events/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{id} is kept: {body}");
    }
    assert_eq!(
        list_ids(&gw, "/v1/events?source=t/a", "events").await,
        HashSet::from([fresh.clone()])
    );
}
