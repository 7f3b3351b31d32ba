//! Tenancy of the management API: keys scoped to namespaces (an object outside the scope is
//! answered exactly like one that does not exist), lists that never load bodies, and
//! credential headers stored redacted.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use common::{Gateway, Receiver, API_KEY};
use serde_json::{json, Value};

/// A key that sees only `shop` and `billing` (from a Secret among the manifests).
const SHOP_KEY: &str = "hs_test_5555555555555555555555555555555555555555555555555555555555555555";
/// A key from a Secret without the annotation: sees every namespace.
const WIDE_KEY: &str = "hs_test_7777777777777777777777777777777777777777777777777777777777777777";

/// Source `in`, Destination `out` (to `url`) with a circuit, Connection `c` and Topic `news`
/// in namespace `ns`.
fn namespace_objects(ns: &str, url: &str) -> String {
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: {ns}}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: {ns}}}
spec: {{type: http, http: {{url: "{url}/{ns}"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: {ns}}}
spec: {{source: in, destination: out}}
---
apiVersion: hookstream.io/v1alpha1
kind: Topic
metadata: {{name: news, namespace: {ns}}}
spec:
  subscriptions:
    - destination: out
"#
    )
}

const KEY_SECRETS: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: shop-team
  namespace: hookstream
  labels: {hookstream.io/api-key: "true"}
  annotations: {hookstream.io/namespaces: "shop, billing"}
stringData:
  key: hs_test_5555555555555555555555555555555555555555555555555555555555555555
---
apiVersion: v1
kind: Secret
metadata:
  name: operators
  namespace: hookstream
  labels: {hookstream.io/api-key: "true"}
stringData:
  key: hs_test_7777777777777777777777777777777777777777777777777777777777777777
---
apiVersion: v1
kind: Secret
metadata:
  name: not-a-key-secret
  namespace: hookstream
stringData:
  key: hs_test_9999999999999999999999999999999999999999999999999999999999999999
"#;

/// Sends an API request with `key`; returns status and JSON.
async fn call(gw: &Gateway, key: &str, method: &str, path: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", gw.base),
        )
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(if method == "POST" { "{}" } else { "" })
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// An error answer without its (per-request) id.
fn without_request_id(mut body: Value) -> Value {
    let id = body["request_id"].take();
    assert!(id.as_str().is_some_and(|i| i.starts_with("req_")), "{body}");
    body.as_object_mut().unwrap().remove("request_id");
    body
}

/// Asserts that `key` gets exactly the 404 of a missing object, `message`.
async fn assert_hidden(gw: &Gateway, key: &str, method: &str, path: &str, message: &str) {
    let (code, body) = call(gw, key, method, path).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    assert_eq!(
        without_request_id(body),
        json!({"error": message, "status": 404}),
        "{method} {path}"
    );
}

fn listed(body: &Value, key: &str, field: &str) -> HashSet<String> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not a list: {body}"))
        .iter()
        .map(|e| e[field].as_str().unwrap().to_owned())
        .collect()
}

async fn ingest_id(gw: &Gateway, ns: &str, body: &str) -> String {
    let r = gw.ingest(ns, "in", body, &[]).await;
    assert_eq!(r.status(), 200, "ingest to {ns}/in refused");
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The id of the first attempt of event `id`, once it is delivered.
async fn first_attempt(gw: &Gateway, id: &str) -> String {
    let event = gw
        .wait_event_status(id, "delivered", Duration::from_secs(10))
        .await;
    event["delivery_attempts"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_scoped_to_namespaces_sees_only_them_and_the_rest_is_not_found() {
    let receiver = Receiver::start().await;
    let mut manifests = String::new();
    for ns in ["shop", "billing", "ops"] {
        manifests.push_str(&namespace_objects(ns, &receiver.url.clone()));
    }
    let gw =
        Gateway::start_with_files(&[("routes.yaml", &manifests), ("keys.yaml", KEY_SECRETS)]).await;
    let shop = ingest_id(&gw, "shop", r#"{"order":"needle-shop"}"#).await;
    let billing = ingest_id(&gw, "billing", r#"{"invoice":"needle-billing"}"#).await;
    let ops = ingest_id(&gw, "ops", r#"{"page":"needle-ops"}"#).await;
    let shop_attempt = first_attempt(&gw, &shop).await;
    first_attempt(&gw, &billing).await;
    let ops_attempt = first_attempt(&gw, &ops).await;

    // Lists and searches hold only the key's namespaces.
    let (code, body) = call(&gw, SHOP_KEY, "GET", "/v1/events?limit=100").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        listed(&body, "events", "id"),
        HashSet::from([shop.clone(), billing.clone()])
    );
    let (_, body) = call(&gw, SHOP_KEY, "GET", "/v1/events?search=needle").await;
    assert_eq!(
        listed(&body, "events", "id"),
        HashSet::from([shop.clone(), billing.clone()])
    );
    for path in [
        "/v1/events?search=needle-ops",
        "/v1/events?source=ops/in",
        &format!("/v1/events?search={ops}"),
    ] {
        let (code, body) = call(&gw, SHOP_KEY, "GET", path).await;
        assert_eq!(code, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["events"], json!([]), "{path}");
    }
    let (_, body) = call(&gw, SHOP_KEY, "GET", "/v1/delivery-attempts").await;
    assert_eq!(
        listed(&body, "delivery_attempts", "destination_id"),
        HashSet::from(["shop/out".to_owned(), "billing/out".to_owned()])
    );
    let (_, body) = call(
        &gw,
        SHOP_KEY,
        "GET",
        "/v1/delivery-attempts?destination=ops/out",
    )
    .await;
    assert_eq!(body["delivery_attempts"], json!([]));

    // Objects of other namespaces answer exactly like objects that do not exist.
    let missing_event = "evt_00000000000000000000000000000000";
    let missing_attempt = "da_00000000000000000000000000000000";
    for (id, real) in [(ops.as_str(), true), (missing_event, false)] {
        let message = format!("event {id} not found");
        assert_hidden(&gw, SHOP_KEY, "GET", &format!("/v1/events/{id}"), &message).await;
        let retry = format!("/v1/events/{id}/retry");
        assert_hidden(&gw, SHOP_KEY, "POST", &retry, &message).await;
        let (code, _) = call(&gw, API_KEY, "GET", &format!("/v1/events/{id}")).await;
        assert_eq!(code == StatusCode::OK, real, "an unscoped key sees {id}");
    }
    for id in [ops_attempt.as_str(), missing_attempt] {
        let message = format!("delivery attempt {id} not found");
        let path = format!("/v1/delivery-attempts/{id}");
        assert_hidden(&gw, SHOP_KEY, "GET", &path, &message).await;
        assert_hidden(&gw, SHOP_KEY, "POST", &format!("{path}/retry"), &message).await;
    }
    for ns in ["ops", "nowhere"] {
        let message = format!("destination {ns}/out not found");
        let path = format!("/v1/destinations/{ns}/out/circuit");
        assert_hidden(&gw, SHOP_KEY, "GET", &path, &message).await;
        assert_hidden(&gw, SHOP_KEY, "POST", &format!("{path}/reset"), &message).await;
    }
    let (hidden_code, hidden) = call(&gw, SHOP_KEY, "POST", "/v1/topics/ops/news/publish").await;
    let (missing_code, missing) =
        call(&gw, SHOP_KEY, "POST", "/v1/topics/nowhere/news/publish").await;
    assert_eq!(
        (hidden_code, missing_code),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        without_request_id(hidden)["error"]
            .as_str()
            .unwrap()
            .replace("ops/", "nowhere/"),
        without_request_id(missing)["error"].as_str().unwrap()
    );

    // Inside the scope everything works.
    for (method, path) in [
        ("GET", format!("/v1/events/{shop}")),
        ("GET", format!("/v1/delivery-attempts/{shop_attempt}")),
        ("GET", "/v1/destinations/billing/out/circuit".to_owned()),
        ("POST", "/v1/destinations/shop/out/circuit/reset".to_owned()),
        ("POST", "/v1/topics/shop/news/publish".to_owned()),
        ("POST", format!("/v1/events/{billing}/retry")),
    ] {
        let (code, body) = call(&gw, SHOP_KEY, method, &path).await;
        assert_eq!(code, StatusCode::OK, "{method} {path}: {body}");
    }

    // A key Secret without the annotation sees everything; an unlabelled Secret is no key.
    let (_, body) = call(&gw, WIDE_KEY, "GET", "/v1/events?limit=100").await;
    let all = listed(&body, "events", "id");
    assert!(all.contains(&ops) && all.contains(&shop), "{body}");
    let unlabelled = "hs_test_9999999999999999999999999999999999999999999999999999999999999999";
    let (code, _) = call(&gw, unlabelled, "GET", "/v1/events").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(!gw.log().contains("5555555555"), "a key reached the log");
}

/// A key works as `Authorization: Bearer` too, with its scope; any other bearer token is
/// refused by a gateway outside a cluster (only a cluster's API server can review it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_as_a_bearer_token_keeps_its_scope_and_other_tokens_are_refused() {
    let receiver = Receiver::start().await;
    let mut manifests = String::new();
    for ns in ["shop", "ops"] {
        manifests.push_str(&namespace_objects(ns, &receiver.url.clone()));
    }
    let gw =
        Gateway::start_with_files(&[("routes.yaml", &manifests), ("keys.yaml", KEY_SECRETS)]).await;
    let shop = ingest_id(&gw, "shop", r#"{"order":1}"#).await;
    let ops = ingest_id(&gw, "ops", r#"{"page":1}"#).await;
    let bearer = |token: &str, path: &str| {
        reqwest::Client::new()
            .get(format!("{}{path}", gw.base))
            .bearer_auth(token)
            .send()
    };
    let r = bearer(SHOP_KEY, "/v1/events").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(listed(&body, "events", "id"), HashSet::from([shop]));
    let r = bearer(SHOP_KEY, &format!("/v1/events/{ops}"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDpib3QifQ.c2ln";
    let r = bearer(jwt, "/v1/events").await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only by a gateway running in a cluster"),
        "{body}"
    );
    let r = bearer(&SHOP_KEY.replace('5', "6"), "/v1/events")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_key_secret_from_the_manifests_revokes_its_key() {
    let gw = Gateway::start_with_files(&[
        (
            "routes.yaml",
            &namespace_objects("shop", "http://127.0.0.1:9"),
        ),
        ("keys.yaml", KEY_SECRETS),
    ])
    .await;
    let (code, _) = call(&gw, SHOP_KEY, "GET", "/v1/events").await;
    assert_eq!(code, StatusCode::OK);
    std::fs::remove_file(gw.manifests_dir().join("keys.yaml")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = call(&gw, SHOP_KEY, "GET", "/v1/events").await;
        if code == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "key still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = call(&gw, API_KEY, "GET", "/v1/events").await;
    assert_eq!(code, StatusCode::OK, "HOOKSTREAM_API_KEYS stays");
}

/// A line of `/proc/PID/status` in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_of_large_events_do_not_load_their_bodies() {
    let gw = Gateway::start(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#,
    )
    .await;
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024 * 1024));
    for _ in 0..20 {
        let r = gw.ingest("t", "in", &body, &[]).await;
        assert_eq!(r.status(), 200);
    }
    let pid = gw.pid();
    let peak_before = proc_status_kib(pid, "VmHWM:");
    for _ in 0..3 {
        let lists = (0..10).map(|_| gw.get("/v1/events?limit=100"));
        for (code, list) in futures::future::join_all(lists).await {
            assert_eq!(code, StatusCode::OK, "{list}");
            let events = list["events"].as_array().unwrap();
            assert_eq!(events.len(), 20);
            assert!(
                events.iter().all(|e| e.get("body").is_none()),
                "a list item carries a body"
            );
        }
        let (code, found) = gw.get("/v1/events?search=xxxx&limit=100").await;
        assert_eq!(code, StatusCode::OK, "{found}");
        assert_eq!(found["events"].as_array().unwrap().len(), 20);
    }
    let peak_after = proc_status_kib(pid, "VmHWM:");
    let resident = proc_status_kib(pid, "VmRSS:");
    // 30 lists of 20 MB of bodies each would need hundreds of MiB if bodies were loaded.
    assert!(
        peak_after - peak_before < 48 * 1024,
        "peak resident memory grew by {} KiB while listing",
        peak_after - peak_before
    );
    assert!(
        resident < 200 * 1024,
        "resident memory {resident} KiB after listing"
    );
    // Details still carry the body.
    let id = gw.get("/v1/events?limit=1").await.1["events"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, detail) = gw.get(&format!("/v1/events/{id}")).await;
    assert_eq!(detail["body"]["pad"].as_str().unwrap().len(), 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_headers_are_stored_redacted_unless_the_source_keeps_them() {
    let receiver = Receiver::start().await;
    let url = receiver.url.clone();
    let manifests = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: postmark, namespace: t}}
stringData: {{username: hooks, password: pm-secret}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: plain, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: keep, namespace: t}}
spec: {{keepCredentialHeaders: true}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: postmark, namespace: t}}
spec:
  template: postmark
  verification: {{secretRef: {{name: postmark, key: password}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec: {{type: http, http: {{url: "{url}/seen"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: plain, namespace: t}}
spec:
  source: plain
  destination: out
  transform: {{jsonata: '{{"from": "plain", "auth": $headers.authorization, "cookie": $headers.cookie, "token": $headers.`x-api-token`}}'}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: keep, namespace: t}}
spec:
  source: keep
  destination: out
  transform: {{jsonata: '{{"from": "keep", "auth": $headers.authorization, "cookie": $headers.cookie, "token": $headers.`x-api-token`}}'}}
"#
    );
    let gw = Gateway::start(&manifests).await;
    let credentials = [
        ("authorization", "Bearer secret123"),
        ("cookie", "a=b"),
        ("x-api-token", "tok-secret456"),
        ("x-note", "n-1"),
    ];
    let mut ids = Vec::new();
    for source in ["plain", "keep"] {
        let r = gw.ingest("t", source, r#"{"n":1}"#, &credentials).await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.json::<Value>().await.unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &ids {
        let detail = gw
            .wait_event_status(id, "delivered", Duration::from_secs(10))
            .await;
        let headers = &detail["headers"];
        assert_eq!(headers["authorization"], "[redacted]", "{detail}");
        assert_eq!(headers["cookie"], "[redacted]", "{detail}");
        assert_eq!(headers["x-api-token"], "[redacted]", "{detail}");
        assert_eq!(headers["x-note"], "n-1", "{detail}");
        let attempt = detail["delivery_attempts"][0]["id"].as_str().unwrap();
        let (_, attempt) = gw.get(&format!("/v1/delivery-attempts/{attempt}")).await;
        let (_, list) = gw.get("/v1/events").await;
        for answer in [&detail, &attempt, &list] {
            let text = answer.to_string();
            for secret in ["secret123", "a=b", "tok-secret456"] {
                assert!(!text.contains(secret), "{secret} in an API answer: {text}");
            }
        }
    }
    // What routes see is what was stored: redacted, or (kept) the real values.
    let seen: Vec<Value> = receiver
        .wait_for(2, Duration::from_secs(10))
        .await
        .iter()
        .map(|r| r.json())
        .collect();
    let by_source = |name: &str| seen.iter().find(|b| b["from"] == name).unwrap().clone();
    assert_eq!(
        by_source("plain"),
        json!({"from": "plain", "auth": "[redacted]", "cookie": "[redacted]", "token": "[redacted]"})
    );
    assert_eq!(
        by_source("keep"),
        json!({"from": "keep", "auth": "Bearer secret123", "cookie": "a=b", "token": "tok-secret456"})
    );
    // Basic-auth verification reads the real Authorization header; the stored one is redacted.
    let basic = base64::engine::general_purpose::STANDARD.encode("hooks:pm-secret");
    let wrong = base64::engine::general_purpose::STANDARD.encode("hooks:nope");
    let (good, bad) = (format!("Basic {basic}"), format!("Basic {wrong}"));
    let refused = gw
        .ingest("t", "postmark", "{}", &[("authorization", bad.as_str())])
        .await;
    assert_eq!(refused.status(), 401);
    let r = gw
        .ingest("t", "postmark", "{}", &[("authorization", good.as_str())])
        .await;
    assert_eq!(r.status(), 200, "basic auth no longer verifies");
    let id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, detail) = gw.get(&format!("/v1/events/{id}")).await;
    assert_eq!(detail["headers"]["authorization"], "[redacted]");
    assert!(!detail.to_string().contains(&basic));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_looks_at_the_500_newest_events_and_the_start_of_each_body() {
    let gw = Gateway::start(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#,
    )
    .await;
    let old = ingest_at(&gw, r#"{"note":"needle-old"}"#).await;
    let deep = format!(
        r#"{{"pad":"{}","note":"needle-deep"}}"#,
        "x".repeat(20 * 1024)
    );
    let deep = ingest_at(&gw, &deep).await;
    for i in 0..500 {
        ingest_at(&gw, &format!(r#"{{"n":{i}}}"#)).await;
    }
    let gw = &gw;
    let found = |path: String| async move {
        let (code, body) = gw.get(&path).await;
        assert_eq!(code, StatusCode::OK, "{path}: {body}");
        listed(&body, "events", "id")
    };
    // The oldest event is beyond the 500 newest: a search does not reach it...
    assert!(found("/v1/events?search=needle-old".to_owned())
        .await
        .is_empty());
    // ...unless a time filter moves the window back to it.
    let before = chrono::DateTime::from_timestamp_millis(deep.1 + 1)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let path = format!("/v1/events?search=needle-old&before={before}");
    assert_eq!(found(path).await, HashSet::from([old.0]));
    // Text past the first 16 KiB of a body is not searched.
    let path = format!("/v1/events?search=needle-deep&before={before}");
    assert!(found(path).await.is_empty());
    let path = format!("/v1/events?search={}&before={before}", &deep.0[..12]);
    assert!(found(path).await.contains(&deep.0), "id prefix search");
}

/// Ingests `body` to `t/in`; returns the event id and its receive time (unix ms).
async fn ingest_at(gw: &Gateway, body: &str) -> (String, i64) {
    let r = gw.ingest("t", "in", body, &[]).await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, detail) = gw.get(&format!("/v1/events/{id}")).await;
    let at = chrono::DateTime::parse_from_rfc3339(detail["received_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    (id, at)
}
