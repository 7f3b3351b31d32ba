//! Standalone configuration: the manifests folder at start and on reload, error reports, the
//! default namespace, and secret values that must never show.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{metric, Answer, Gateway, Receiver, API_KEY};
use serde_json::Value;

async fn reloads(gw: &Gateway, result: &str) -> f64 {
    metric(
        &gw.metrics().await,
        "hookstream_gateway_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// Polls until the reload counter for `result` exceeds `before`.
async fn wait_reloads(gw: &Gateway, result: &str, before: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let now = reloads(gw, result).await;
        if now > before {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no {result} reload within {within:?}:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ingest_id(gw: &Gateway, ns: &str, source: &str, body: &str) -> String {
    let r = gw.ingest(ns, source, body, &[]).await;
    assert_eq!(r.status(), 200, "ingest to {ns}/{source} refused");
    r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Sends an event every 200 ms until `receiver` has one of them; returns the delivered id.
async fn send_until_delivered(gw: &Gateway, receiver: &Receiver, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut sent = Vec::new();
    loop {
        sent.push(ingest_id(gw, "t", "in", r#"{"probe":true}"#).await);
        let got = receiver.received();
        if let Some(first) = got.first() {
            let id = first.header("x-hookstream-event-id").unwrap();
            assert!(
                sent.contains(&id),
                "delivered {id}, which was not sent after the change"
            );
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no event routed to {} within {within:?}:\n{}",
            receiver.url,
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SOURCE: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#;

fn route(destination: &str, connection: &str, url: &str) -> String {
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: {destination}, namespace: t}}
spec: {{type: http, http: {{url: "{url}/hook"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: {connection}, namespace: t}}
spec: {{source: in, destination: {destination}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_route_takes_effect_without_a_restart() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(SOURCE).await;
    let before = reloads(&gw, "success").await;
    let unrouted = ingest_id(&gw, "t", "in", r#"{"early":true}"#).await;
    gw.wait_event_status(&unrouted, "received", Duration::from_secs(2))
        .await;

    std::fs::write(
        gw.manifests_dir().join("routes.yaml"),
        route("out", "c", &receiver.url),
    )
    .unwrap();
    let changed = Instant::now();
    let id = send_until_delivered(&gw, &receiver, Duration::from_secs(3)).await;
    assert!(changed.elapsed() < Duration::from_secs(3));
    gw.wait_event_status(&id, "delivered", Duration::from_secs(3))
        .await;
    let after = wait_reloads(&gw, "success", before, Duration::from_secs(1)).await;
    assert_eq!(after, before + 1.0, "one change, one reload");
    assert_eq!(reloads(&gw, "failure").await, 0.0);

    // Events received before the route existed are not routed after the fact.
    let (_, early) = gw.get(&format!("/v1/events/{unrouted}")).await;
    assert_eq!(early["status"], "received");
    assert!(receiver
        .received()
        .iter()
        .all(|r| r.header("x-hookstream-event-id").unwrap() != unrouted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_are_refused_while_valid_edits_in_the_same_file_apply() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let gw = Gateway::start(&format!("{SOURCE}{}", route("one", "to-one", &first.url))).await;
    let id = ingest_id(&gw, "t", "in", r#"{"n":0}"#).await;
    gw.wait_event_status(&id, "delivered", Duration::from_secs(3))
        .await;
    let failures_before = reloads(&gw, "failure").await;
    let successes_before = reloads(&gw, "success").await;

    // A file with a valid route, a broken transform and a Connection to nothing.
    let broken = format!(
        r#"{}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: bad-transform, namespace: t}}
spec: {{source: in, destination: one, transform: {{jsonata: "{{ \"a\": (( }}"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: dangling, namespace: t}}
spec: {{source: in, destination: nowhere}}
"#,
        route("two", "to-two", &second.url)
    );
    std::fs::write(gw.manifests_dir().join("more.yaml"), &broken).unwrap();
    wait_reloads(&gw, "failure", failures_before, Duration::from_secs(3)).await;
    let log = gw.log();
    assert!(
        log.contains("Connection t/bad-transform") && log.contains("spec.transform.jsonata"),
        "{log}"
    );
    assert!(
        log.contains("Connection t/dangling") && log.contains("spec.destination"),
        "{log}"
    );
    assert!(log.contains("t/nowhere does not exist"), "{log}");
    assert!(log.contains("more.yaml"), "the log names the file: {log}");

    // Events still route as before, and the valid route of the same file applies: one broken
    // object holds back nothing else.
    send_until_delivered(&gw, &second, Duration::from_secs(3)).await;
    for n in 1..=3 {
        let id = ingest_id(&gw, "t", "in", &format!(r#"{{"n":{n}}}"#)).await;
        gw.wait_event_status(&id, "delivered", Duration::from_secs(3))
            .await;
    }
    assert!(first.received().len() >= 4);
    let (_, events) = gw.get("/v1/events?limit=1").await;
    let latest = events["events"][0]["id"].as_str().unwrap().to_owned();
    let (_, attempts) = gw
        .get(&format!("/v1/delivery-attempts?event_id={latest}"))
        .await;
    let names: Vec<&str> = attempts["delivery_attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["destination_name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "the never-valid Connections are not served: {names:?}"
    );
    assert_eq!(reloads(&gw, "success").await, successes_before);

    // Fixing the file clears the problems.
    std::fs::write(
        gw.manifests_dir().join("more.yaml"),
        route("two", "to-two", &second.url),
    )
    .unwrap();
    wait_reloads(&gw, "success", successes_before, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_broken_by_an_edit_keeps_serving_its_last_valid_version() {
    let receiver = Receiver::start().await;
    let connection = |transform: &str| {
        format!(
            "{SOURCE}---\napiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: one, namespace: t}}\nspec: {{type: http, http: {{url: \"{}/hook\"}}}}\n---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: to-one, namespace: t}}\nspec:\n  source: in\n  destination: one\n  transform:\n    jsonata: '{transform}'\n",
            receiver.url
        )
    };
    let gw = Gateway::start(&connection(r#"{"v": 1}"#)).await;
    let failures_before = reloads(&gw, "failure").await;
    // The body of the n-th delivery.
    let delivered_body = |n: usize| {
        let receiver = receiver.clone();
        async move { receiver.wait_for(n, Duration::from_secs(5)).await[n - 1].json() }
    };
    ingest_id(&gw, "t", "in", "{}").await;
    assert_eq!(delivered_body(1).await, serde_json::json!({"v": 1}));

    // An edit with a misspelt function: refused, and the last valid transform keeps serving.
    std::fs::write(
        gw.manifests_dir().join("main.yaml"),
        connection(r#"{"v": $upercase("x")}"#),
    )
    .unwrap();
    wait_reloads(&gw, "failure", failures_before, Duration::from_secs(3)).await;
    let log = gw.log();
    assert!(
        log.contains("$upercase") && log.contains("Connection t/to-one"),
        "{log}"
    );
    ingest_id(&gw, "t", "in", "{}").await;
    assert_eq!(
        delivered_body(2).await,
        serde_json::json!({"v": 1}),
        "served in its last valid version"
    );

    // A file that stops parsing keeps serving what it held.
    std::fs::write(gw.manifests_dir().join("main.yaml"), "kind: [").unwrap();
    wait_reloads(
        &gw,
        "failure",
        failures_before + 1.0,
        Duration::from_secs(3),
    )
    .await;
    ingest_id(&gw, "t", "in", "{}").await;
    assert_eq!(delivered_body(3).await, serde_json::json!({"v": 1}));

    // The fix applies.
    std::fs::write(
        gw.manifests_dir().join("main.yaml"),
        connection(r#"{"v": 2}"#),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 3;
    loop {
        ingest_id(&gw, "t", "in", "{}").await;
        n += 1;
        if delivered_body(n).await == serde_json::json!({"v": 2}) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fix did not apply:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_syntax_error_on_reload_keeps_the_config_and_a_later_fix_applies() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let gw = Gateway::start(&format!("{SOURCE}{}", route("one", "to-one", &first.url))).await;
    let failures_before = reloads(&gw, "failure").await;
    let successes_before = reloads(&gw, "success").await;

    let file = gw.manifests_dir().join("typo.yaml");
    std::fs::write(&file, "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {name: two, namespace: t\n").unwrap();
    wait_reloads(&gw, "failure", failures_before, Duration::from_secs(3)).await;
    let log = gw.log();
    assert!(
        log.contains("typo.yaml") && log.contains("not valid YAML"),
        "{log}"
    );
    let id = ingest_id(&gw, "t", "in", r#"{"still":"routed"}"#).await;
    gw.wait_event_status(&id, "delivered", Duration::from_secs(3))
        .await;

    // The reload machinery is still alive: fixing the file applies it.
    std::fs::write(&file, route("two", "to-two", &second.url)).unwrap();
    send_until_delivered(&gw, &second, Duration::from_secs(3)).await;
    wait_reloads(&gw, "success", successes_before, Duration::from_secs(1)).await;
}

/// Runs the gateway binary on `dir` and returns its exit status and stderr.
fn run_on(dir: &Path) -> (std::process::ExitStatus, String) {
    let db = dir.parent().unwrap().join("hookstream.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookstream-gateway"))
        .arg("--manifests")
        .arg(dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database")
        .arg(format!("sqlite://{}", db.display()))
        .env("HOOKSTREAM_API_KEYS", API_KEY)
        .env_remove("HOOKSTREAM_MANIFESTS")
        .env_remove("HOOKSTREAM_DATABASE_URL")
        .env_remove("HOOKSTREAM_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("the gateway kept running on an invalid manifests folder");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

fn write(dir: &Path, path: &str, text: &str) -> String {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, text).unwrap();
    file.display().to_string()
}

/// The stderr line that names `file`, asserting it carries every one of `parts`.
fn line_about<'a>(stderr: &'a str, file: &str, parts: &[&str]) -> &'a str {
    let line = stderr
        .lines()
        .find(|l| l.contains(file))
        .unwrap_or_else(|| panic!("no error names {file}:\n{stderr}"));
    for part in parts {
        assert!(
            line.contains(part),
            "the error about {file} lacks {part:?}: {line}\n{stderr}"
        );
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_folder_at_start_exits_non_zero_and_lists_every_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    let destinations = write(
        &dir,
        "destinations.yaml",
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: x}
spec: {}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: ok, namespace: x}
spec: {type: http, http: {url: "http://127.0.0.1:9/ok"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: broken-url, namespace: x}
spec: {type: http, http: {url: "not a url"}}
"#,
    );
    let routes = write(
        &dir,
        "nested/routes.yaml",
        r#"
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: bad-filter, namespace: x}
spec:
  source: in
  destination: ok
  filters: [{field: body.amount, op: gt, value: "lots"}]
"#,
    );
    let (status, stderr) = run_on(&dir);
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    line_about(
        &stderr,
        &destinations,
        &[
            "Destination",
            "x/broken-url",
            "spec.http.url",
            "not a valid URL",
        ],
    );
    line_about(
        &stderr,
        &routes,
        &[
            "Connection",
            "x/bad-filter",
            "spec.filters[0].value",
            "needs a number",
        ],
    );
    assert!(stderr.contains("2 errors"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_syntax_errors_and_unknown_kinds_are_reported_with_their_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    let syntax = write(
        &dir,
        "syntax.yaml",
        "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {name: a, namespace: x\nspec: {}\n",
    );
    let kind = write(
        &dir,
        "sub/kinds.json",
        r#"{"apiVersion": "hookstream.io/v1alpha1", "kind": "Sauce", "metadata": {"name": "typo", "namespace": "x"}, "spec": {}}"#,
    );
    let (status, stderr) = run_on(&dir);
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    line_about(&stderr, &syntax, &["YAML"]);
    line_about(&stderr, &kind, &["Sauce", "unknown kind", "typo"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_errors_name_the_object_in_its_own_namespace() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    let file = write(
        &dir,
        "d.yaml",
        "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {name: d, namespace: shop}\nspec: {type: http, http: {url: 'http://127.0.0.1:9', timeout: 5}}\n",
    );
    let (status, stderr) = run_on(&dir);
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    line_about(
        &stderr,
        &file,
        &[
            "Destination",
            "shop/d",
            "spec.http.timeout",
            "unknown field",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_appear_in_api_answers_or_the_log() {
    const HEADER_SECRET: &str = "MARKER-header-5e1f9c";
    const SIGNING_SECRET: &str = "MARKER-signing-77ab02";
    const SOURCE_SECRET: &str = "MARKER-source-31cd44";
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500)]);
    let yaml = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: t}}
stringData: {{header: "{HEADER_SECRET}", signing: "{SIGNING_SECRET}", inbound: "{SOURCE_SECRET}"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: t}}
spec:
  verification: {{type: hmac-sha256, secretRef: {{name: creds, key: inbound}}, header: X-Signature}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec:
  type: http
  http:
    url: "{}/hook"
    headersFrom: [{{name: X-Token, secretRef: {{name: creds, key: header}}}}]
  signing: {{secretRef: {{name: creds, key: signing}}}}
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
    let body = r#"{"secret":"not really"}"#;
    let signature = format!("sha256={}", common::hmac_sha256_hex(SOURCE_SECRET, body));
    let r = gw
        .ingest("t", "in", body, &[("x-signature", &signature)])
        .await;
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = gw
        .ingest("t", "in", body, &[("x-signature", "sha256=00")])
        .await;
    assert_eq!(refused.status(), 401);
    let refused = refused.text().await.unwrap();

    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    assert_eq!(
        receiver.received()[1].header("x-token").as_deref(),
        Some(HEADER_SECRET),
        "the secret header is sent"
    );

    let mut seen = vec![event.to_string(), refused];
    for path in [
        "/v1/events",
        "/v1/delivery-attempts",
        "/v1/delivery-attempts?is_dlq=0",
        "/v1/destinations/t/out/circuit",
    ] {
        seen.push(gw.get(path).await.1.to_string());
    }
    for attempt in event["delivery_attempts"].as_array().unwrap() {
        let (_, detail) = gw
            .get(&format!(
                "/v1/delivery-attempts/{}",
                attempt["id"].as_str().unwrap()
            ))
            .await;
        assert!(detail["request_headers"].is_object(), "{detail}");
        seen.push(detail.to_string());
    }
    seen.push(gw.metrics().await);
    let (_, retried) = gw.post(&format!("/v1/events/{id}/retry")).await;
    seen.push(retried.to_string());
    receiver.wait_for(3, Duration::from_secs(5)).await;
    gw.wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    seen.push(gw.log());
    for text in &seen {
        for secret in [HEADER_SECRET, SIGNING_SECRET, SOURCE_SECRET] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_without_a_namespace_json_files_and_sub_folders_are_read() {
    let receiver = Receiver::start().await;
    let destination = format!(
        r#"{{"apiVersion": "hookstream.io/v1alpha1", "kind": "Destination",
            "metadata": {{"name": "plain-out"}},
            "spec": {{"type": "http", "http": {{"url": "{}/json"}}}}}}"#,
        receiver.url
    );
    let source =
        "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {name: plain}\nspec: {}\n";
    let gw = Gateway::start_with_files(&[
        ("source.yaml", source),
        ("nested/deeper/destination.json", &destination),
        (
            "nested/connection.yml",
            "apiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {name: plain-c}\nspec: {source: plain, destination: plain-out}\n",
        ),
        // Hidden folders (like the ..data links of a mounted ConfigMap) and other files are
        // not manifests: a duplicate Source there must not count.
        (".hidden/copy.yaml", source),
        ("README.md", "not a manifest"),
    ])
    .await;
    let id = ingest_id(&gw, "default", "plain", r#"{"ns":"default"}"#).await;
    let event = gw
        .wait_event_status(&id, "delivered", Duration::from_secs(5))
        .await;
    assert_eq!(event["source_id"], "default/plain");
    let got = receiver.wait_for(1, Duration::from_secs(1)).await;
    assert_eq!(got[0].uri.path(), "/json");
    let (code, circuit) = gw.get("/v1/destinations/default/plain-out/circuit").await;
    assert_eq!(code, 200, "{circuit}");
    let r = gw.ingest("other", "plain", "{}", &[]).await;
    assert_eq!(r.status(), 404, "the Source is in default only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_connection_stops_new_events_but_keeps_queued_deliveries() {
    let receiver = Receiver::start().await;
    receiver.set_default(common::Answer::status(503));
    let routes = |paused: bool| {
        format!(
            r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: t}}
spec:
  type: http
  http: {{url: "{}/hook"}}
  retry: {{maxRetries: 20, backoff: fixed, intervals: [300ms]}}
  circuitBreaker: {{failureThreshold: 1000}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: t}}
spec: {{source: in, destination: out, paused: {paused}}}
"#,
            receiver.url
        )
    };
    let gw = Gateway::start(&format!("{SOURCE}{}", routes(false))).await;
    let queued = ingest_id(&gw, "t", "in", r#"{"n":"before"}"#).await;
    receiver.wait_for(1, Duration::from_secs(5)).await;

    let before = reloads(&gw, "success").await;
    std::fs::write(
        gw.manifests_dir().join("main.yaml"),
        format!("{SOURCE}{}", routes(true)),
    )
    .unwrap();
    wait_reloads(&gw, "success", before, Duration::from_secs(5)).await;
    let later = ingest_id(&gw, "t", "in", r#"{"n":"after"}"#).await;

    // The destination recovers: the delivery queued before the pause still goes out.
    receiver.set_default(common::Answer::status(200));
    gw.wait_event_status(&queued, "delivered", Duration::from_secs(5))
        .await;
    let (_, event) = gw.get(&format!("/v1/events/{later}")).await;
    assert_eq!(
        event["status"], "received",
        "a paused connection routes no new event: {event}"
    );
    assert!(event["delivery_attempts"].as_array().unwrap().is_empty());
}
