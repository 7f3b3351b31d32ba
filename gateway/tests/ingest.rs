//! Ingest through HTTP: signature verification, IP filters, deduplication, schema validation,
//! body limits, what is stored for each request, and the ingest metrics.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{metric, Gateway, Receiver};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

/// The HMAC signing secret of the test Sources.
const SECRET: &str = "ingest-test-secret-7f3a9c";
/// Raw key bytes of the Standard Webhooks secret.
const SW_KEY: &[u8] = b"standard-webhooks-key-bytes-0042";

const WAIT: Duration = Duration::from_secs(10);

fn secret_manifest() -> String {
    format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: hook, namespace: t}}
stringData:
  secret: "{SECRET}"
  sw: "{}"
"#,
        sw_secret()
    )
}

/// The Standard Webhooks secret as a provider shows it: `whsec_` and base64 of the key.
fn sw_secret() -> String {
    format!("whsec_{}", b64(SW_KEY))
}

fn source(name: &str, spec: &str) -> String {
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: {name}, namespace: t}}
spec:
{spec}
"#
    )
}

/// A Destination `out` at `url` and a Connection from Source `from` to it.
fn route_to(from: &str, url: &str) -> String {
    format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out-{from}, namespace: t}}
spec:
  type: http
  http: {{url: "{url}/hook", timeoutSeconds: 5}}
  retry: {{maxRetries: 0}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: to-out-{from}, namespace: t}}
spec: {{source: {from}, destination: out-{from}}}
"#
    )
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A Standard Webhooks `v1,` signature of `body` under `key`.
fn sw_sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let ts = timestamp.to_string();
    format!(
        "v1,{}",
        b64(&hmac_sha256(
            key,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]
        ))
    )
}

/// POSTs `body` as JSON to source `t/{name}`; returns the status and the JSON answer.
async fn post(gw: &Gateway, name: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let r = gw.ingest("t", name, body, headers).await;
    let status = r.status().as_u16();
    let text = r.text().await.expect("ingest answer body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
    (status, json)
}

/// Asserts a 200 answer with a well-formed event id and returns the id.
fn accepted(what: &str, (status, body): &(u16, Value)) -> String {
    assert_eq!(*status, 200, "{what}: expected 200, got {status}: {body}");
    let id = body["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no event_id in {body}"));
    assert_event_id(id);
    assert_ne!(
        body["duplicate"],
        json!(true),
        "{what}: a new event is not a duplicate: {body}"
    );
    id.to_owned()
}

fn assert_event_id(id: &str) {
    let hex = id
        .strip_prefix("evt_")
        .unwrap_or_else(|| panic!("event id {id:?} lacks evt_"));
    assert_eq!(
        hex.len(),
        32,
        "event id {id:?} is not evt_ and 32 hex digits"
    );
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "event id {id:?} is not lowercase hex"
    );
}

/// Asserts the JSON error body of a refused request: `{"error", "status", "request_id"}` with
/// `expected` as status, an error text containing `why`, and none of `hidden` anywhere.
fn refused(what: &str, (status, body): &(u16, Value), expected: u16, why: &str, hidden: &[&str]) {
    assert_eq!(
        *status, expected,
        "{what}: expected {expected}, got {status}: {body}"
    );
    assert_eq!(
        body["status"],
        json!(expected),
        "{what}: status field in {body}"
    );
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error text in {body}"));
    assert!(
        error.to_lowercase().contains(&why.to_lowercase()),
        "{what}: error {error:?} does not say {why:?}"
    );
    let request_id = body["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no request_id in {body}"));
    assert!(
        request_id.starts_with("req_") && request_id.len() > 4,
        "{what}: request_id {request_id:?}"
    );
    let text = body.to_string();
    for h in hidden {
        assert!(!text.contains(h), "{what}: answer reveals {h:?}: {text}");
    }
}

/// Events stored for source `ns/name`, newest first.
async fn stored(gw: &Gateway, source: &str) -> Vec<Value> {
    let (code, body) = gw
        .get(&format!("/v1/events?source={source}&limit=100"))
        .await;
    assert_eq!(code, 200, "GET /v1/events: {body}");
    body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events list in {body}"))
        .clone()
}

async fn stored_ids(gw: &Gateway, source: &str) -> Vec<String> {
    let mut ids: Vec<String> = stored(gw, source)
        .await
        .iter()
        .map(|e| e["id"].as_str().expect("event id").to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn event(gw: &Gateway, id: &str) -> Value {
    let (code, body) = gw.get(&format!("/v1/events/{id}")).await;
    assert_eq!(code, 200, "GET /v1/events/{id}: {body}");
    body
}

// --- signatures ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_sha256_accepts_hex_in_any_case_and_base64_with_or_without_prefix() {
    let manifests = secret_manifest()
        + &source("in", "  verification: {type: hmac-sha256, secretRef: {name: hook, key: secret}, header: X-Signature}");
    let gw = Gateway::start(&manifests).await;
    let mut ids = Vec::new();
    for (i, form) in [
        "hex",
        "HEX",
        "base64",
        "sha256=hex",
        "sha256=HEX",
        "sha256=base64",
        "SHA256=hex",
    ]
    .iter()
    .enumerate()
    {
        let body = format!(r#"{{"n":{i},"form":"{form}"}}"#);
        let mac = hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]);
        let encoded = match form
            .trim_start_matches("sha256=")
            .trim_start_matches("SHA256=")
        {
            "hex" => hex::encode(&mac),
            "HEX" => hex::encode_upper(&mac),
            _ => b64(&mac),
        };
        let prefix = form
            .split_once('=')
            .map(|(p, _)| format!("{p}="))
            .unwrap_or_default();
        let header = format!("{prefix}{encoded}");
        ids.push(accepted(
            form,
            &post(&gw, "in", &body, &[("X-Signature", &header)]).await,
        ));
    }

    let body = r#"{"n":100}"#;
    let good = hex::encode(hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]));
    let hidden = [SECRET, good.as_str()];
    let wrong_secret = hex::encode(hmac_sha256(b"not-the-secret", &[body.as_bytes()]));
    let r = post(
        &gw,
        "in",
        body,
        &[("X-Signature", &format!("sha256={wrong_secret}"))],
    )
    .await;
    refused("wrong secret", &r, 401, "does not match", &hidden);
    let r = post(&gw, "in", r#"{"n":101}"#, &[("X-Signature", &good)]).await;
    refused(
        "body changed after signing",
        &r,
        401,
        "does not match",
        &hidden,
    );
    let r = post(&gw, "in", body, &[]).await;
    refused(
        "no signature header",
        &r,
        401,
        "missing signature header x-signature",
        &hidden,
    );
    let r = post(
        &gw,
        "in",
        body,
        &[("X-Signature", "sha256=not*a*signature")],
    )
    .await;
    refused("garbage signature", &r, 401, "signature", &hidden);
    let r = post(&gw, "in", body, &[("X-Other", &good)]).await;
    refused(
        "signature in another header",
        &r,
        401,
        "x-signature",
        &hidden,
    );

    assert_eq!(
        stored_ids(&gw, "t/in").await,
        sorted(ids),
        "exactly the verified requests are stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_explicit_prefix_is_required() {
    let manifests = secret_manifest()
        + &source(
            "in",
            "  verification: {type: hmac-sha256, secretRef: {name: hook, key: secret}, header: X-Signature, prefix: \"v0=\"}",
        );
    let gw = Gateway::start(&manifests).await;
    let body = r#"{"prefix":"v0"}"#;
    let mac = hex::encode(hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]));
    let id = accepted(
        "with the prefix",
        &post(&gw, "in", body, &[("X-Signature", &format!("v0={mac}"))]).await,
    );

    let r = post(&gw, "in", body, &[("X-Signature", &mac)]).await;
    refused("without the prefix", &r, 401, "prefix", &[SECRET]);
    let r = post(
        &gw,
        "in",
        body,
        &[("X-Signature", &format!("sha256={mac}"))],
    )
    .await;
    refused("with another prefix", &r, 401, "prefix", &[SECRET]);
    let wrong = hex::encode(hmac_sha256(b"nope", &[body.as_bytes()]));
    let r = post(&gw, "in", body, &[("X-Signature", &format!("v0={wrong}"))]).await;
    refused(
        "prefix with a wrong MAC",
        &r,
        401,
        "does not match",
        &[SECRET],
    );

    assert_eq!(stored_ids(&gw, "t/in").await, vec![id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_sha1_verifies_and_refuses_other_macs() {
    let manifests = secret_manifest()
        + &source("in", "  verification: {type: hmac-sha1, secretRef: {name: hook, key: secret}, header: X-Hub-Signature}");
    let gw = Gateway::start(&manifests).await;
    let mut ids = Vec::new();
    for (i, prefixed) in [true, false].iter().enumerate() {
        let body = format!(r#"{{"sha1":{i}}}"#);
        let mac = hex::encode(hmac_sha1(SECRET.as_bytes(), body.as_bytes()));
        let header = if *prefixed {
            format!("sha1={mac}")
        } else {
            mac
        };
        ids.push(accepted(
            "sha1 signature",
            &post(&gw, "in", &body, &[("X-Hub-Signature", &header)]).await,
        ));
    }
    let body = r#"{"sha1":"bad"}"#;
    let sha256 = hex::encode(hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]));
    let r = post(&gw, "in", body, &[("X-Hub-Signature", &sha256)]).await;
    refused(
        "a SHA-256 MAC on a SHA-1 source",
        &r,
        401,
        "signature",
        &[SECRET],
    );
    let wrong = hex::encode(hmac_sha1(b"other", body.as_bytes()));
    let r = post(
        &gw,
        "in",
        body,
        &[("X-Hub-Signature", &format!("sha1={wrong}"))],
    )
    .await;
    refused(
        "sha1 with a wrong secret",
        &r,
        401,
        "does not match",
        &[SECRET],
    );
    assert_eq!(stored_ids(&gw, "t/in").await, sorted(ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_signature_header_defaults_to_x_hookstream_signature() {
    let manifests = secret_manifest()
        + &source(
            "in",
            "  verification: {type: hmac-sha256, secretRef: {name: hook, key: secret}}",
        );
    let gw = Gateway::start(&manifests).await;
    let body = r#"{"default":"header"}"#;
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]))
    );
    let id = accepted(
        "default header",
        &post(&gw, "in", body, &[("X-Hookstream-Signature", &sig)]).await,
    );
    let r = post(&gw, "in", body, &[("X-Signature", &sig)]).await;
    refused(
        "another header",
        &r,
        401,
        "missing signature header x-hookstream-signature",
        &[SECRET],
    );
    assert_eq!(stored_ids(&gw, "t/in").await, vec![id]);
}

fn sw_source(tolerance: &str) -> String {
    secret_manifest()
        + &source(
            "sw",
            &format!("  verification: {{type: standard-webhooks, secretRef: {{name: hook, key: sw}}, tolerance: {tolerance}}}"),
        )
}

fn sw_headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_accepts_valid_signatures_from_a_whsec_secret() {
    let gw = Gateway::start(&sw_source("1m")).await;
    let now = common::unix_now();
    let mut ids = Vec::new();

    let body = r#"{"type":"ping","n":1}"#;
    let ts = now.to_string();
    let sig = sw_sign(SW_KEY, "msg_1", now, body);
    ids.push(accepted(
        "valid signature",
        &post(&gw, "sw", body, &sw_headers("msg_1", &ts, &sig)).await,
    ));

    // Key rotation: the sender lists several signatures; one valid one is enough.
    let body = r#"{"type":"ping","n":2}"#;
    let good = sw_sign(SW_KEY, "msg_2", now, body);
    let old = sw_sign(b"retired-key", "msg_2", now, body);
    let several = format!("{old} v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {good}");
    ids.push(accepted(
        "one of several signatures valid",
        &post(&gw, "sw", body, &sw_headers("msg_2", &ts, &several)).await,
    ));

    // Within the tolerance.
    let body = r#"{"type":"ping","n":3}"#;
    let earlier = now - 30;
    let ts_earlier = earlier.to_string();
    let sig = sw_sign(SW_KEY, "msg_3", earlier, body);
    ids.push(accepted(
        "30 s old with 1m tolerance",
        &post(&gw, "sw", body, &sw_headers("msg_3", &ts_earlier, &sig)).await,
    ));

    // The key is the base64-decoded part of the secret, not the `whsec_` text itself.
    let body = r#"{"type":"ping","n":4}"#;
    let literal = sw_sign(sw_secret().as_bytes(), "msg_4", now, body);
    let r = post(&gw, "sw", body, &sw_headers("msg_4", &ts, &literal)).await;
    refused(
        "signed with the whsec_ text as key",
        &r,
        401,
        "does not match",
        &[sw_secret().as_str(), b64(SW_KEY).as_str()],
    );

    assert_eq!(stored_ids(&gw, "t/sw").await, sorted(ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_webhooks_refusals_say_why_and_store_nothing() {
    let gw = Gateway::start(&sw_source("1m")).await;
    let now = common::unix_now();
    let ts = now.to_string();
    let body = r#"{"type":"order.created"}"#;
    let good = sw_sign(SW_KEY, "msg_9", now, body);
    let secret = sw_secret();
    let hidden = [secret.as_str(), &secret["whsec_".len()..], &good[3..]];

    let wrong = sw_sign(b"some-other-key", "msg_9", now, body);
    refused(
        "wrong secret",
        &post(&gw, "sw", body, &sw_headers("msg_9", &ts, &wrong)).await,
        401,
        "does not match",
        &hidden,
    );
    let changed = r#"{"type":"order.deleted"}"#;
    refused(
        "body changed",
        &post(&gw, "sw", changed, &sw_headers("msg_9", &ts, &good)).await,
        401,
        "does not match",
        &hidden,
    );
    refused(
        "id changed",
        &post(&gw, "sw", body, &sw_headers("msg_10", &ts, &good)).await,
        401,
        "does not match",
        &hidden,
    );
    let r = post(
        &gw,
        "sw",
        body,
        &[("webhook-timestamp", &ts), ("webhook-signature", &good)],
    )
    .await;
    refused(
        "no webhook-id",
        &r,
        401,
        "missing signature header webhook-id",
        &hidden,
    );
    let r = post(
        &gw,
        "sw",
        body,
        &[("webhook-id", "msg_9"), ("webhook-signature", &good)],
    )
    .await;
    refused(
        "no webhook-timestamp",
        &r,
        401,
        "missing signature header webhook-timestamp",
        &hidden,
    );
    let r = post(
        &gw,
        "sw",
        body,
        &[("webhook-id", "msg_9"), ("webhook-timestamp", &ts)],
    )
    .await;
    refused(
        "no webhook-signature",
        &r,
        401,
        "missing signature header webhook-signature",
        &hidden,
    );
    let r = post(&gw, "sw", body, &sw_headers("msg_9", "yesterday", &good)).await;
    refused("timestamp not a number", &r, 401, "timestamp", &hidden);

    // Correctly signed, but outside the 60 s tolerance: a replay.
    let stale = now - 600;
    let stale_ts = stale.to_string();
    let stale_sig = sw_sign(SW_KEY, "msg_9", stale, body);
    let r = post(&gw, "sw", body, &sw_headers("msg_9", &stale_ts, &stale_sig)).await;
    refused(
        "stale timestamp",
        &r,
        401,
        "old; tolerance is 60 s",
        &hidden,
    );
    let future = now + 600;
    let future_ts = future.to_string();
    let future_sig = sw_sign(SW_KEY, "msg_9", future, body);
    let r = post(
        &gw,
        "sw",
        body,
        &sw_headers("msg_9", &future_ts, &future_sig),
    )
    .await;
    refused("future timestamp", &r, 401, "in the future", &hidden);

    assert!(
        stored(&gw, "t/sw").await.is_empty(),
        "refused requests are not stored"
    );
    // The same request, correctly signed and fresh, is accepted.
    accepted(
        "control",
        &post(&gw, "sw", body, &sw_headers("msg_9", &ts, &good)).await,
    );
    assert_eq!(stored(&gw, "t/sw").await.len(), 1);
}

// --- IP filters ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allow_and_deny_lists_decide_on_the_client_address() {
    // The test client connects from 127.0.0.1.
    let cases: [(&str, &str, u16); 8] = [
        ("allow-loopback", r#"{allow: ["127.0.0.0/8"]}"#, 200),
        (
            "allow-other",
            r#"{allow: ["10.0.0.0/8", "192.168.0.0/16"]}"#,
            403,
        ),
        (
            "deny-wins",
            r#"{allow: ["127.0.0.0/8"], deny: ["127.0.0.1/32"]}"#,
            403,
        ),
        ("deny-only", r#"{deny: ["127.0.0.1"]}"#, 403),
        (
            "mixed-families",
            r#"{allow: ["::1/128", "2001:db8::/32", "127.0.0.1/32"]}"#,
            200,
        ),
        ("deny-all-ipv6", r#"{deny: ["::/0", "2001:db8::/32"]}"#, 200),
        (
            "allow-only-ipv6",
            r#"{allow: ["::1/128", "2001:db8::/32"]}"#,
            403,
        ),
        ("allow-mapped", r#"{allow: ["::ffff:127.0.0.0/104"]}"#, 200),
    ];
    let mut manifests = String::new();
    for (name, filter, _) in &cases {
        manifests += &source(name, &format!("  ipFilter: {filter}"));
    }
    let gw = Gateway::start(&manifests).await;
    for (name, filter, expected) in &cases {
        let r = post(&gw, name, r#"{"ip":"check"}"#, &[]).await;
        if *expected == 200 {
            let id = accepted(name, &r);
            assert_eq!(
                stored_ids(&gw, &format!("t/{name}")).await,
                vec![id],
                "{name} {filter}"
            );
        } else {
            refused(&format!("{name} {filter}"), &r, 403, "127.0.0.1", &[]);
            assert!(
                stored(&gw, &format!("t/{name}")).await.is_empty(),
                "{name}: a blocked request is not stored"
            );
        }
    }
}

fn forwarded_sources() -> String {
    source("open", "  {}") + &source("partner", r#"  ipFilter: {allow: ["198.51.100.0/24"]}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let gw = Gateway::start(&forwarded_sources()).await;
    let id = accepted(
        "open",
        &post(&gw, "open", "{}", &[("X-Forwarded-For", "198.51.100.7")]).await,
    );
    assert_eq!(
        event(&gw, &id).await["source_ip"],
        "127.0.0.1",
        "a forged X-Forwarded-For is not the client address"
    );
    let r = post(&gw, "partner", "{}", &[("X-Forwarded-For", "198.51.100.7")]).await;
    refused("forged X-Forwarded-For", &r, 403, "not allowed", &[]);
    assert!(stored(&gw, "t/partner").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_a_trusted_proxy_is_the_client_address() {
    let gw =
        Gateway::start_with(&forwarded_sources(), &["--trusted-proxies", "127.0.0.1/32"]).await;
    let id = accepted(
        "open via proxy",
        &post(&gw, "open", "{}", &[("X-Forwarded-For", "198.51.100.7")]).await,
    );
    assert_eq!(event(&gw, &id).await["source_ip"], "198.51.100.7");
    let id = accepted(
        "open direct",
        &post(&gw, "open", r#"{"direct":1}"#, &[]).await,
    );
    assert_eq!(
        event(&gw, &id).await["source_ip"],
        "127.0.0.1",
        "without the header the proxy itself is the client"
    );

    let mut allowed = Vec::new();
    allowed.push(accepted(
        "partner via proxy",
        &post(
            &gw,
            "partner",
            r#"{"a":1}"#,
            &[("X-Forwarded-For", "198.51.100.7")],
        )
        .await,
    ));
    // The entry the proxy appended (rightmost) counts; what the client wrote left of it does not.
    let id = accepted(
        "client-written entry left of the real one",
        &post(
            &gw,
            "partner",
            r#"{"a":2}"#,
            &[("X-Forwarded-For", "203.0.113.5, 198.51.100.8")],
        )
        .await,
    );
    assert_eq!(event(&gw, &id).await["source_ip"], "198.51.100.8");
    allowed.push(id);
    let r = post(
        &gw,
        "partner",
        r#"{"a":3}"#,
        &[("X-Forwarded-For", "203.0.113.5")],
    )
    .await;
    refused(
        "proxied client outside the allow list",
        &r,
        403,
        "203.0.113.5",
        &[],
    );
    let r = post(
        &gw,
        "partner",
        r#"{"a":4}"#,
        &[("X-Forwarded-For", "198.51.100.7, 203.0.113.5")],
    )
    .await;
    refused(
        "forged allowed address left of the real one",
        &r,
        403,
        "203.0.113.5",
        &[],
    );
    let r = post(&gw, "partner", r#"{"a":5}"#, &[]).await;
    refused("the proxy itself", &r, 403, "127.0.0.1", &[]);
    assert_eq!(stored_ids(&gw, "t/partner").await, sorted(allowed));
}

// --- dedup ---------------------------------------------------------------------------------

/// Sends and returns (status, event_id, duplicate flag).
async fn send_dedup(
    gw: &Gateway,
    name: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (String, bool) {
    let (status, answer) = post(gw, name, body, headers).await;
    assert_eq!(status, 200, "{body}: {answer}");
    let id = answer["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event_id in {answer}"))
        .to_owned();
    assert_event_id(&id);
    (id, answer["duplicate"] == json!(true))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_hash_duplicate_answers_the_same_event_and_is_delivered_once() {
    let receiver = Receiver::start().await;
    let manifests = source(
        "in",
        "  dedup: {strategy: payload-hash, windowSeconds: 300}",
    ) + &route_to("in", &receiver.url)
        + &source(
            "in2",
            "  dedup: {strategy: payload-hash, windowSeconds: 300}",
        );
    let gw = Gateway::start(&manifests).await;
    let body = r#"{"order":"A-1","amount":10}"#;
    let (first, dup) = send_dedup(&gw, "in", body, &[]).await;
    assert!(!dup, "first request is new");
    let (second, dup) = send_dedup(&gw, "in", body, &[("X-Attempt", "2")]).await;
    assert!(dup, "same body again is a duplicate");
    assert_eq!(second, first, "a duplicate answers the original event id");
    // The hash is over the raw bytes: different spacing is a different payload.
    let (spaced, dup) = send_dedup(&gw, "in", r#"{"order": "A-1", "amount": 10}"#, &[]).await;
    assert!(!dup);
    let (other, dup) = send_dedup(&gw, "in", r#"{"order":"B-2","amount":10}"#, &[]).await;
    assert!(!dup);
    assert_ne!(other, first);
    // Keys are per Source.
    let (elsewhere, dup) = send_dedup(&gw, "in2", body, &[]).await;
    assert!(!dup, "the same body at another source is new");
    assert_ne!(elsewhere, first);

    for id in [&first, &spaced, &other] {
        gw.wait_event_status(id, "delivered", WAIT).await;
    }
    let got: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("x-hookstream-event-id"))
        .collect();
    assert_eq!(
        sorted(got),
        sorted(vec![first.clone(), spaced.clone(), other.clone()]),
        "the duplicate is not delivered again"
    );
    assert_eq!(
        stored_ids(&gw, "t/in").await,
        sorted(vec![first, spaced, other]),
        "the duplicate is not stored again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_of_one_payload_store_one_event() {
    let receiver = Receiver::start().await;
    let manifests =
        source("in", "  dedup: {strategy: payload-hash}") + &route_to("in", &receiver.url);
    let gw = Gateway::start(&manifests).await;
    let body = r#"{"burst":true}"#;
    let answers =
        futures::future::join_all((0..12).map(|_| send_dedup(&gw, "in", body, &[]))).await;
    let first = &answers[0].0;
    assert!(
        answers.iter().all(|(id, _)| id == first),
        "every copy answers the same event: {answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(_, dup)| !dup).count(),
        1,
        "exactly one copy is new: {answers:?}"
    );
    gw.wait_event_status(first, "delivered", WAIT).await;
    assert_eq!(stored_ids(&gw, "t/in").await, vec![first.clone()]);
    assert_eq!(receiver.received().len(), 1, "delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_field_dedup_uses_the_idempotency_key() {
    let manifests = source(
        "in",
        "  dedup: {strategy: header-field, field: Idempotency-Key}",
    );
    let gw = Gateway::start(&manifests).await;
    let (a, dup) = send_dedup(&gw, "in", r#"{"v":1}"#, &[("Idempotency-Key", "key-1")]).await;
    assert!(!dup);
    let (again, dup) = send_dedup(&gw, "in", r#"{"v":2}"#, &[("idempotency-key", "key-1")]).await;
    assert!(dup, "same key, other body: duplicate");
    assert_eq!(again, a);
    let (b, dup) = send_dedup(&gw, "in", r#"{"v":1}"#, &[("Idempotency-Key", "key-2")]).await;
    assert!(!dup, "other key, same body: new");
    let (c, dup) = send_dedup(&gw, "in", r#"{"v":1}"#, &[]).await;
    assert!(!dup, "no key: new");
    let (d, dup) = send_dedup(&gw, "in", r#"{"v":1}"#, &[]).await;
    assert!(!dup, "no key twice: still new");
    assert_ne!(c, d);
    assert_eq!(stored_ids(&gw, "t/in").await, sorted(vec![a, b, c, d]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_field_dedup_uses_the_json_path() {
    let manifests = source("in", "  dedup: {strategy: body-field, field: data.id}")
        + &source(
            "rooted",
            "  dedup: {strategy: body-field, field: body.data.id}",
        );
    let gw = Gateway::start(&manifests).await;
    // A path written with the `body.` root means the same field.
    let (r1, dup) = send_dedup(&gw, "rooted", r#"{"data":{"id":"ch_1"},"attempt":1}"#, &[]).await;
    assert!(!dup);
    let (r2, dup) = send_dedup(&gw, "rooted", r#"{"data":{"id":"ch_1"},"attempt":2}"#, &[]).await;
    assert!(dup, "body.data.id: same id is a duplicate");
    assert_eq!(r2, r1);
    let (a, dup) = send_dedup(&gw, "in", r#"{"data":{"id":"ch_1"},"attempt":1}"#, &[]).await;
    assert!(!dup);
    let (again, dup) = send_dedup(
        &gw,
        "in",
        r#"{"attempt":2,"data":{"id":"ch_1","extra":true}}"#,
        &[],
    )
    .await;
    assert!(dup, "same data.id: duplicate");
    assert_eq!(again, a);
    let (b, dup) = send_dedup(&gw, "in", r#"{"data":{"id":"ch_2"},"attempt":1}"#, &[]).await;
    assert!(!dup, "other data.id: new");
    let (c, dup) = send_dedup(&gw, "in", r#"{"id":"ch_1"}"#, &[]).await;
    assert!(!dup, "no data.id: new");
    assert_eq!(stored_ids(&gw, "t/in").await, sorted(vec![a, b, c]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_window_expires() {
    let manifests = source("in", "  dedup: {strategy: payload-hash, windowSeconds: 1}");
    let gw = Gateway::start(&manifests).await;
    let body = r#"{"window":"short"}"#;
    let (first, dup) = send_dedup(&gw, "in", body, &[]).await;
    assert!(!dup);
    let (second, dup) = send_dedup(&gw, "in", body, &[]).await;
    assert!(dup, "within the window: duplicate");
    assert_eq!(second, first);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (third, dup) = send_dedup(&gw, "in", body, &[]).await;
    assert!(!dup, "after the window the same body is new");
    assert_ne!(third, first);
    let (fourth, dup) = send_dedup(&gw, "in", body, &[]).await;
    assert!(dup, "and opens a new window");
    assert_eq!(fourth, third);
    assert_eq!(stored_ids(&gw, "t/in").await, sorted(vec![first, third]));
}

// --- schema --------------------------------------------------------------------------------

const SCHEMA: &str = r#"    jsonSchema:
      type: object
      required: [type]
      properties:
        type: {type: string}
        data:
          type: object
          properties:
            amount: {type: integer}"#;

fn error_paths(errors: &Value) -> Vec<String> {
    errors
        .as_array()
        .unwrap_or_else(|| panic!("validation_errors is not a list: {errors}"))
        .iter()
        .map(|e| {
            e["path"]
                .as_str()
                .unwrap_or_else(|| panic!("no path in {e}"))
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_reject_answers_422_with_validation_errors_and_stores_nothing() {
    let gw = Gateway::start(&source(
        "in",
        &format!("  schema:\n    action: reject\n{SCHEMA}"),
    ))
    .await;

    let r = post(
        &gw,
        "in",
        r#"{"type":"order","data":{"amount":"ten"}}"#,
        &[],
    )
    .await;
    refused("wrong type", &r, 422, "schema", &[]);
    let paths = error_paths(&r.1["validation_errors"]);
    assert!(
        paths.iter().any(|p| p == "/data/amount"),
        "the failing path is named: {}",
        r.1
    );
    let messages = r.1["validation_errors"].to_string();
    assert!(
        messages.contains("integer"),
        "the message says what is expected: {messages}"
    );

    let r = post(&gw, "in", r#"{"data":{"amount":5}}"#, &[]).await;
    refused("missing required", &r, 422, "schema", &[]);
    assert!(
        r.1["validation_errors"].to_string().contains("type"),
        "names the missing property: {}",
        r.1
    );

    let r = gw
        .ingest(
            "t",
            "in",
            "not json at all",
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(
        r.status(),
        422,
        "a body that is not JSON fails an object schema"
    );

    assert!(
        stored(&gw, "t/in").await.is_empty(),
        "rejected bodies are not stored"
    );
    let id = accepted(
        "valid body",
        &post(&gw, "in", r#"{"type":"order","data":{"amount":5}}"#, &[]).await,
    );
    assert_eq!(stored_ids(&gw, "t/in").await, vec![id.clone()]);
    assert_eq!(event(&gw, &id).await["validation_errors"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_warn_stores_and_delivers_with_validation_errors() {
    let receiver = Receiver::start().await;
    let manifests = source("in", &format!("  schema:\n    action: warn\n{SCHEMA}"))
        + &route_to("in", &receiver.url);
    let gw = Gateway::start(&manifests).await;

    let body = r#"{"data":{"amount":"ten"}}"#;
    let r = post(&gw, "in", body, &[]).await;
    let bad = accepted("invalid body in warn mode", &r);
    let paths = error_paths(&r.1["validation_errors"]);
    assert!(
        paths.iter().any(|p| p == "/data/amount"),
        "answer lists the errors: {}",
        r.1
    );
    let good = accepted(
        "valid body",
        &post(&gw, "in", r#"{"type":"ok"}"#, &[]).await,
    );

    let stored_bad = gw.wait_event_status(&bad, "delivered", WAIT).await;
    let paths = error_paths(&stored_bad["validation_errors"]);
    assert!(
        paths.iter().any(|p| p == "/data/amount"),
        "stored event shows the errors: {stored_bad}"
    );
    assert!(
        stored_bad["validation_errors"].to_string().contains("type"),
        "missing `type` is listed too: {stored_bad}"
    );
    let stored_good = gw.wait_event_status(&good, "delivered", WAIT).await;
    assert_eq!(stored_good["validation_errors"], Value::Null);

    let got = receiver.received();
    assert_eq!(got.len(), 2, "both events are delivered");
    let delivered = got
        .iter()
        .find(|r| r.header("x-hookstream-event-id").as_deref() == Some(bad.as_str()))
        .unwrap();
    assert_eq!(
        delivered.body.as_ref(),
        body.as_bytes(),
        "the invalid body is delivered as sent"
    );
}

// --- body limits ---------------------------------------------------------------------------

/// A JSON body of exactly `n` bytes.
fn body_of(n: usize) -> String {
    let pad = n - r#"{"p":""}"#.len();
    let body = format!(r#"{{"p":"{}"}}"#, "x".repeat(pad));
    assert_eq!(body.len(), n);
    body
}

/// Sends `body` with chunked transfer encoding (no Content-Length) over a raw connection and
/// returns the status code.
async fn post_chunked(gw: &Gateway, path: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gw.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(30) {
        request += &format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).expect("ASCII body")
        );
    }
    request += "0\r\n\r\n";
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_body_limit_refuses_one_byte_over() {
    let gw = Gateway::start(&source("in", "  maxBodyBytes: 100")).await;
    let r = post(&gw, "in", &body_of(101), &[]).await;
    refused("101 bytes", &r, 413, "100 bytes", &[]);
    assert_eq!(
        post_chunked(&gw, "/v1/ingest/t/in", &body_of(101)).await,
        413,
        "101 bytes without Content-Length"
    );
    assert!(
        stored(&gw, "t/in").await.is_empty(),
        "too large requests are not stored"
    );

    let id = accepted("100 bytes", &post(&gw, "in", &body_of(100), &[]).await);
    assert_eq!(
        post_chunked(&gw, "/v1/ingest/t/in", &body_of(100)).await,
        200,
        "100 bytes without Content-Length"
    );
    assert_eq!(stored(&gw, "t/in").await.len(), 2);
    assert_eq!(
        event(&gw, &id).await["body"]["p"].as_str().map(str::len),
        Some(92)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_body_limit_caps_a_larger_source_limit() {
    let manifests = source("big", "  maxBodyBytes: 5000") + &source("plain", "  {}");
    let gw = Gateway::start_with(&manifests, &["--max-body-bytes", "1000"]).await;
    for name in ["big", "plain"] {
        let r = post(&gw, name, &body_of(1001), &[]).await;
        refused(&format!("{name}: 1001 bytes"), &r, 413, "1000 bytes", &[]);
        assert_eq!(
            post_chunked(&gw, &format!("/v1/ingest/t/{name}"), &body_of(1500)).await,
            413,
            "{name}: chunked"
        );
        assert!(stored(&gw, &format!("t/{name}")).await.is_empty());
        let id = accepted(
            &format!("{name}: 1000 bytes"),
            &post(&gw, name, &body_of(1000), &[]).await,
        );
        assert_eq!(stored_ids(&gw, &format!("t/{name}")).await, vec![id]);
    }
}

// --- what is stored ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_source_answers_404_json() {
    let gw = Gateway::start(&source("in", "  {}")).await;
    let r = post(&gw, "nope", "{}", &[]).await;
    refused("unknown source", &r, 404, "t/nope", &[]);
    let r = gw.ingest("other", "in", "{}", &[]).await;
    assert_eq!(r.status(), 404, "same name in another namespace");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 404);
    let (code, list) = gw.get("/v1/events?limit=100").await;
    assert_eq!(code, 200);
    assert_eq!(
        list["events"],
        json!([]),
        "nothing stored for unknown sources"
    );
    accepted("the known source", &post(&gw, "in", "{}", &[]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_method_is_stored_with_its_request_details() {
    let gw = Gateway::start(&source("in", "  {}")).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/ingest/t/in", gw.base);
    let cases: [(&str, &str, &str); 5] = [
        ("GET", "?a=1&b=two&a=3&empty=", ""),
        ("PUT", "", r#"{"put":true}"#),
        ("DELETE", "?id=42", ""),
        ("PATCH", "?x=%20y", r#"{"patch":[1,2]}"#),
        ("POST", "", r#"{"post":"x"}"#),
    ];
    for (method, query, body) in cases {
        let r = client
            .request(method.parse().unwrap(), format!("{url}{query}"))
            .header("X-Custom-Header", "Mixed Case Value")
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let answer: Value = r.json().await.unwrap();
        let id = answer["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{method}: {answer}"))
            .to_owned();
        assert_event_id(&id);
        assert_eq!(
            answer["duplicate"],
            Value::Null,
            "{method}: a new event carries no duplicate flag"
        );

        let e = event(&gw, &id).await;
        assert_eq!(e["method"], method, "{e}");
        assert_eq!(e["path"], "/v1/ingest/t/in", "{e}");
        assert_eq!(e["source_ip"], "127.0.0.1", "{e}");
        assert_eq!(e["content_type"], "application/json", "{e}");
        let headers = e["headers"]
            .as_object()
            .unwrap_or_else(|| panic!("{method}: headers not an object: {e}"));
        assert_eq!(
            headers.get("x-custom-header"),
            Some(&json!("Mixed Case Value")),
            "{method}: {e}"
        );
        assert!(
            headers.keys().all(|k| *k == k.to_lowercase()),
            "{method}: header names are lowercase: {e}"
        );
        let expected_body = if body.is_empty() {
            json!("")
        } else {
            serde_json::from_str(body).unwrap()
        };
        assert_eq!(e["body"], expected_body, "{method}: {e}");
        match method {
            "GET" => assert_eq!(
                e["query"],
                json!({"a": ["1", "3"], "b": "two", "empty": ""}),
                "{e}"
            ),
            "DELETE" => assert_eq!(e["query"], json!({"id": "42"}), "{e}"),
            "PATCH" => assert_eq!(e["query"], json!({"x": " y"}), "{e}"),
            _ => assert_eq!(e["query"], json!({}), "{e}"),
        }
        assert_eq!(e["status"], "received", "no route: {e}");
    }
    let listed = stored(&gw, "t/in").await;
    let mut methods: Vec<&str> = listed
        .iter()
        .map(|e| e["method"].as_str().unwrap())
        .collect();
    methods.sort_unstable();
    assert_eq!(methods, ["DELETE", "GET", "PATCH", "POST", "PUT"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_bodies_are_stored_and_delivered_verbatim() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&(source("in", "  {}") + &route_to("in", &receiver.url))).await;
    let client = reqwest::Client::new();
    let cases = [
        (
            "application/x-www-form-urlencoded",
            "a=1&b=hello+world&c=%7B%7D",
        ),
        (
            "text/plain; charset=utf-8",
            "  plain text\nwith lines and {braces\n",
        ),
        ("application/json", "{not really json"),
    ];
    let mut ids = Vec::new();
    for (content_type, body) in cases {
        let r = client
            .post(format!("{}/v1/ingest/t/in", gw.base))
            .header("Content-Type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{content_type}");
        let id = r.json::<Value>().await.unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let e = event(&gw, &id).await;
        assert_eq!(
            e["body"],
            json!(body),
            "{content_type}: stored as sent: {e}"
        );
        assert_eq!(e["content_type"], content_type, "{e}");
        ids.push((id, content_type, body));
    }
    for (id, content_type, body) in &ids {
        gw.wait_event_status(id, "delivered", WAIT).await;
        let got = receiver.received();
        let r = got
            .iter()
            .find(|r| r.header("x-hookstream-event-id").as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{content_type} not delivered"));
        assert_eq!(
            r.body.as_ref(),
            body.as_bytes(),
            "{content_type}: delivered byte for byte"
        );
        assert_eq!(r.header("content-type").as_deref(), Some(*content_type));
    }
}

// --- metrics -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_metrics_count_outcomes_per_source() {
    let manifests = secret_manifest()
        + &source("signed", "  verification: {type: hmac-sha256, secretRef: {name: hook, key: secret}, header: X-Signature}")
        + &source("open", "  {}")
        + &source("dedup", "  dedup: {strategy: payload-hash}");
    let gw = Gateway::start(&manifests).await;
    for _ in 0..2 {
        assert_eq!(post(&gw, "dedup", r#"{"same":1}"#, &[]).await.0, 200);
    }
    for i in 0..2 {
        let body = format!(r#"{{"i":{i}}}"#);
        let sig = hex::encode(hmac_sha256(SECRET.as_bytes(), &[body.as_bytes()]));
        accepted(
            "signed",
            &post(&gw, "signed", &body, &[("X-Signature", &sig)]).await,
        );
    }
    let wrong = hex::encode(hmac_sha256(b"wrong", &[b"{}"]));
    for headers in [
        vec![],
        vec![("X-Signature", wrong.as_str())],
        vec![("X-Signature", "sha256=%%%")],
    ] {
        assert_eq!(post(&gw, "signed", "{}", &headers).await.0, 401);
    }
    accepted("open", &post(&gw, "open", "{}", &[]).await);
    assert_eq!(post(&gw, "missing", "{}", &[]).await.0, 404);

    let text = gw.metrics().await;
    let name = "hookstream_gateway_ingest_requests_total";
    let value = |source: &str, outcome: &str| {
        metric(&text, name, &[("source", source), ("outcome", outcome)])
    };
    assert_eq!(value("t/signed", "accepted"), Some(2.0), "{text}");
    assert_eq!(value("t/signed", "unauthorized"), Some(3.0), "{text}");
    assert_eq!(value("t/open", "accepted"), Some(1.0), "{text}");
    assert_eq!(value("t/open", "unauthorized"), None, "{text}");
    assert_eq!(value("unknown", "not_found"), Some(1.0), "{text}");
    assert_eq!(value("t/dedup", "accepted"), Some(1.0), "{text}");
    assert_eq!(value("t/dedup", "duplicate"), Some(1.0), "{text}");
    assert!(
        !text.contains("t/missing"),
        "unknown source names are not labels: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after_and_stores_nothing_over_it() {
    let gw = Gateway::start(&source(
        "limited",
        "  rateLimit: {requestsPerSecond: 1, burst: 2}",
    ))
    .await;
    // The burst passes, the next request within the same second does not.
    for n in 0..2 {
        accepted(
            "within the burst",
            &post(&gw, "limited", &format!(r#"{{"n":{n}}}"#), &[]).await,
        );
    }
    let r = gw.ingest("t", "limited", r#"{"n":2}"#, &[]).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(r.headers()["x-ratelimit-limit"], "1");
    let body: Value = r.json().await.unwrap();
    refused(
        "over the rate",
        &(429, body),
        429,
        "requests per second",
        &[],
    );
    assert_eq!(
        stored_ids(&gw, "limited").await.len(),
        2,
        "the refused request is not stored"
    );
    // After the advertised wait the source accepts again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    accepted(
        "after Retry-After",
        &post(&gw, "limited", r#"{"n":3}"#, &[]).await,
    );
    let text = gw.metrics().await;
    assert_eq!(
        metric(
            &text,
            "hookstream_gateway_ingest_requests_total",
            &[("source", "t/limited"), ("outcome", "rate_limited")]
        ),
        Some(1.0)
    );
}
