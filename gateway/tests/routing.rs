//! Routing through HTTP: Connection filters (every operator on every field root), fan-out,
//! JSONata transforms and their failures, and the refusal to start on broken routing
//! manifests.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Answer, Gateway, Receiver};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

const SOURCE: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: in, namespace: t}
spec: {}
"#;

/// Destination `d-{name}` posting to `{url}/{name}`, with no retries unless `retry` says so.
fn destination(name: &str, url: &str, retry: &str) -> String {
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: d-{name}, namespace: t}}
spec:
  type: http
  http: {{url: "{url}/{name}", timeoutSeconds: 5}}
  retry: {retry}
  circuitBreaker: {{failureThreshold: 100}}
"#
    )
}

/// Connection `{name}` from Source `in` to Destination `d-{name}`.
fn connection(name: &str, filters: &str, transform: Option<&str>) -> String {
    let transform = transform.map_or(String::new(), |t| {
        let body: String = t.lines().map(|l| format!("      {l}\n")).collect();
        format!("  transform:\n    jsonata: |\n{body}")
    });
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: {name}, namespace: t}}
spec:
  source: in
  destination: d-{name}
  filters: {filters}
{transform}"#
    )
}

/// A request to send to the Source.
#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    query: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    content_type: &'static str,
    body: &'static str,
}

/// A JSON POST of `body`.
fn post(body: &'static str) -> Req {
    Req {
        method: "POST",
        query: "",
        headers: Vec::new(),
        content_type: "application/json",
        body,
    }
}

impl Req {
    fn method(mut self, method: &'static str) -> Req {
        self.method = method;
        self
    }
    fn query(mut self, query: &'static str) -> Req {
        self.query = query;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.push((name, value));
        self
    }
    fn content_type(mut self, content_type: &'static str) -> Req {
        self.content_type = content_type;
        self
    }
}

/// Sends `req` to Source `t/in`; returns the event id.
async fn send(gw: &Gateway, req: &Req) -> String {
    let client = reqwest::Client::new();
    let mut builder = client
        .request(
            req.method.parse().expect("HTTP method"),
            format!("{}/v1/ingest/t/in{}", gw.base, req.query),
        )
        .header("content-type", req.content_type)
        .body(req.body);
    for (k, v) in &req.headers {
        builder = builder.header(*k, *v);
    }
    let r = builder.send().await.expect("send to the gateway");
    let status = r.status();
    let body: Value = r.json().await.expect("JSON answer");
    assert_eq!(status, 200, "{req:?}: {body}");
    body["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event_id in {body}"))
        .to_owned()
}

async fn event(gw: &Gateway, id: &str) -> Value {
    let (code, body) = gw.get(&format!("/v1/events/{id}")).await;
    assert_eq!(code, 200, "GET /v1/events/{id}: {body}");
    body
}

async fn attempts(gw: &Gateway, event_id: &str) -> Vec<Value> {
    let (code, body) = gw
        .get(&format!("/v1/delivery-attempts?event_id={event_id}"))
        .await;
    assert_eq!(code, 200, "{body}");
    body["delivery_attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no delivery_attempts in {body}"))
        .clone()
}

fn event_ids(receiver: &Receiver) -> Vec<String> {
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("x-hookstream-event-id"))
        .collect();
    ids.sort();
    ids
}

/// Starts a gateway with one Connection (and receiver) per `(name, filters)` route, sends
/// every request and checks that each reached exactly the routes listed with it: an event
/// no route matched is `received` with no delivery; a routed one is `delivered` to exactly
/// its routes; each receiver got exactly the events meant for it, once.
async fn check_routing(routes: &[(&str, &str)], events: &[(Req, &[&str])], extra_args: &[&str]) {
    // Every route must be exercised both ways, or the check proves nothing about it.
    for (name, filters) in routes {
        assert!(
            events.iter().any(|(_, to)| to.contains(name)),
            "route {name} {filters} has no positive case"
        );
        assert!(
            events.iter().any(|(_, to)| !to.contains(name)),
            "route {name} {filters} has no negative case"
        );
    }
    let mut manifests = SOURCE.to_owned();
    let mut receivers = BTreeMap::new();
    for (name, filters) in routes {
        let receiver = Receiver::start().await;
        manifests += &destination(name, &receiver.url, "{maxRetries: 0}");
        manifests += &connection(name, filters, None);
        receivers.insert(*name, receiver);
    }
    let gw = Gateway::start_with(&manifests, extra_args).await;
    let mut sent = Vec::new();
    for (req, to) in events {
        sent.push((send(&gw, req).await, req, *to));
    }
    for (id, req, to) in &sent {
        if to.is_empty() {
            let e = event(&gw, id).await;
            assert_eq!(e["status"], "received", "{req:?} matched no route: {e}");
            assert_eq!(e["delivery_attempts"], json!([]), "{req:?}: {e}");
        } else {
            let e = gw.wait_event_status(id, "delivered", WAIT).await;
            let got: BTreeSet<String> = e["delivery_attempts"]
                .as_array()
                .expect("delivery_attempts list")
                .iter()
                .map(|a| {
                    a["destination_name"]
                        .as_str()
                        .expect("destination_name")
                        .to_owned()
                })
                .collect();
            let want: BTreeSet<String> = to.iter().map(|n| format!("d-{n}")).collect();
            assert_eq!(got, want, "{req:?} routed to the wrong connections");
        }
    }
    for (name, receiver) in &receivers {
        let mut want: Vec<String> = sent
            .iter()
            .filter(|(_, _, to)| to.contains(name))
            .map(|(id, _, _)| id.clone())
            .collect();
        want.sort();
        assert_eq!(
            event_ids(receiver),
            want,
            "receiver of route {name} got other events than its matches"
        );
    }
}

// --- the nine operators ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eq_compares_body_headers_query_method_content_type_and_source_ip() {
    let routes = [
        (
            "nested",
            "[{field: body.data.object.status, op: eq, value: succeeded}]",
        ),
        ("index", "[{field: body.items.1.sku, op: eq, value: B-2}]"),
        (
            "alias",
            "[{field: payload.type, op: eq, value: order.created}]",
        ),
        ("number", "[{field: body.amount, op: eq, value: 1500}]"),
        ("boolean", "[{field: body.paid, op: eq, value: true}]"),
        (
            "header",
            "[{field: headers.X-Event-Type, op: eq, value: push}]",
        ),
        ("query", "[{field: query.topic, op: eq, value: orders}]"),
        ("method", "[{field: method, op: eq, value: PUT}]"),
        (
            "ctype",
            "[{field: content_type, op: eq, value: text/plain}]",
        ),
        (
            "ip",
            r#"[{field: source_ip, op: eq, value: "203.0.113.9"}]"#,
        ),
    ];
    let all = &[
        "nested", "index", "alias", "number", "boolean", "header", "query", "ip",
    ][..];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"type":"order.created","amount":1500,"paid":true,"data":{"object":{"status":"succeeded"}},"items":[{"sku":"A-1"},{"sku":"B-2"}]}"#)
                .header("X-EVENT-TYPE", "push")
                .header("X-Forwarded-For", "203.0.113.9")
                .query("?topic=orders"),
            all,
        ),
        (
            post(r#"{"type":"order.created.v2","amount":1500.5,"paid":"true","data":{"object":{"status":"Succeeded"}},"items":[{"sku":"B-2"},{"sku":"A-1"}]}"#)
                .method("PUT")
                .header("x-event-type", "pushed")
                .header("X-Forwarded-For", "203.0.113.90")
                .query("?topic=orders-eu&Topic=orders"),
            &["method"],
        ),
        (post("type=order.created&amount=1500").content_type("text/plain"), &["ctype"]),
        (post(r#"{"items":[{"sku":"B-2"}]}"#).content_type("text/plain; charset=utf-8"), &[]),
    ];
    check_routing(&routes, &events, &["--trusted-proxies", "127.0.0.1/32"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neq_matches_other_values_and_missing_fields() {
    let routes = [
        (
            "body",
            "[{field: body.type, op: neq, value: order.created}]",
        ),
        (
            "header",
            "[{field: headers.X-Event-Type, op: neq, value: push}]",
        ),
        ("query", "[{field: query.topic, op: neq, value: orders}]"),
        ("method", "[{field: method, op: neq, value: POST}]"),
        ("number", "[{field: body.amount, op: neq, value: 1500}]"),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"type":"order.created","amount":1500}"#)
                .header("X-Event-Type", "push")
                .query("?topic=orders"),
            &[],
        ),
        (
            post(r#"{"type":"order.paid","amount":1500}"#)
                .header("X-Event-Type", "push")
                .query("?topic=orders"),
            &["body"],
        ),
        (
            post(r#"{"type":"order.created","amount":1500.0}"#).method("PATCH"),
            &["header", "query", "method"],
        ),
        (
            post("{}")
                .header("X-Event-Type", "push")
                .query("?topic=orders"),
            &["body", "number"],
        ),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contains_matches_substrings_and_array_members() {
    let routes = [
        (
            "type",
            r#"[{field: body.type, op: contains, value: "order."}]"#,
        ),
        ("tags", "[{field: body.tags, op: contains, value: vip}]"),
        (
            "header",
            "[{field: headers.X-Source, op: contains, value: hook}]",
        ),
        ("query", "[{field: query.q, op: contains, value: foo}]"),
        (
            "ctype",
            "[{field: content_type, op: contains, value: json}]",
        ),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"type":"order.created","tags":["eu","vip"]}"#)
                .header("X-Source", "github-hook")
                .query("?q=foobar"),
            &["type", "tags", "header", "query", "ctype"],
        ),
        (
            post("order. vip hook foo json").content_type("text/plain"),
            &[],
        ),
        (
            post(r#"{"type":"refund.created","tags":["vipx"],"other":"order."}"#)
                .header("X-Source", "gitlab")
                .query("?q=bar"),
            &["ctype"],
        ),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gt_compares_numbers_strictly() {
    let routes = [
        ("amount", "[{field: body.amount, op: gt, value: 100}]"),
        ("qty", "[{field: body.items.0.qty, op: gt, value: 1}]"),
        ("ratio", "[{field: payload.ratio, op: gt, value: 0.5}]"),
        ("header", "[{field: headers.X-Count, op: gt, value: 5}]"),
        ("query", "[{field: query.page, op: gt, value: 2}]"),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"amount":101,"items":[{"qty":2}],"ratio":0.51}"#)
                .header("X-Count", "6")
                .query("?page=3"),
            &["amount", "qty", "ratio", "header", "query"],
        ),
        (
            post(r#"{"amount":100,"items":[{"qty":1}],"ratio":0.5}"#)
                .header("X-Count", "5")
                .query("?page=2"),
            &[],
        ),
        (
            post(r#"{"amount":"lots","items":[],"ratio":null}"#)
                .header("X-Count", "many")
                .query("?page=x"),
            &[],
        ),
        (post(r#"{"amount":-5,"ratio":2}"#), &["ratio"]),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gte_includes_the_boundary() {
    let routes = [
        ("amount", "[{field: body.amount, op: gte, value: 100}]"),
        ("qty", "[{field: body.items.0.qty, op: gte, value: 2}]"),
        ("ratio", "[{field: body.ratio, op: gte, value: 0.5}]"),
        ("header", "[{field: headers.x-count, op: gte, value: 5}]"),
        ("query", "[{field: query.page, op: gte, value: 2}]"),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"amount":100,"items":[{"qty":2}],"ratio":0.5}"#)
                .header("X-Count", "5")
                .query("?page=2"),
            &["amount", "qty", "ratio", "header", "query"],
        ),
        (
            post(r#"{"amount":99.99,"items":[{"qty":1}],"ratio":0.49}"#)
                .header("X-Count", "4")
                .query("?page=1"),
            &[],
        ),
        (post("{}"), &[]),
        (post(r#"{"amount":1e6}"#), &["amount"]),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lt_compares_numbers_strictly_and_ignores_missing_fields() {
    let routes = [
        ("amount", "[{field: body.amount, op: lt, value: 100}]"),
        ("delta", "[{field: body.delta, op: lt, value: 0}]"),
        ("header", "[{field: headers.X-Count, op: lt, value: 5}]"),
        ("query", "[{field: query.page, op: lt, value: 2}]"),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"amount":99.5,"delta":-1}"#)
                .header("X-Count", "4")
                .query("?page=1"),
            &["amount", "delta", "header", "query"],
        ),
        (
            post(r#"{"amount":100,"delta":0}"#)
                .header("X-Count", "5")
                .query("?page=2"),
            &[],
        ),
        // A missing field is not zero.
        (post("{}"), &[]),
        (
            post(r#"{"amount":"lots","delta":"-"}"#).query("?page=-3"),
            &["query"],
        ),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lte_includes_the_boundary() {
    let routes = [
        ("amount", "[{field: body.amount, op: lte, value: 100}]"),
        ("header", "[{field: headers.X-Count, op: lte, value: 5}]"),
        ("query", "[{field: query.page, op: lte, value: 2}]"),
        (
            "index",
            "[{field: body.items.1.price, op: lte, value: 9.99}]",
        ),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"amount":100,"items":[{"price":50},{"price":9.99}]}"#)
                .header("X-Count", "5")
                .query("?page=2"),
            &["amount", "header", "query", "index"],
        ),
        (
            post(r#"{"amount":100.01,"items":[{"price":9.99}]}"#)
                .header("X-Count", "6")
                .query("?page=3"),
            &[],
        ),
        (
            post(r#"{"amount":-1,"items":[{"price":1},{"price":10}]}"#),
            &["amount"],
        ),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exists_true_and_false() {
    let routes = [
        ("id", "[{field: body.data.id, op: exists}]"),
        (
            "id-true",
            "[{field: body.data.id, op: exists, value: true}]",
        ),
        (
            "id-false",
            "[{field: body.data.id, op: exists, value: false}]",
        ),
        (
            "header",
            "[{field: headers.X-Trace-Id, op: exists, value: true}]",
        ),
        (
            "no-query",
            "[{field: query.debug, op: exists, value: false}]",
        ),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"data":{"id":"a"}}"#)
                .header("x-trace-id", "t1")
                .query("?debug=1"),
            &["id", "id-true", "header"],
        ),
        (post(r#"{"data":{}}"#), &["id-false", "no-query"]),
        // null counts as absent; an empty query value is present.
        (
            post(r#"{"data":{"id":null}}"#).query("?debug="),
            &["id-false"],
        ),
        (post(r#"{"data":{"id":0}}"#), &["id", "id-true", "no-query"]),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_matches_any_listed_value() {
    let routes = [
        (
            "type",
            "[{field: body.type, op: in, value: [order.created, order.paid]}]",
        ),
        ("method", "[{field: method, op: in, value: [PUT, PATCH]}]"),
        ("amount", "[{field: body.amount, op: in, value: [1, 2, 3]}]"),
        (
            "header",
            "[{field: headers.X-Region, op: in, value: [eu, us]}]",
        ),
        ("query", "[{field: query.env, op: in, value: [prod]}]"),
    ];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"type":"order.paid","amount":2}"#)
                .header("X-Region", "eu")
                .query("?env=prod"),
            &["type", "amount", "header", "query"],
        ),
        (
            post(r#"{"type":"order.refunded","amount":4}"#)
                .method("PATCH")
                .header("X-Region", "apac")
                .query("?env=staging"),
            &["method"],
        ),
        (
            post(r#"{"type":["order.paid"],"amount":[1]}"#).header("X-Region", "EU"),
            &[],
        ),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_matches_only_neq_and_exists_false() {
    let routes = [
        ("eq", "[{field: body.x, op: eq, value: 5}]"),
        ("neq", "[{field: body.x, op: neq, value: 6}]"),
        ("contains", "[{field: body.s, op: contains, value: b}]"),
        ("gt", "[{field: body.x, op: gt, value: 4}]"),
        ("gte", "[{field: body.x, op: gte, value: 5}]"),
        ("lt", "[{field: body.x, op: lt, value: 6}]"),
        ("lte", "[{field: body.x, op: lte, value: 5}]"),
        ("exists", "[{field: body.x, op: exists, value: true}]"),
        ("absent", "[{field: body.x, op: exists, value: false}]"),
        ("in", "[{field: body.x, op: in, value: [5]}]"),
        (
            "header-neq",
            "[{field: headers.X-Missing, op: neq, value: a}]",
        ),
        (
            "query-absent",
            "[{field: query.missing, op: exists, value: false}]",
        ),
    ];
    let on_missing = &["neq", "absent", "header-neq", "query-absent"][..];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"x":5,"s":"abc"}"#),
            &[
                "eq",
                "neq",
                "contains",
                "gt",
                "gte",
                "lt",
                "lte",
                "exists",
                "in",
                "header-neq",
                "query-absent",
            ],
        ),
        (post("{}"), on_missing),
        // Not JSON at all: every body path is missing.
        (
            post("x=5&s=abc").content_type("application/x-www-form-urlencoded"),
            on_missing,
        ),
        (
            post(r#"{"x":6,"s":"zzz"}"#)
                .header("X-Missing", "a")
                .query("?missing=1"),
            &["gt", "gte", "exists"],
        ),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_of_a_connection_must_all_match() {
    let routes = [(
        "both",
        "[{field: body.type, op: eq, value: order.paid}, {field: body.amount, op: gte, value: 100}, {field: headers.X-Region, op: eq, value: eu}]",
    )];
    let events: Vec<(Req, &[&str])> = vec![
        (
            post(r#"{"type":"order.paid","amount":100}"#).header("X-Region", "eu"),
            &["both"],
        ),
        (
            post(r#"{"type":"order.paid","amount":99}"#).header("X-Region", "eu"),
            &[],
        ),
        (
            post(r#"{"type":"order.created","amount":100}"#).header("X-Region", "eu"),
            &[],
        ),
        (post(r#"{"type":"order.paid","amount":100}"#), &[]),
    ];
    check_routing(&routes, &events, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_connection_routes_nothing() {
    let paused = Receiver::start().await;
    let active = Receiver::start().await;
    let manifests = SOURCE.to_owned()
        + &destination("paused", &paused.url, "{maxRetries: 0}")
        + &connection("paused", "[]", None)
        + "  paused: true\n"
        + &destination("active", &active.url, "{maxRetries: 0}")
        + &connection("active", "[{field: body.go, op: eq, value: true}]", None);
    let gw = Gateway::start(&manifests).await;
    let routed = send(&gw, &post(r#"{"go":true}"#)).await;
    let unrouted = send(&gw, &post(r#"{"go":false}"#)).await;
    let e = gw.wait_event_status(&routed, "delivered", WAIT).await;
    assert_eq!(
        e["delivery_attempts"].as_array().map(Vec::len),
        Some(1),
        "only the active connection: {e}"
    );
    assert_eq!(
        event(&gw, &unrouted).await["status"],
        "received",
        "a paused connection does not count as a match"
    );
    assert_eq!(event_ids(&active), vec![routed]);
    assert!(paused.received().is_empty());
}

// --- fan-out -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_to_each_matching_connection_independently() {
    let failing = Receiver::start().await;
    failing.set_default(Answer::status(500));
    let orders = Receiver::start().await;
    let refunds = Receiver::start().await;
    let manifests = SOURCE.to_owned()
        + &destination(
            "all",
            &failing.url,
            "{maxRetries: 2, backoff: fixed, intervals: [200ms]}",
        )
        + &connection("all", "[]", None)
        + &destination("orders", &orders.url, "{maxRetries: 0}")
        + &connection("orders", "[{field: body.kind, op: eq, value: order}]", None)
        + &destination("refunds", &refunds.url, "{maxRetries: 0}")
        + &connection(
            "refunds",
            "[{field: body.kind, op: eq, value: refund}]",
            None,
        );
    let gw = Gateway::start(&manifests).await;

    let order_body = r#"{"kind":"order","id":1}"#;
    let order = send(&gw, &post(order_body)).await;
    let refund = send(&gw, &post(r#"{"kind":"refund","id":2}"#)).await;

    // The failing destination gets every event three times (first attempt and two retries)
    // and dead-letters it; the others get their one event once, and succeed.
    for id in [&order, &refund] {
        gw.wait_event_status(id, "failed", WAIT).await;
    }
    assert_eq!(event_ids(&orders), vec![order.clone()], "orders receiver");
    assert_eq!(
        event_ids(&refunds),
        vec![refund.clone()],
        "refunds receiver"
    );
    assert_eq!(
        failing.received().len(),
        6,
        "failing receiver: 3 attempts for each of 2 events"
    );
    assert_eq!(orders.received()[0].body.as_ref(), order_body.as_bytes());

    let list = attempts(&gw, &order).await;
    let by_destination = |name: &str| -> Vec<Value> {
        list.iter()
            .filter(|a| a["destination_name"] == name)
            .cloned()
            .collect()
    };
    let ok = by_destination("d-orders");
    assert_eq!(ok.len(), 1, "{list:?}");
    assert_eq!(ok[0]["status"], "success");
    assert_eq!(ok[0]["status_code"], 200);
    let failed = by_destination("d-all");
    assert_eq!(failed.len(), 3, "{list:?}");
    assert!(
        failed
            .iter()
            .all(|a| a["status"] == "failed" && a["status_code"] == 500),
        "{failed:?}"
    );
    assert_eq!(
        failed.iter().filter(|a| a["is_dlq"] == 1).count(),
        1,
        "the last attempt is dead-lettered: {failed:?}"
    );
    assert!(by_destination("d-refunds").is_empty(), "{list:?}");
}

// --- transforms ----------------------------------------------------------------------------

/// A gateway with one transformed Connection `t` (no retries) and one plain Connection
/// `plain`, each with its own receiver.
async fn transform_gateway(jsonata: &str) -> (Gateway, Receiver, Receiver) {
    let transformed = Receiver::start().await;
    let plain = Receiver::start().await;
    let manifests = SOURCE.to_owned()
        + &destination("t", &transformed.url, "{maxRetries: 0}")
        + &connection("t", "[]", Some(jsonata))
        + &destination("plain", &plain.url, "{maxRetries: 0}")
        + &connection("plain", "[]", None);
    (Gateway::start(&manifests).await, transformed, plain)
}

/// The attempt of `event_id` at Destination `d-t`, once the event is finished.
async fn transform_attempt(gw: &Gateway, event_id: &str, status: &str) -> Value {
    gw.wait_event_status(event_id, status, WAIT).await;
    let list = attempts(gw, event_id).await;
    let mine: Vec<&Value> = list
        .iter()
        .filter(|a| a["destination_name"] == "d-t")
        .collect();
    assert_eq!(mine.len(), 1, "one attempt at d-t: {list:?}");
    mine[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_output_is_delivered_as_json() {
    let (gw, transformed, plain) = transform_gateway(
        r#"{"orderId": data.id, "total": data.amount / 100, "first": data.items[0].sku}"#,
    )
    .await;
    let body = r#"{"data":{"id":"o-1","amount":1250,"items":[{"sku":"A"},{"sku":"B"}]}}"#;
    let id = send(&gw, &post(body).content_type("application/vnd.acme+json")).await;
    gw.wait_event_status(&id, "delivered", WAIT).await;

    let got = transformed.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].json(),
        json!({"orderId": "o-1", "total": 12.5, "first": "A"})
    );
    assert_eq!(
        got[0].header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        got[0].header("x-hookstream-event-id").as_deref(),
        Some(id.as_str())
    );
    // The Connection without a transform gets the request as sent.
    let got = plain.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_ref(), body.as_bytes());
    assert_eq!(
        got[0].header("content-type").as_deref(),
        Some("application/vnd.acme+json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_sees_headers_query_method_and_event() {
    let (gw, transformed, _plain) = transform_gateway(
        r#"{
  "shop": $headers.`x-shop-id`,
  "page": $query.page,
  "tags": $query.tag,
  "method": $method,
  "id": $event.id,
  "source": $event.source,
  "namespace": $event.namespace,
  "path": $event.path,
  "n": $event.body.n,
  "input": n
}"#,
    )
    .await;
    let with = send(
        &gw,
        &post(r#"{"n":1}"#)
            .method("PUT")
            .query("?page=2&tag=a&tag=b")
            .header("X-Shop-Id", "shop-7"),
    )
    .await;
    let without = send(&gw, &post(r#"{"n":2}"#)).await;
    gw.wait_event_status(&with, "delivered", WAIT).await;
    gw.wait_event_status(&without, "delivered", WAIT).await;

    let got = transformed.received();
    let by_id = |id: &str| {
        got.iter()
            .find(|r| r.header("x-hookstream-event-id").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{id} not delivered"))
            .json()
    };
    assert_eq!(
        by_id(&with),
        json!({
            "shop": "shop-7",
            "page": "2",
            "tags": ["a", "b"],
            "method": "PUT",
            "id": with,
            "source": "in",
            "namespace": "t",
            "path": "/v1/ingest/t/in",
            "n": 1,
            "input": 1
        })
    );
    // Absent header and query values yield nothing, so their keys are left out.
    assert_eq!(
        by_id(&without),
        json!({"method": "POST", "id": without, "source": "in", "namespace": "t", "path": "/v1/ingest/t/in", "n": 2, "input": 2})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_runtime_errors_are_recorded_failed_attempts() {
    let errored = Receiver::start().await;
    let typed = Receiver::start().await;
    let fine = Receiver::start().await;
    let manifests = SOURCE.to_owned()
        // Retries are allowed, but an error the event causes comes back on every retry: the
        // delivery is dead-lettered at once.
        + &destination("err", &errored.url, "{maxRetries: 5, intervals: [1h]}")
        + &connection("err", "[]", Some(r#"$error("boom: " & data.id)"#))
        + &destination("type", &typed.url, "{maxRetries: 0}")
        + &connection("type", "[]", Some(r#"data.a + "x""#))
        + &destination("fine", &fine.url, "{maxRetries: 0}")
        + &connection("fine", "[]", Some(r#"{"a": data.a}"#));
    let gw = Gateway::start(&manifests).await;
    let first = send(&gw, &post(r#"{"data":{"a":1,"id":"x1"}}"#)).await;
    gw.wait_event_status(&first, "failed", WAIT).await;

    let list = attempts(&gw, &first).await;
    let attempt = |name: &str| -> Value {
        let mine: Vec<&Value> = list
            .iter()
            .filter(|a| a["destination_name"] == name)
            .collect();
        assert_eq!(mine.len(), 1, "{name}: {list:?}");
        mine[0].clone()
    };
    let err = attempt("d-err");
    assert_eq!(err["status"], "failed", "{err}");
    assert_eq!(
        err["status_code"],
        Value::Null,
        "the destination was not contacted: {err}"
    );
    let text = err["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("boom: x1"),
        "the $error message is recorded: {err}"
    );
    assert_eq!(err["is_dlq"], 1, "dead-lettered at once: {err}");
    let typ = attempt("d-type");
    assert_eq!(typ["status"], "failed", "{typ}");
    let text = typ["error"].as_str().unwrap_or_default();
    assert!(
        text.contains("T2002") && text.contains("must evaluate to a number"),
        "the JSONata type error is recorded: {typ}"
    );
    assert_eq!(attempt("d-fine")["status"], "success");
    assert!(
        errored.received().is_empty(),
        "a failed transform sends nothing"
    );
    assert!(
        typed.received().is_empty(),
        "a failed transform sends nothing"
    );

    // The gateway keeps serving.
    let second = send(&gw, &post(r#"{"data":{"a":2,"id":"x2"}}"#)).await;
    gw.wait_event_status(&second, "failed", WAIT).await;
    let got = fine.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].json(), json!({"a": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_yielding_nothing_is_a_recorded_failure() {
    let (gw, transformed, plain) = transform_gateway("data.missing").await;
    let empty = send(&gw, &post(r#"{"data":{"present":1}}"#)).await;
    let attempt = transform_attempt(&gw, &empty, "failed").await;
    assert_eq!(attempt["status"], "failed", "{attempt}");
    assert!(
        attempt["error"]
            .as_str()
            .unwrap_or_default()
            .contains("yielded nothing"),
        "{attempt}"
    );

    // The same transform on an event that has the field is delivered.
    let full = send(&gw, &post(r#"{"data":{"missing":{"found":true}}}"#)).await;
    let attempt = transform_attempt(&gw, &full, "delivered").await;
    assert_eq!(attempt["status"], "success");
    assert_eq!(event_ids(&transformed), vec![full.clone()]);
    assert_eq!(transformed.received()[0].json(), json!({"found": true}));
    assert_eq!(
        plain.received().len(),
        2,
        "the untransformed route is unaffected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_transform_is_a_recorded_failure_and_the_gateway_survives() {
    let (gw, transformed, plain) = transform_gateway("$formatInteger(data.a % data.b, 'w')").await;
    let hostile = send(&gw, &post(r#"{"data":{"a":10,"b":0}}"#)).await;
    let attempt = transform_attempt(&gw, &hostile, "failed").await;
    assert_eq!(attempt["status"], "failed", "{attempt}");
    let error = attempt["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("D3001") && error.contains("non-finite"),
        "{attempt}"
    );
    assert!(transformed.received().is_empty());

    // Still alive: ready, and the next event goes through the same transform.
    let (code, _) = gw.get("/v1/events?limit=1").await;
    assert_eq!(code, 200);
    let next = send(&gw, &post(r#"{"data":{"a":10,"b":3}}"#)).await;
    transform_attempt(&gw, &next, "delivered").await;
    assert_eq!(event_ids(&transformed), vec![next.clone()]);
    assert_eq!(transformed.received()[0].json(), json!("one"));
    assert_eq!(plain.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_and_crashing_transforms_are_recorded_failures() {
    let cases = [
        ("recursion", "($f := function($x) { $f($x + 1) }; $f(0))"),
        ("infinity", r#"{"r": data.a / data.b}"#),
        (
            "picture",
            "$fromMillis(1521801216617, '[D#1,2]/[M1,2]/[,2]')",
        ),
        ("roman", "$formatInteger(1e300, 'I')"),
    ];
    let control = Receiver::start().await;
    let mut receivers = Vec::new();
    let mut manifests = SOURCE.to_owned()
        + &destination("control", &control.url, "{maxRetries: 0}")
        + &connection("control", "[]", None);
    for (name, jsonata) in cases {
        let receiver = Receiver::start().await;
        manifests += &destination(name, &receiver.url, "{maxRetries: 0}");
        manifests += &connection(name, "[]", Some(jsonata));
        receivers.push((name, receiver));
    }
    let gw = Gateway::start(&manifests).await;
    for round in 0..2 {
        let id = send(&gw, &post(r#"{"data":{"a":10,"b":0}}"#)).await;
        gw.wait_event_status(&id, "failed", WAIT).await;
        let list = attempts(&gw, &id).await;
        for (name, _) in &receivers {
            let mine: Vec<&Value> = list
                .iter()
                .filter(|a| a["destination_name"] == format!("d-{name}"))
                .collect();
            assert_eq!(mine.len(), 1, "{name}: {list:?}");
            assert_eq!(mine[0]["status"], "failed", "{name}: {}", mine[0]);
            assert!(
                mine[0]["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("transform failed")),
                "{name}: {}",
                mine[0]
            );
        }
        assert_eq!(
            control.received().len(),
            round + 1,
            "the untransformed route still delivers"
        );
    }
    for (name, receiver) in &receivers {
        assert!(
            receiver.received().is_empty(),
            "{name}: a failed transform sends nothing"
        );
    }
}

// --- manifests the gateway refuses ---------------------------------------------------------

const DESTINATION: &str = r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: out, namespace: t}
spec:
  type: http
  http: {url: "http://127.0.0.1:9/hook"}
"#;

const BAD_TRANSFORM: &str = r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: bad-transform, namespace: t}
spec:
  source: in
  destination: out
  transform: {jsonata: '{"id": data.id'}
"#;

const BAD_FILTER: &str = r#"
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: bad-filter, namespace: t}
spec:
  source: in
  destination: out
  filters: [{field: bogus.type, op: eq, value: x}]
"#;

const GOOD_CONNECTION: &str = r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: good, namespace: t}
spec: {source: in, destination: out, filters: [{field: body.type, op: eq, value: x}]}
"#;

/// Runs the gateway binary on `dir` and waits for it to exit; returns the status and
/// everything it wrote to stderr. Fails if it is still running after 20 s.
fn run_until_exit(dir: &Path) -> (ExitStatus, String) {
    let stderr_path = dir.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("create the stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookstream-gateway"))
        .arg("--manifests")
        .arg(dir.join("manifests"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database")
        .arg(format!("sqlite://{}", dir.join("hookstream.db").display()))
        .env("RUST_LOG", "info")
        .env_remove("HOOKSTREAM_MANIFESTS")
        .env_remove("HOOKSTREAM_DATABASE_URL")
        .env_remove("HOOKSTREAM_LISTEN")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the gateway binary");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the gateway process") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("kill the gateway");
            child.wait().expect("reap the gateway");
            panic!(
                "the gateway started on broken manifests:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(&stderr_path).expect("read stderr"),
    )
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let path = dir.join("manifests").join(file);
    std::fs::create_dir_all(path.parent().expect("file in a folder")).expect("create the folder");
    std::fs::write(&path, text).expect("write the manifest");
    path.display().to_string()
}

/// The stderr line that names all of `parts`.
fn line_with<'a>(stderr: &'a str, parts: &[&str]) -> &'a str {
    stderr
        .lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no line of stderr names all of {parts:?}:\n{stderr}"))
}

#[test]
fn invalid_transform_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "routing.yaml",
        &(SOURCE.to_owned() + DESTINATION + BAD_TRANSFORM + GOOD_CONNECTION),
    );
    let (status, stderr) = run_until_exit(dir.path());
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    let line = line_with(
        &stderr,
        &[
            &file,
            "Connection t/bad-transform",
            "spec.transform.jsonata",
        ],
    );
    assert!(
        line.contains("JSONata does not compile"),
        "the reason is given: {line}"
    );
    assert!(
        !stderr.contains("t/good"),
        "valid objects are not reported:\n{stderr}"
    );
}

#[test]
fn unknown_filter_field_root_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", &(SOURCE.to_owned() + DESTINATION));
    let file = write(dir.path(), "conn.yaml", BAD_FILTER);
    let (status, stderr) = run_until_exit(dir.path());
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    let line = line_with(
        &stderr,
        &[&file, "Connection t/bad-filter", "spec.filters[0].field"],
    );
    assert!(
        line.contains("\"bogus.type\" is not a filter field"),
        "the reason is given: {line}"
    );
}

#[test]
fn every_manifest_error_is_listed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(
        dir.path(),
        "a/transform.yaml",
        &(SOURCE.to_owned() + DESTINATION + BAD_TRANSFORM),
    );
    let second = write(dir.path(), "b/filter.yml", BAD_FILTER);
    let (status, stderr) = run_until_exit(dir.path());
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    line_with(
        &stderr,
        &[
            &first,
            "Connection t/bad-transform",
            "spec.transform.jsonata",
            "JSONata does not compile",
        ],
    );
    line_with(
        &stderr,
        &[
            &second,
            "Connection t/bad-filter",
            "spec.filters[0].field",
            "is not a filter field",
        ],
    );
    assert!(stderr.contains("2 errors"), "the count is given:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_topic_fans_out_to_matching_subscriptions_with_an_api_key() {
    let receiver = Receiver::start().await;
    let manifests = format!(
        r#"{}{}
---
apiVersion: hookstream.io/v1alpha1
kind: Topic
metadata: {{name: orders, namespace: t}}
spec:
  subscriptions:
    - destination: d-all
    - destination: d-big
      filters: [{{field: body.amount, op: gte, value: 100}}]
      transform: {{jsonata: '{{"big": amount}}'}}
"#,
        destination("all", &receiver.url, "{maxRetries: 0}"),
        destination("big", &receiver.url, "{maxRetries: 0}"),
    );
    let gw = Gateway::start(&manifests).await;
    let url = format!("{}/v1/topics/t/orders/publish", gw.base);
    let http = reqwest::Client::new();

    let anonymous = http
        .post(&url)
        .body(r#"{"amount":5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status().as_u16(),
        401,
        "publishing needs an API key"
    );

    let (status, small) = gw
        .post_json("/v1/topics/t/orders/publish", r#"{"amount":5}"#)
        .await;
    assert_eq!(status, 200, "{small}");
    assert_eq!(small["topic"], "t/orders");
    assert!(small["event_id"].as_str().unwrap().starts_with("evt_"));
    assert!(small["received_at"].as_str().unwrap().ends_with('Z'));
    let (_, big) = gw
        .post_json("/v1/topics/t/orders/publish", r#"{"amount":500}"#)
        .await;

    let got = receiver.wait_for(3, WAIT).await;
    let mut seen: Vec<(String, Value)> = got
        .iter()
        .map(|r| (r.uri.path().to_owned(), r.json()))
        .collect();
    seen.sort_by_key(|(p, v)| (p.clone(), v["amount"].as_i64()));
    assert_eq!(
        seen,
        vec![
            ("/all".to_owned(), json!({"amount": 5})),
            ("/all".to_owned(), json!({"amount": 500})),
            ("/big".to_owned(), json!({"big": 500})),
        ]
    );
    let stored = event(&gw, big["event_id"].as_str().unwrap()).await;
    assert_eq!(stored["source_id"], "t/topic:orders", "{stored}");

    let (status, missing) = gw.post_json("/v1/topics/t/nope/publish", "{}").await;
    assert_eq!(status, 404, "{missing}");
    assert!(missing["error"].as_str().unwrap().contains("topic t/nope"));
    // A Topic is not an ingest endpoint, and a Source is not a topic.
    assert_eq!(
        gw.ingest("t", "orders", "{}", &[]).await.status().as_u16(),
        404
    );
    let (status, _) = gw.post_json("/v1/topics/t/in/publish", "{}").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_templates_shape_the_payload_and_place_the_credential() {
    let receiver = Receiver::start().await;
    let url = &receiver.url;
    let manifests = format!(
        r#"{SOURCE}
---
apiVersion: v1
kind: Secret
metadata: {{name: services, namespace: t}}
stringData: {{pd: R0UT1NGKEY, dd: DDAPIKEY123}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: d-slack, namespace: t}}
spec: {{type: http, template: slack, http: {{url: "{url}/slack"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: d-discord, namespace: t}}
spec: {{type: http, template: discord, http: {{url: "{url}/discord"}}}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: d-pagerduty, namespace: t}}
spec:
  type: http
  template: pagerduty
  http: {{url: "{url}/pagerduty"}}
  credentialsRef: {{name: services, key: pd}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: d-datadog, namespace: t}}
spec:
  type: http
  template: datadog
  http: {{url: "{url}/datadog"}}
  credentialsRef: {{name: services, key: dd}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: d-zapier, namespace: t}}
spec:
  type: http
  template: zapier
  http: {{url: "{url}/zapier"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: d-custom, namespace: t}}
spec:
  type: http
  template: slack
  http: {{url: "{url}/custom"}}
  transform: {{jsonata: '{{"text": "order " & order}}'}}
{}{}{}{}{}{}"#,
        connection("slack", "[]", None),
        connection("discord", "[]", None),
        connection("pagerduty", "[]", None),
        connection("datadog", "[]", None),
        connection("zapier", "[]", None),
        // The route's transform runs first; the destination's transform sees its output.
        connection("custom", "[]", Some(r#"{"order": id}"#)),
    );
    let gw = Gateway::start(&manifests).await;
    let body = r#"{"type":"order.created","id":"ord_7"}"#;
    let r = gw.ingest("t", "in", body, &[]).await;
    assert_eq!(r.status().as_u16(), 200);
    let got = receiver.wait_for(6, WAIT).await;
    let by_path = |path: &str| {
        got.iter()
            .find(|r| r.uri.path() == path)
            .unwrap_or_else(|| panic!("nothing at {path}"))
            .clone()
    };
    let slack = by_path("/slack");
    assert_eq!(
        slack.json(),
        json!({"text": format!("[order.created] {body}")})
    );
    assert_eq!(
        slack.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        by_path("/discord").json(),
        json!({"content": format!("[order.created] {body}")})
    );
    let pd = by_path("/pagerduty").json();
    assert_eq!(pd["routing_key"], "R0UT1NGKEY");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["payload"]["severity"], "error");
    assert_eq!(pd["payload"]["source"], "t/in");
    assert_eq!(pd["payload"]["summary"], "order.created from t/in");
    assert_eq!(pd["payload"]["custom_details"]["id"], "ord_7");
    assert!(pd["dedup_key"].as_str().unwrap().starts_with("evt_"));
    let dd = by_path("/datadog");
    assert_eq!(dd.header("dd-api-key").as_deref(), Some("DDAPIKEY123"));
    assert_eq!(dd.json()[0]["ddsource"], "hookstream");
    assert_eq!(dd.json()[0]["message"], body);
    assert_eq!(
        by_path("/zapier").json(),
        serde_json::from_str::<Value>(body).unwrap()
    );
    assert_eq!(by_path("/custom").json(), json!({"text": "order ord_7"}));

    // The credential stays out of what the API shows.
    let id = r.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, attempts) = gw
        .get(&format!("/v1/delivery-attempts?event_id={id}"))
        .await;
    let text = attempts.to_string();
    assert!(
        !text.contains("DDAPIKEY123") && !text.contains("R0UT1NGKEY"),
        "{text}"
    );

    let (status, listed) = gw.get("/v1/destinations/templates").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = listed["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "slack",
            "discord",
            "pagerduty",
            "datadog",
            "zapier",
            "linear"
        ]
    );
    assert_eq!(
        listed["templates"][2]["config_template"]["url"],
        "https://events.pagerduty.com/v2/enqueue"
    );
}
