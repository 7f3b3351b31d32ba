//! The operator and the gateway as processes against a real kube-apiserver: everything is
//! done through kubectl and HTTP, as a user would.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use hookstream_e2e::cluster::{condition, control_plane, eventually, Gateway, Namespace, Operator};
use hookstream_e2e::receiver::{hmac_sha256_hex, Answer, Receiver};
use serde_json::Value;

const API_KEY: &str = "hs_test_5eb63bbbe01eeed093cb22bb8f5acdc35eb63bbbe01eeed093cb22bb8f5acdc3";
const SAMPLE_SECRET: &str = "sample-signing-secret";
/// Time for the operator to see a change, compile, write the config Secret and for the
/// gateway to load it (the contract is 2 s; status conditions follow within it too).
const LIVE: Duration = Duration::from_secs(2);
/// Generous bound for things that wait on other processes starting.
const SLOW: Duration = Duration::from_secs(30);

/// The repository's samples, moved into `ns` and pointed at the two receivers.
fn samples(ns: &str, backend: &Receiver, analytics: &Receiver) -> String {
    let dir = hookstream_e2e::cluster::root().join("config/samples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut all = String::new();
    for f in files {
        all.push_str("---\n");
        all.push_str(&std::fs::read_to_string(f).unwrap());
        all.push('\n');
    }
    assert!(all.contains("namespace: shop") && all.contains("http://127.0.0.1:9001"));
    all.replace("namespace: shop", &format!("namespace: {ns}"))
        .replace("http://127.0.0.1:9001", &backend.url)
        .replace("http://127.0.0.1:9002", &analytics.url)
}

async fn post(url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn api_get(gw: &Gateway, path: &str, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", gw.base))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn ready(ns: &Namespace, kind: &str, name: &str) -> Option<(String, String, String)> {
    ns.condition(kind, name, "Ready")
}

async fn wait_ready(ns: &Namespace, kind: &str, name: &str, within: Duration) {
    eventually(&format!("{kind} {name} Ready=True"), within, || {
        ready(ns, kind, name).filter(|(s, ..)| s == "True")
    })
    .await;
}

/// A Source `in`, a Destination `out` pointing at `receiver`, and a Connection `c`.
fn route(receiver: &Receiver, destination_extra: &str, connection_extra: &str) -> String {
    format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out}}
spec:
  type: http
  http: {{url: "{}/hooks"}}
{destination_extra}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c}}
spec:
  source: in
  destination: out
{connection_extra}
"#,
        receiver.url
    )
}

/// Starts a gateway (with the test API key) and an operator for `ns`.
async fn stack(ns: &Namespace) -> (Gateway, Operator) {
    let gw = Gateway::start(ns, API_KEY).await;
    let op = Operator::start(ns, &gw.base).await;
    (gw, op)
}

fn ingest_url(gw: &Gateway, ns: &Namespace, source: &str) -> String {
    format!("{}/v1/ingest/{}/{source}", gw.base, ns.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_become_ready_and_a_webhook_reaches_the_receiver() {
    let ns = Namespace::create("samples");
    let backend = Receiver::start().await;
    let analytics = Receiver::start().await;
    let (gw, op) = stack(&ns).await;

    ns.apply_ok(&samples(&ns.name, &backend, &analytics));
    for (kind, name) in [
        ("source", "orders"),
        ("destination", "backend"),
        ("destination", "analytics"),
        ("connection", "orders-to-backend"),
        ("connection", "paid-orders-to-analytics"),
    ] {
        wait_ready(&ns, kind, name, SLOW).await;
    }
    let source = ns.get("source", "orders").unwrap();
    let url = source["status"]["ingestUrl"].as_str().unwrap().to_owned();
    assert_eq!(url, ingest_url(&gw, &ns, "orders"));
    assert_eq!(
        source["status"]["observedGeneration"],
        source["metadata"]["generation"]
    );

    let body = r#"{"type":"order.paid","data":{"id":"ord_123","amount":4999,"currency":"eur"}}"#;
    let signature = format!("sha256={}", hmac_sha256_hex(SAMPLE_SECRET, body));
    let (status, answer) = post(&url, body, &[("x-shop-signature", &signature)]).await;
    assert_eq!(status, 200, "{answer}");
    let got = backend.wait_for(1, SLOW).await;
    assert_eq!(got[0].json()["data"]["id"], "ord_123");
    let transformed = analytics.wait_for(1, SLOW).await;
    assert_eq!(transformed[0].json()["orderId"], "ord_123");
    let (status, _) = post(&url, body, &[("x-shop-signature", "sha256=00")]).await;
    assert_eq!(status, 401, "a forged signature is refused");

    // Runtime status from the gateway, beside the operator's conditions.
    eventually("Source status shows the event", SLOW, || {
        let s = ns.get("source", "orders")?;
        (s["status"]["eventsReceived"] == 1 && s["status"]["lastReceivedAt"].is_string())
            .then_some(())
    })
    .await;
    eventually("Destination status counts the delivery", SLOW, || {
        let d = ns.get("destination", "backend")?;
        (d["status"]["deliveries"]["succeeded"] == 1
            && d["status"]["circuit"]["state"] == "Closed"
            && d["status"]["lastAttemptAt"].is_string())
        .then_some(())
    })
    .await;

    // What kubectl users see.
    let table = ns.kubectl_ok(&["get", "sources"]);
    assert!(table.contains("URL") && table.contains("READY"), "{table}");
    assert!(table.contains(&url), "{table}");
    let table = ns.kubectl_ok(&["get", "destinations"]);
    assert!(
        table.contains("CIRCUIT") && table.contains("Closed"),
        "{table}"
    );
    let table = ns.kubectl_ok(&["get", "hookstream"]);
    assert!(
        table.contains("orders-to-backend") && table.contains("analytics"),
        "{table}"
    );
    let events = ns.kubectl_ok(&["get", "events"]);
    assert!(events.contains("Programmed"), "{events}");

    // The signing secret never leaves its Secret.
    for kind in ["sources", "destinations", "connections", "events"] {
        let text = ns.kubectl_ok(&["get", kind, "-o", "yaml"]);
        assert!(!text.contains(SAMPLE_SECRET), "{kind} shows a secret");
    }
    assert!(!gw.process.log().contains(SAMPLE_SECRET));
    assert!(!op.process.log().contains(SAMPLE_SECRET));

    let metrics = reqwest::get(format!("{}/metrics", op.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hookstream_operator_leader 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"hookstream_operator_objects{kind="Connection",ready="true"} 2"#),
        "{metrics}"
    );
    let health = reqwest::get(format!("{}/healthz", op.metrics))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_a_missing_destination_waits_and_routes_once_it_exists() {
    let ns = Namespace::create("missing");
    let receiver = Receiver::start().await;
    let (gw, _op) = stack(&ns).await;
    ns.apply_ok(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in}
spec: {}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: c}
spec: {source: in, destination: later}
"#,
    );
    let (_, reason, message) = eventually("Connection c Ready=False", SLOW, || {
        ready(&ns, "connection", "c").filter(|(s, ..)| s == "False")
    })
    .await;
    assert_eq!(reason, "DestinationNotFound");
    assert!(message.contains("later"), "{message}");
    let refs = ns.condition("connection", "c", "ResolvedRefs").unwrap();
    assert_eq!(
        (refs.0.as_str(), refs.1.as_str()),
        ("False", "DestinationNotFound")
    );
    assert_eq!(
        ns.condition("connection", "c", "Accepted").unwrap().0,
        "True"
    );
    // One broken object does not take the others down.
    wait_ready(&ns, "source", "in", LIVE).await;
    let events = ns.kubectl_ok(&["get", "events", "--field-selector", "type=Warning"]);
    assert!(events.contains("DestinationNotFound"), "{events}");

    ns.apply_ok(&format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: later}}
spec:
  type: http
  http: {{url: "{}/later"}}
"#,
        receiver.url
    ));
    wait_ready(&ns, "connection", "c", SLOW).await;
    let (status, _) = post(&ingest_url(&gw, &ns, "in"), r#"{"n":1}"#, &[]).await;
    assert_eq!(status, 200);
    let got = receiver.wait_for(1, SLOW).await;
    assert_eq!(got[0].uri.path(), "/later");
}

/// Sends `{"type": kind}` to `in` until the receiver has one more request than before;
/// returns how long that took.
async fn time_until_routed(
    gw: &Gateway,
    ns: &Namespace,
    receiver: &Receiver,
    kind: &str,
) -> Duration {
    let started = Instant::now();
    let before = receiver.received().len();
    let body = format!(r#"{{"type":"{kind}"}}"#);
    loop {
        let (status, _) = post(&ingest_url(gw, ns, "in"), &body, &[]).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if receiver.received().len() > before {
            return started.elapsed();
        }
        assert!(started.elapsed() < SLOW, "{kind} events are never routed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_filter_changes_routing_within_two_seconds_and_deleting_stops_deliveries() {
    let ns = Namespace::create("filters");
    let receiver = Receiver::start().await;
    let (gw, _op) = stack(&ns).await;
    let with_filter = |value: &str| {
        route(
            &receiver,
            "",
            &format!("  filters: [{{field: body.type, op: eq, value: {value}}}]"),
        )
    };
    ns.apply_ok(&with_filter("a"));
    wait_ready(&ns, "connection", "c", SLOW).await;
    time_until_routed(&gw, &ns, &receiver, "a").await;
    let (_, event) = post(&ingest_url(&gw, &ns, "in"), r#"{"type":"b"}"#, &[]).await;
    let id = event["event_id"].as_str().unwrap().to_owned();
    let (_, stored) = api_get(&gw, &format!("/v1/events/{id}"), API_KEY).await;
    assert_eq!(
        stored["status"], "received",
        "type b matches no route: {stored}"
    );

    ns.apply_ok(&with_filter("b"));
    let took = time_until_routed(&gw, &ns, &receiver, "b").await;
    assert!(took <= LIVE, "the edited filter took {took:?} to apply");

    ns.kubectl_ok(&["delete", "connection", "c"]);
    // Once an event is stored without a route, the deletion is live.
    let started = Instant::now();
    loop {
        let (_, event) = post(&ingest_url(&gw, &ns, "in"), r#"{"type":"b"}"#, &[]).await;
        let id = event["event_id"].as_str().unwrap().to_owned();
        let (_, stored) = api_get(&gw, &format!("/v1/events/{id}"), API_KEY).await;
        if stored["status"] == "received" {
            break;
        }
        assert!(
            started.elapsed() < LIVE * 3,
            "the deleted Connection still routes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = receiver.received().len();
    let (status, _) = post(&ingest_url(&gw, &ns, "in"), r#"{"type":"b"}"#, &[]).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        receiver.received().len(),
        count,
        "a deleted Connection still delivers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_shows_an_open_circuit_and_the_annotation_resets_it() {
    let ns = Namespace::create("circuit");
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(500));
    let (gw, _op) = stack(&ns).await;
    ns.apply_ok(&route(
        &receiver,
        "  retry: {maxRetries: 3, backoff: fixed, intervals: [1h]}\n  circuitBreaker: {failureThreshold: 2, cooldown: 1h}",
        "",
    ));
    wait_ready(&ns, "connection", "c", SLOW).await;
    for n in 0..2 {
        let (status, _) = post(&ingest_url(&gw, &ns, "in"), &format!(r#"{{"n":{n}}}"#), &[]).await;
        assert_eq!(status, 200);
    }
    receiver.wait_for(2, SLOW).await;
    let destination = eventually("circuit Open in status", SLOW, || {
        ns.get("destination", "out").filter(|d| {
            d["status"]["circuit"]["state"] == "Open" && d["status"]["deliveries"]["failed"] == 2
        })
    })
    .await;
    assert_eq!(destination["status"]["circuit"]["consecutiveFailures"], 2);
    assert_eq!(destination["status"]["deliveries"]["failed"], 2);
    let table = ns.kubectl_ok(&["get", "destination", "out"]);
    assert!(table.contains("Open"), "{table}");
    // The condition says so, beside the operator's own conditions, and a Warning Event too.
    let (status, reason, message) = eventually("CircuitOpen=True", SLOW, || {
        ns.condition("destination", "out", "CircuitOpen")
            .filter(|(status, _, _)| status == "True")
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Open"));
    assert!(message.contains("2 consecutive failures"), "{message}");
    assert_eq!(
        ns.condition("destination", "out", "Ready").unwrap().0,
        "True"
    );
    eventually("a CircuitOpen Warning Event", SLOW, || {
        let events = ns.kubectl_ok(&["get", "events", "--field-selector", "type=Warning"]);
        events.contains("CircuitOpen").then_some(())
    })
    .await;
    // While open, new deliveries wait instead of being attempted.
    let (status, _) = post(&ingest_url(&gw, &ns, "in"), r#"{"n":2}"#, &[]).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 2);

    receiver.set_default(Answer::status(200));
    ns.kubectl_ok(&[
        "annotate",
        "destination",
        "out",
        "hookstream.io/reset-circuit=now",
    ]);
    eventually("circuit Closed and the annotation removed", SLOW, || {
        let d = ns.get("destination", "out")?;
        let annotated = d["metadata"]["annotations"]
            .get("hookstream.io/reset-circuit")
            .is_some();
        (d["status"]["circuit"]["state"] == "Closed" && !annotated).then_some(())
    })
    .await;
    eventually("CircuitOpen=False and a CircuitClosed Event", SLOW, || {
        let (status, _, _) = ns.condition("destination", "out", "CircuitOpen")?;
        let events = ns.kubectl_ok(&["get", "events", "--field-selector", "type=Normal"]);
        (status == "False" && events.contains("CircuitClosed")).then_some(())
    })
    .await;
    // The waiting delivery goes out once the circuit closes.
    let got = receiver.wait_for(3, SLOW).await;
    assert_eq!(got[2].json()["n"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_picked_up() {
    let ns = Namespace::create("rotate");
    let receiver = Receiver::start().await;
    let (gw, _op) = stack(&ns).await;
    let secret = |value: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{signing: {value}}}\n"
        )
    };
    ns.apply_ok(&secret("first-secret"));
    ns.apply_ok(&route(&receiver, "", "").replace(
        "kind: Source\nmetadata: {name: in}\nspec: {}",
        "kind: Source\nmetadata: {name: in}\nspec:\n  verification: {type: hmac-sha256, header: X-Sig, secretRef: {name: creds, key: signing}}",
    ));
    wait_ready(&ns, "source", "in", SLOW).await;
    let url = ingest_url(&gw, &ns, "in");
    let body = r#"{"order":1}"#;
    let signed = |secret: &str| format!("sha256={}", hmac_sha256_hex(secret, body));
    assert_eq!(
        post(&url, body, &[("x-sig", &signed("first-secret"))])
            .await
            .0,
        200
    );
    assert_eq!(
        post(&url, body, &[("x-sig", &signed("second-secret"))])
            .await
            .0,
        401
    );

    ns.apply_ok(&secret("second-secret"));
    let started = Instant::now();
    loop {
        if post(&url, body, &[("x-sig", &signed("second-secret"))])
            .await
            .0
            == 200
        {
            break;
        }
        assert!(started.elapsed() < SLOW, "the rotated secret is never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        post(&url, body, &[("x-sig", &signed("first-secret"))])
            .await
            .0,
        401
    );
    receiver.wait_for(2, SLOW).await;

    // A Secret that goes away is a reference problem of the Source, with the right reason.
    ns.kubectl_ok(&["delete", "secret", "creds"]);
    let (_, reason, message) = eventually("Source Ready=False", SLOW, || {
        ready(&ns, "source", "in").filter(|(s, ..)| s == "False")
    })
    .await;
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("creds"), "{message}");
    assert!(!message.contains("second-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_rejected_at_admission_with_a_clear_message() {
    let ns = Namespace::create("cel");
    let cases = [
        (
            "kind: Destination\nmetadata: {name: d}\nspec: {type: http}",
            "spec.http is required when spec.type is http",
        ),
        (
            "kind: Destination\nmetadata: {name: d}\nspec: {type: http, http: {url: 'ftp://x/y'}}",
            "http.url must be an absolute http:// or https:// URL",
        ),
        (
            "kind: Destination\nmetadata: {name: d}\nspec: {type: http, http: {url: 'http://x/'}, retry: {intervals: ['30']}}",
            "retry.intervals entries must be durations with units",
        ),
        (
            "kind: Source\nmetadata: {name: s}\nspec: {verification: {type: hmac-sha256}}",
            "verification.secretRef is required",
        ),
        (
            "kind: Source\nmetadata: {name: s}\nspec: {ipFilter: {allow: [not-an-ip]}}",
            "ipFilter.allow entries must be IP addresses or CIDR ranges",
        ),
        (
            "kind: Source\nmetadata: {name: s}\nspec: {dedup: {strategy: header-field}}",
            "dedup.field is required",
        ),
        (
            "kind: Connection\nmetadata: {name: c}\nspec: {source: a, destination: b, filters: [{field: body.x, op: like, value: 1}]}",
            r#"Unsupported value: "like""#,
        ),
        (
            "kind: Connection\nmetadata: {name: c}\nspec: {source: a, destination: b, filters: [{field: bodyx, op: eq, value: 1}]}",
            "filter field must start with body.",
        ),
    ];
    for (object, expected) in cases {
        let yaml = format!("apiVersion: hookstream.io/v1alpha1\n{object}\n");
        let out = ns.apply(&yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
    }
    assert!(ns.get("destination", "d").is_none());

    let explain = control_plane().kubectl_ok(&["explain", "source.spec.verification"]);
    assert!(explain.contains("Signature scheme"), "{explain}");
    assert!(explain.contains("secretRef"), "{explain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_operator_takes_over_and_converges_after_the_leader_dies() {
    let ns = Namespace::create("restart");
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let (gw, mut leader) = stack(&ns).await;
    ns.apply_ok(&route(&first, "", ""));
    wait_ready(&ns, "connection", "c", SLOW).await;

    let mut standby = Operator::start_standby(&ns, &gw.base).await;
    leader.kill9();
    // While nobody leads, the cluster changes: a new route, and an edit breaks the old one.
    ns.apply_ok(&format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: second}}
spec:
  type: http
  http: {{url: "{}/second"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c2}}
spec: {{source: in, destination: second}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c}}
spec: {{source: in, destination: gone}}
"#,
        second.url
    ));
    standby.wait_leading().await;
    wait_ready(&ns, "connection", "c2", SLOW).await;
    // The new leader never saw c valid; it knows its last valid generation from the config
    // Secret, and keeps serving it.
    let c = eventually(
        "Connection c serves its last valid generation",
        SLOW,
        || {
            let c = ns.get("connection", "c")?;
            let (status, reason, _) = condition(&c, "Ready")?;
            (status == "True" && reason == "LastValidGeneration").then_some(c)
        },
    )
    .await;
    let (refs, reason, _) = condition(&c, "ResolvedRefs").unwrap();
    assert_eq!(
        (refs.as_str(), reason.as_str()),
        ("False", "DestinationNotFound")
    );
    assert_eq!(
        c["status"]["observedGeneration"],
        c["metadata"]["generation"]
    );
    assert_eq!(
        c["status"]["servingGeneration"].as_i64().unwrap() + 1,
        c["metadata"]["generation"].as_i64().unwrap()
    );
    let (status, _) = post(&ingest_url(&gw, &ns, "in"), r#"{"after":"takeover"}"#, &[]).await;
    assert_eq!(status, 200);
    let got = second.wait_for(1, SLOW).await;
    assert_eq!(got[0].json()["after"], "takeover");
    let got = first.wait_for(1, SLOW).await;
    assert_eq!(
        got[0].json()["after"],
        "takeover",
        "the broken edit did not stop the route"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_come_and_go_with_labelled_secrets() {
    let ns = Namespace::create("keys");
    let gw = Gateway::start(&ns, "").await;
    let key = "hs_live_8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92";
    assert_eq!(api_get(&gw, "/v1/events", key).await.0, 401);
    ns.apply_ok(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ci-key\n  labels: {{hookstream.io/api-key: \"true\"}}\nstringData: {{key: {key}}}\n"
    ));
    let started = Instant::now();
    while api_get(&gw, "/v1/events", key).await.0 != 200 {
        assert!(
            started.elapsed() < SLOW,
            "the key from the Secret is never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An unlabelled Secret adds nothing.
    let other = "hs_live_0000000000000000000000000000000000000000000000000000000000000001";
    ns.apply_ok(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: not-a-key}}\nstringData: {{key: {other}}}\n"
    ));
    ns.kubectl_ok(&["delete", "secret", "ci-key"]);
    let started = Instant::now();
    while api_get(&gw, "/v1/events", key).await.0 != 401 {
        assert!(started.elapsed() < SLOW, "a deleted key is still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api_get(&gw, "/v1/events", other).await.0, 401);
    assert!(!gw.process.log().contains(key), "the key was logged");
}

#[test]
fn the_chart_and_kustomize_install_paths_apply_to_a_real_apiserver() {
    let cp = control_plane();
    let out = cp
        .command(hookstream_e2e::cluster::root().join("e2e/check-install"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check-install failed:\n{text}");
    assert!(text.contains("check-install: ok"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_shows_its_publish_url_and_fans_out_to_its_subscribers() {
    let ns = Namespace::create("topic");
    let receiver = Receiver::start().await;
    let (gw, _op) = stack(&ns).await;
    ns.apply_ok(&format!(
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out}}
spec:
  type: http
  http: {{url: "{}/sub"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Topic
metadata: {{name: orders}}
spec:
  subscriptions:
    - destination: out
      filters: [{{field: body.type, op: eq, value: order.created}}]
"#,
        receiver.url
    ));
    wait_ready(&ns, "topic", "orders", SLOW).await;
    let topic = ns.get("topic", "orders").unwrap();
    let url = topic["status"]["publishUrl"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("{}/v1/topics/{}/orders/publish", gw.base, ns.name)
    );
    let table = ns.kubectl_ok(&["get", "topics"]);
    assert!(table.contains(&url), "{table}");

    let (status, answer) = post(
        &url,
        r#"{"type":"order.created","id":"ord_9"}"#,
        &[("x-api-key", API_KEY)],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["topic"], format!("{}/orders", ns.name));
    let (status, _) = post(&url, r#"{"type":"order.paid"}"#, &[("x-api-key", API_KEY)]).await;
    assert_eq!(status, 200);
    let got = receiver.wait_for(1, SLOW).await;
    assert_eq!(got[0].json()["id"], "ord_9");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the filter lets only order.created through"
    );

    // A Topic whose subscriber does not exist says so.
    ns.apply_ok(
        "apiVersion: hookstream.io/v1alpha1\nkind: Topic\nmetadata: {name: lonely}\nspec: {subscriptions: [{destination: nobody}]}\n",
    );
    let (_, reason, _) = eventually("Topic lonely Ready=False", SLOW, || {
        ready(&ns, "topic", "lonely").filter(|(s, ..)| s == "False")
    })
    .await;
    assert_eq!(reason, "DestinationNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_at_the_metadata_address_is_refused_with_egress_denied() {
    let ns = Namespace::create("egress");
    let receiver = Receiver::start().await;
    let (_gw, _op) = stack(&ns).await;
    // 2852039166 is 169.254.169.254 spelled as one decimal number.
    let at = |url: &str| {
        format!(
            "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: out}}\nspec:\n  type: http\n  http: {{url: \"{url}\"}}\n"
        )
    };
    ns.apply_ok(&at("http://2852039166/latest/meta-data/iam"));
    let (_, reason, message) = eventually("Destination out Accepted=False", SLOW, || {
        ns.condition("destination", "out", "Accepted")
            .filter(|(s, ..)| s == "False")
    })
    .await;
    assert_eq!(reason, "EgressDenied");
    assert!(
        message.contains("169.254.169.254") && message.contains("egress policy"),
        "{message}"
    );
    assert_eq!(ready(&ns, "destination", "out").unwrap().0, "False");
    let events = ns.kubectl_ok(&["get", "events", "--field-selector", "type=Warning"]);
    assert!(events.contains("EgressDenied"), "{events}");

    ns.apply_ok(&at(&format!("{}/hooks", receiver.url)));
    wait_ready(&ns, "destination", "out", SLOW).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_serving_the_last_valid_generation_until_it_is_fixed() {
    let ns = Namespace::create("lastvalid");
    let receiver = Receiver::start().await;
    let (gw, _op) = stack(&ns).await;
    let source = |key: &str| {
        format!(
            "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {{name: in}}\nspec:\n  verification: {{type: hmac-sha256, secretRef: {{name: signing, key: {key}}}, header: X-Sig}}\n"
        )
    };
    ns.apply_ok(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: signing}}\nstringData: {{current: s3cret}}\n---\n{}---\napiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: out}}\nspec: {{type: http, http: {{url: \"{}/hooks\"}}}}\n---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c}}\nspec: {{source: in, destination: out}}\n",
        source("current"),
        receiver.url
    ));
    wait_ready(&ns, "source", "in", SLOW).await;
    wait_ready(&ns, "connection", "c", SLOW).await;
    let send = |n: u32| {
        let url = ingest_url(&gw, &ns, "in");
        async move {
            let body = format!(r#"{{"n":{n}}}"#);
            let sig = hmac_sha256_hex("s3cret", &body);
            post(&url, &body, &[("X-Sig", &sig)]).await.0
        }
    };
    assert_eq!(send(1).await, 200);
    receiver.wait_for(1, SLOW).await;
    let valid_generation = ns.get("source", "in").unwrap()["metadata"]["generation"].clone();

    // A typo in the Secret key: the Source keeps being served in its last valid generation.
    ns.apply_ok(&source("typo"));
    let (_, reason, message) = eventually("Source in Ready=True LastValidGeneration", SLOW, || {
        ready(&ns, "source", "in").filter(|(s, r, _)| s == "True" && r == "LastValidGeneration")
    })
    .await;
    assert_eq!(reason, "LastValidGeneration");
    assert!(message.contains("typo"), "{message}");
    let refs = ns.condition("source", "in", "ResolvedRefs").unwrap();
    assert_eq!(
        (refs.0.as_str(), refs.1.as_str()),
        ("False", "SecretNotFound")
    );
    let status = ns.get("source", "in").unwrap()["status"].clone();
    assert_eq!(status["servingGeneration"], valid_generation, "{status}");
    let events = ns.kubectl_ok(&["get", "events", "--field-selector", "type=Warning"]);
    assert!(events.contains("LastValidGeneration"), "{events}");
    assert_eq!(send(2).await, 200, "the ingest URL still answers");
    receiver.wait_for(2, SLOW).await;

    // The fix is served at once.
    ns.apply_ok(&source("current"));
    eventually("Source in Ready=True Programmed", SLOW, || {
        ready(&ns, "source", "in").filter(|(s, r, _)| s == "True" && r == "Programmed")
    })
    .await;
    let status = ns.get("source", "in").unwrap()["status"].clone();
    assert_eq!(
        status["servingGeneration"], status["observedGeneration"],
        "{status}"
    );
    assert_eq!(send(3).await, 200);
    receiver.wait_for(3, SLOW).await;
}

/// A kubeconfig for ServiceAccount `account` of `ns`: the control plane's server and CA with
/// a token of the account instead of the administrator's certificate.
fn service_account_kubeconfig(
    ns: &Namespace,
    account: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let token = ns.kubectl_ok(&["create", "token", account, "--duration", "1h"]);
    let admin = std::fs::read_to_string(&control_plane().kubeconfig).unwrap();
    // kube-up writes clusters, users and contexts in this order, one user.
    let (head, rest) = admin.split_once("users:\n").expect("a users section");
    let (user, tail) = rest.split_once("contexts:\n").expect("a contexts section");
    let name = user
        .lines()
        .next()
        .expect("a user")
        .trim_start_matches("- name: ");
    let text = format!(
        "{head}users:\n- name: {name}\n  user:\n    token: {}\ncontexts:\n{tail}",
        token.trim()
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

/// The operator runs with nothing but the chart's RBAC for a release that watches one
/// namespace: Roles there (Secrets: get only), no ClusterRole. It still resolves a referenced
/// Secret, routes, picks up a rotation and reports a deleted Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_needs_only_the_charts_namespaced_roles() {
    let ns = Namespace::create("rbac");
    let rbac = control_plane()
        .command("helm")
        .args([
            "template",
            "hookstream",
            "charts/hookstream",
            "--namespace",
            &ns.name,
        ])
        .args(["--set", &format!("watchNamespaces={{{}}}", ns.name)])
        .args(["--show-only", "templates/operator/serviceaccount.yaml"])
        .args(["--show-only", "templates/operator/rbac.yaml"])
        .output()
        .unwrap();
    assert!(
        rbac.status.success(),
        "{}",
        String::from_utf8_lossy(&rbac.stderr)
    );
    let rbac = String::from_utf8(rbac.stdout).unwrap();
    assert!(!rbac.contains("kind: ClusterRole"), "{rbac}");
    ns.apply_ok(&rbac);
    let account = format!("system:serviceaccount:{}:hookstream-operator", ns.name);
    let can = |verb: &str, resource: &str, all: bool| {
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &account];
        if all {
            args.push("--all-namespaces");
        } else {
            args.extend(["-n", &ns.name]);
        }
        control_plane().kubectl(&args).status.success()
    };
    assert!(can("get", "secrets", false));
    assert!(
        !can("list", "secrets", false),
        "the operator may list Secrets"
    );
    assert!(
        !can("watch", "secrets", false),
        "the operator may watch Secrets"
    );
    assert!(
        !can("get", "secrets", true),
        "the operator may read other namespaces' Secrets"
    );
    assert!(!can("list", "sources.hookstream.io", true));

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&ns, "hookstream-operator", dir.path());
    // The kubeconfig really is the ServiceAccount's: listing Secrets is refused.
    let listed = control_plane()
        .command("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "secrets", "-n", &ns.name])
        .output()
        .unwrap();
    assert!(!listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stderr).contains("forbidden"));
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&ns, API_KEY).await;
    let op = Operator::start_as(&ns, &gw.base, &kubeconfig).await;
    let secret = |value: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\nstringData: {{signing: {value}}}\n")
    };
    ns.apply_ok(&secret("first-secret"));
    ns.apply_ok(&route(&receiver, "", "").replace(
        "kind: Source\nmetadata: {name: in}\nspec: {}",
        "kind: Source\nmetadata: {name: in}\nspec:\n  verification: {type: hmac-sha256, header: X-Sig, secretRef: {name: creds, key: signing}}",
    ));
    wait_ready(&ns, "source", "in", SLOW).await;
    wait_ready(&ns, "connection", "c", SLOW).await;
    let url = ingest_url(&gw, &ns, "in");
    let body = r#"{"order":1}"#;
    let signed = |secret: &str| format!("sha256={}", hmac_sha256_hex(secret, body));
    let accepted_within = |secret: &'static str| {
        let (url, signature) = (url.clone(), signed(secret));
        async move {
            let started = Instant::now();
            while post(&url, body, &[("x-sig", &signature)]).await.0 != 200 {
                assert!(started.elapsed() < SLOW, "{secret} never verifies");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    accepted_within("first-secret").await;
    receiver.wait_for(1, SLOW).await;

    ns.apply_ok(&secret("second-secret"));
    accepted_within("second-secret").await;

    ns.kubectl_ok(&["delete", "secret", "creds"]);
    let (_, reason, _) = eventually("Source Ready=False", SLOW, || {
        ready(&ns, "source", "in").filter(|(s, ..)| s == "False")
    })
    .await;
    assert_eq!(reason, "SecretNotFound");
    let log = op.process.log();
    assert!(!log.contains("not allowed"), "{log}");
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
}

/// A request to the gateway's API with `Authorization: Bearer <token>`.
async fn api_with_token(gw: &Gateway, method: &str, path: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{path}", gw.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The ids of the listed events (`/v1/events`) with the namespace of each, or of the listed
/// attempts (`/v1/delivery-attempts`) with their destination (`namespace/name`).
fn listed(body: &Value, field: &str) -> Vec<(String, String)> {
    body[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["namespace"]
                    .as_str()
                    .or(e["destination_id"].as_str())
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// In-cluster callers use ordinary RBAC: the gateway checks a ServiceAccount token with
/// TokenReview and asks SubjectAccessReview about each namespace. Bound to the chart's view
/// role in one namespace, a ServiceAccount reads that namespace's events and attempts, is told
/// that another namespace's do not exist, and may not retry; bound to the edit role it may.
/// A forged token is refused, and an unbound account sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_reads_its_own_namespace_through_rbac_and_nothing_else() {
    let shop = Namespace::create("sa-shop");
    let other = Namespace::create("sa-other");
    // The chart's roles for users, and the gateway's ServiceAccount and RBAC: the gateway runs
    // with nothing more than the chart grants it.
    let chart = control_plane()
        .command("helm")
        .args([
            "template",
            "hookstream",
            "charts/hookstream",
            "--namespace",
            &shop.name,
        ])
        .args(["--show-only", "templates/user-roles.yaml"])
        .args(["--show-only", "templates/gateway/serviceaccount.yaml"])
        .args(["--show-only", "templates/gateway/rbac.yaml"])
        .output()
        .unwrap();
    assert!(
        chart.status.success(),
        "{}",
        String::from_utf8_lossy(&chart.stderr)
    );
    shop.apply_ok(&String::from_utf8(chart.stdout).unwrap());
    shop.apply_ok(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: reader}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: fixer}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: nobody}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: reader}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: hookstream-view}\n\
         subjects: [{kind: ServiceAccount, name: reader}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: fixer}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: hookstream-edit}\n\
         subjects: [{kind: ServiceAccount, name: fixer}]\n",
    );
    let token = |account: &str| {
        shop.kubectl_ok(&["create", "token", account, "--duration", "1h"])
            .trim()
            .to_owned()
    };
    let (reader, fixer, nobody) = (token("reader"), token("fixer"), token("nobody"));

    let dir = tempfile::tempdir().unwrap();
    let gateway_account = service_account_kubeconfig(&shop, "hookstream-gateway", dir.path());
    let receiver = Receiver::start().await;
    let gw = Gateway::start_as(&shop, API_KEY, &gateway_account).await;
    let _op = Operator::start_watching(&shop, &[&other], &gw.base).await;
    for ns in [&shop, &other] {
        ns.apply_ok(&route(&receiver, "", ""));
        wait_ready(ns, "connection", "c", SLOW).await;
    }
    for ns in [&shop, &other] {
        let url = ingest_url(&gw, ns, "in");
        let started = Instant::now();
        while post(&url, &format!(r#"{{"from":"{}"}}"#, ns.name), &[])
            .await
            .0
            != 200
        {
            assert!(started.elapsed() < SLOW, "{url} never accepts");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    receiver.wait_for(2, SLOW).await;
    let (status, all) = api_get(&gw, "/v1/events", API_KEY).await;
    assert_eq!(status, 200, "{all}");
    let all = listed(&all, "events");
    let id_in = |ns: &Namespace| {
        all.iter()
            .find(|(_, n)| *n == ns.name)
            .unwrap_or_else(|| panic!("no event of {} in {all:?}", ns.name))
            .0
            .clone()
    };
    let (shop_event, other_event) = (id_in(&shop), id_in(&other));

    // The view role in `shop`: its events and attempts, nothing of `other`.
    let (status, events) = api_with_token(&gw, "GET", "/v1/events", &reader).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(
        listed(&events, "events"),
        vec![(shop_event.clone(), shop.name.clone())]
    );
    let (status, attempts) = api_with_token(&gw, "GET", "/v1/delivery-attempts", &reader).await;
    assert_eq!(status, 200, "{attempts}");
    let attempts = listed(&attempts, "delivery_attempts");
    assert!(!attempts.is_empty());
    let own = format!("{}/out", shop.name);
    assert!(attempts.iter().all(|(_, d)| *d == own), "{attempts:?}");
    let path = |id: &str| format!("/v1/events/{id}");
    assert_eq!(
        api_with_token(&gw, "GET", &path(&shop_event), &reader)
            .await
            .0,
        200
    );
    let (status, refused) = api_with_token(&gw, "GET", &path(&other_event), &reader).await;
    assert_eq!(status, 404, "{refused}");
    // Told exactly what a missing event is told.
    assert_eq!(refused["error"], format!("event {other_event} not found"));
    let circuit = format!("/v1/destinations/{}/out/circuit", other.name);
    assert_eq!(api_with_token(&gw, "GET", &circuit, &reader).await.0, 404);

    // Retrying needs update on destinations: the view role has not, the edit role has.
    let retry = format!("/v1/events/{shop_event}/retry");
    assert_eq!(api_with_token(&gw, "POST", &retry, &reader).await.0, 404);
    let (status, retried) = api_with_token(&gw, "POST", &retry, &fixer).await;
    assert!(status == 200 || status == 202, "{status} {retried}");
    receiver.wait_for(3, SLOW).await;
    let other_retry = format!("/v1/events/{other_event}/retry");
    assert_eq!(
        api_with_token(&gw, "POST", &other_retry, &fixer).await.0,
        404
    );

    // An account without a binding sees nothing; a forged token is not a caller at all.
    let (status, none) = api_with_token(&gw, "GET", "/v1/events", &nobody).await;
    assert_eq!(status, 200, "{none}");
    assert!(listed(&none, "events").is_empty(), "{none}");
    // One signature character changed (not the last, whose low bits base64 ignores).
    let at = reader.len() - 10;
    let swapped = if &reader[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &reader[..at], &reader[at + 1..]);
    let (status, body) = api_with_token(&gw, "GET", "/v1/events", &forged).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("bearer token"), "{body}");

    let log = gw.process.log();
    for secret in [&reader, &fixer, &nobody, &forged] {
        assert!(!log.contains(secret.as_str()), "a token was logged");
    }
    assert!(!log.to_lowercase().contains("forbidden"), "{log}");
}

/// A queue or stream Destination's credentials come from its `credentialsRef` Secret, read
/// whole by name: the Destination waits with `SecretNotFound` (naming the missing key, never
/// a value) until the Secret has what the type needs, and then becomes Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_destination_becomes_ready_once_its_credentials_secret_is_complete() {
    let ns = Namespace::create("broker");
    let (_gw, _op) = stack(&ns).await;
    let secret = |data: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: kafka-creds}}\nstringData: {{{data}}}\n")
    };
    ns.apply_ok(&secret("username: svc-hookstream"));
    ns.apply_ok(
        "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {name: stream}\nspec:\n  type: kafka\n  credentialsRef: {name: kafka-creds}\n  kafka:\n    bootstrapServers: kafka-0.kafka.example:9092,kafka-1.kafka.example:9092\n    topic: orders\n    key: customer.id\n    saslMechanism: SCRAM-SHA-512\n",
    );
    let (_, reason, message) = eventually("Destination stream Ready=False", SLOW, || {
        ready(&ns, "destination", "stream").filter(|(s, ..)| s == "False")
    })
    .await;
    assert_eq!(reason, "SecretNotFound", "{message}");
    assert!(message.contains("password"), "{message}");
    assert!(!message.contains("svc-hookstream"), "{message}");
    ns.apply_ok(&secret("username: svc-hookstream, password: s3cr3t-pw"));
    wait_ready(&ns, "destination", "stream", SLOW).await;
    let status = ns.kubectl_ok(&["get", "destination", "stream", "-o", "yaml"]);
    assert!(!status.contains("s3cr3t-pw"), "{status}");

    // A rule the CRD enforces at admission: the settings of another type are refused.
    let mixed = ns.apply(
        "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {name: mixed}\nspec:\n  type: kafka\n  kafka: {bootstrapServers: \"k:9092\", topic: t}\n  sqs: {queueUrl: \"https://sqs.us-east-1.amazonaws.com/1/q\", region: us-east-1}\n",
    );
    assert!(!mixed.status.success());
    assert!(
        String::from_utf8_lossy(&mixed.stderr)
            .contains("spec.sqs is only used when spec.type is sqs"),
        "{}",
        String::from_utf8_lossy(&mixed.stderr)
    );
}
