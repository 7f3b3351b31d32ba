//! Property tests (fuzzing) of what a webhook sender controls: headers, query strings,
//! bodies and signatures.
//!
//! - signature verification, for every scheme: arbitrary input never panics, the real
//!   signature of an arbitrary body under an arbitrary secret is accepted, and a random
//!   signature, another secret's signature or the signature of another body is refused;
//! - filters: arbitrary filters on arbitrary events never panic, match deterministically, and
//!   `neq`, `exists: false` and `matches_all` agree with `eq`, `exists` and `matches`;
//! - request parsing: query strings, header lists, bodies (as ingest's schema check and the
//!   transforms read them), the hop header and `X-Forwarded-For` never panic, and the client
//!   address is always the peer or an address the header names.
//!
//! The number of inputs per property is proptest's default (256) or `PROPTEST_CASES`, as in
//! `PROPTEST_CASES=20000 cargo test -p hookstream-gateway --test fuzz`.

use std::net::IpAddr;
use std::sync::LazyLock;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use hookstream_crds::compiler::{compile, Objects};
use hookstream_crds::config::{SecretValue, VerificationConfig};
use hookstream_crds::manifest::parse_into;
use hookstream_crds::templates::default_header;
use hookstream_crds::v1alpha1::{Filter, FilterOp, SignatureEncoding, VerificationType};
use hookstream_gateway::config::RuntimeConfig;
use hookstream_gateway::ingest::{ipfilter, schema, verify, Rejection};
use hookstream_gateway::pipeline::event::{
    event_hops, headers_object, parse_body, query_object, query_pairs, request_hops,
    transform_input, EventData,
};
use hookstream_gateway::pipeline::filter::{matches, matches_all, EventView};
use hookstream_gateway::store::NewEvent;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use p256::ecdsa::signature::Signer as _;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use sha2::Digest as _;

/// Inputs per property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The current time of every verification here, in unix seconds.
const NOW: i64 = 1_700_000_000;

const SCHEMES: [VerificationType; 10] = [
    VerificationType::HmacSha256,
    VerificationType::HmacSha1,
    VerificationType::StandardWebhooks,
    VerificationType::Stripe,
    VerificationType::Slack,
    VerificationType::Twilio,
    VerificationType::Sendgrid,
    VerificationType::Linear,
    VerificationType::Paddle,
    VerificationType::BasicAuth,
];

// ---- signing as the providers do ---------------------------------------------------------

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The DER header of a P-256 public key (SubjectPublicKeyInfo, id-ecPublicKey, prime256v1),
/// followed by the 65 bytes of the uncompressed point.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A P-256 key made from `seed` (SendGrid signs with ECDSA), or `None` for the rare seed
/// that is no valid scalar.
fn p256_key(seed: &[u8]) -> Option<p256::ecdsa::SigningKey> {
    p256::ecdsa::SigningKey::from_slice(&sha2::Sha256::digest(seed)).ok()
}

/// How a request is signed: with the real secret, or by a forger.
#[derive(Clone, Debug)]
enum Signer {
    /// The holder of `secret`.
    Real(Vec<u8>),
    /// Someone without the secret who sends these bytes as the signature (as the MAC, the
    /// DER signature, or the Basic credentials).
    Random(Vec<u8>),
}

impl Signer {
    /// The signature of `message` under `scheme`'s algorithm.
    fn sign(&self, scheme: VerificationType, message: &[u8]) -> Vec<u8> {
        let key = match self {
            Signer::Random(bytes) => return bytes.clone(),
            Signer::Real(key) => key,
        };
        match scheme {
            VerificationType::HmacSha1 | VerificationType::Twilio => hmac_sha1(key, message),
            VerificationType::Sendgrid => {
                let signature: p256::ecdsa::Signature =
                    p256_key(key).expect("checked by the caller").sign(message);
                signature.to_der().as_bytes().to_vec()
            }
            VerificationType::BasicAuth => key.clone(),
            _ => hmac_sha256(key, message),
        }
    }
}

/// The gateway's config for `scheme` with the one secret `secret`.
fn config_for(scheme: VerificationType, secret: &[u8]) -> VerificationConfig {
    let stored = match scheme {
        VerificationType::Sendgrid => {
            // SubjectPublicKeyInfo of an uncompressed P-256 point, as SendGrid shows the key.
            let point = p256_key(secret)
                .expect("checked by the caller")
                .verifying_key()
                .to_encoded_point(false);
            [P256_SPKI_PREFIX, point.as_bytes()].concat()
        }
        _ => secret.to_vec(),
    };
    VerificationConfig {
        scheme,
        secrets: vec![SecretValue(stored)],
        header: default_header(scheme).to_owned(),
        encoding: None,
        prefix: None,
        tolerance_seconds: hookstream_crds::templates::default_tolerance_seconds(scheme),
    }
}

/// A request as `signer` sends it for `scheme`: headers, body and the URL it calls. Linear
/// signs a timestamp inside the body, so its body wraps `data` in JSON; the others send
/// `data` as it is.
fn request(
    scheme: VerificationType,
    signer: &Signer,
    data: &[u8],
    signed_at: i64,
) -> (HeaderMap, Vec<u8>, String) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let ts = signed_at.to_string();
    let mut body = data.to_vec();
    let mut url = "https://hooks.example.com/v1/ingest/ns/src".to_owned();
    let mut extra: Vec<(&str, String)> = Vec::new();
    let header = default_header(scheme);
    let value = match scheme {
        VerificationType::HmacSha256 => {
            format!("sha256={}", hex::encode(signer.sign(scheme, data)))
        }
        VerificationType::HmacSha1 => format!("sha1={}", hex::encode(signer.sign(scheme, data))),
        VerificationType::StandardWebhooks => {
            let id = "msg_fuzz";
            let message = [id.as_bytes(), b".", ts.as_bytes(), b".", data].concat();
            extra.push(("webhook-id", id.to_owned()));
            extra.push(("webhook-timestamp", ts.clone()));
            format!("v1,{}", b64(&signer.sign(scheme, &message)))
        }
        VerificationType::Stripe => {
            let message = [ts.as_bytes(), b".", data].concat();
            format!("t={ts},v1={}", hex::encode(signer.sign(scheme, &message)))
        }
        VerificationType::Paddle => {
            let message = [ts.as_bytes(), b":", data].concat();
            format!("ts={ts};h1={}", hex::encode(signer.sign(scheme, &message)))
        }
        VerificationType::Slack => {
            let message = [b"v0:", ts.as_bytes(), b":", data].concat();
            extra.push(("x-slack-request-timestamp", ts.clone()));
            format!("v0={}", hex::encode(signer.sign(scheme, &message)))
        }
        VerificationType::Linear => {
            let text = String::from_utf8_lossy(data);
            body = serde_json::to_vec(&json!({"webhookTimestamp": signed_at * 1000, "data": text}))
                .expect("JSON");
            hex::encode(signer.sign(scheme, &body))
        }
        VerificationType::Twilio => {
            // A JSON body: the URL carries the body's hash and is what is signed.
            url.push_str(&format!(
                "?bodySHA256={}",
                hex::encode(sha2::Sha256::digest(data))
            ));
            b64(&signer.sign(scheme, url.as_bytes()))
        }
        VerificationType::Sendgrid => {
            extra.push(("x-twilio-email-event-webhook-timestamp", ts.clone()));
            b64(&signer.sign(scheme, &[ts.as_bytes(), data].concat()))
        }
        VerificationType::BasicAuth => format!("Basic {}", b64(&signer.sign(scheme, b""))),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in std::iter::once((header, value)).chain(extra) {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("signature headers are ASCII"),
        );
    }
    (headers, body, url)
}

fn scheme() -> impl Strategy<Value = VerificationType> {
    select(SCHEMES.to_vec())
}

/// Secrets as users put them in Secrets: non-empty bytes.
fn secret() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..80)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        "\\PC{0,200}".prop_map(String::into_bytes),
    ]
}

// ---- arbitrary requests -----------------------------------------------------------------

/// Header names a scheme, ingest or a filter reads, and random ones.
fn header_name() -> impl Strategy<Value = HeaderName> {
    let known: Vec<&'static str> = SCHEMES
        .iter()
        .map(|s| default_header(*s))
        .chain([
            "webhook-id",
            "webhook-timestamp",
            "svix-id",
            "svix-timestamp",
            "svix-signature",
            "x-slack-request-timestamp",
            "x-twilio-email-event-webhook-timestamp",
            "content-type",
            "x-forwarded-for",
            "x-hookstream-hops",
            "x-a",
        ])
        .collect();
    prop_oneof![
        4 => select(known).prop_map(HeaderName::from_static),
        1 => "[a-z0-9-]{1,12}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).expect("token")),
    ]
}

/// Header values: random bytes (as far as HTTP allows), and fragments of real ones.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        // Every byte HTTP allows in a value: tab, visible ASCII, space and obs-text.
        2 => prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..80)
            .prop_map(|b| HeaderValue::from_bytes(&b).expect("allowed bytes")),
        3 => prop::collection::vec(
            select(vec![
                "t=", "v1=", "ts=", "h1=", "v0=", "v1,", "sha256=", "sha1=", "Basic ", ",", ";",
                " ", "=", "1700000000", "-1", "99999999999999999999", "00", "zz", "MEUCIQ==",
                "Og==", "[::1]", "10.0.0.1", "::ffff:10.0.0.1", ":80", "unknown", "1.2.3.4:5",
                "application/x-www-form-urlencoded", "é",
            ]),
            0..8,
        )
        .prop_map(|parts| HeaderValue::from_bytes(parts.concat().as_bytes()).expect("allowed bytes")),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((header_name(), header_value()), 0..8).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(k, v);
        }
        map
    })
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "\\PC{0,40}",
        "https?://[a-z.]{1,10}(:[0-9]{0,6})?/[a-z/]{0,10}(\\?[a-zA-Z0-9=&%]{0,30})?",
        "http://\\[[0-9a-f:]{0,12}\\](:[0-9]{1,5})?/x",
    ]
}

fn any_config() -> impl Strategy<Value = VerificationConfig> {
    (
        scheme(),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..3),
        prop_oneof![
            header_name().prop_map(|h| h.as_str().to_owned()),
            "\\PC{0,10}"
        ],
        prop::option::of(select(vec![
            SignatureEncoding::Hex,
            SignatureEncoding::Base64,
        ])),
        prop::option::of("\\PC{0,8}"),
        any::<u64>(),
    )
        .prop_map(
            |(scheme, secrets, header, encoding, prefix, tolerance_seconds)| VerificationConfig {
                scheme,
                secrets: secrets.into_iter().map(SecretValue).collect(),
                header,
                encoding,
                prefix,
                tolerance_seconds,
            },
        )
}

// ---- filters ------------------------------------------------------------------------------

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        (0i64..10).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        select(vec![
            "a",
            "b",
            "1",
            "1.5",
            " 2 ",
            "-0",
            "1e3",
            "order.created",
            ""
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                select(vec!["a", "b", "0", "1", "type", "x.y", ""]),
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn filter_field() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (
            select(vec!["body", "payload", "headers", "query", "method", "content_type", "source_ip", "x"]),
            prop::collection::vec(select(vec!["a", "b", "0", "1", "type", "x-a", "content-type", "", "x.y"]), 0..4),
        )
            .prop_map(|(root, path)| std::iter::once(root).chain(path).collect::<Vec<_>>().join(".")),
        1 => "\\PC{0,20}",
    ]
}

fn filter_op() -> impl Strategy<Value = FilterOp> {
    select(vec![
        FilterOp::Eq,
        FilterOp::Neq,
        FilterOp::Contains,
        FilterOp::Gt,
        FilterOp::Gte,
        FilterOp::Lt,
        FilterOp::Lte,
        FilterOp::Exists,
        FilterOp::In,
    ])
}

fn filter() -> impl Strategy<Value = Filter> {
    (filter_field(), filter_op(), prop::option::of(json_value()))
        .prop_map(|(field, op, value)| Filter { field, op, value })
}

/// An event as a filter sees it, owned.
#[derive(Clone, Debug)]
struct OwnedEvent {
    body: Option<Value>,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    method: String,
    content_type: Option<String>,
    source_ip: String,
}

impl OwnedEvent {
    fn view(&self) -> EventView<'_> {
        EventView {
            body: self.body.as_ref(),
            headers: &self.headers,
            query: &self.query,
            method: &self.method,
            content_type: self.content_type.as_deref(),
            source_ip: &self.source_ip,
        }
    }
}

fn owned_event() -> impl Strategy<Value = OwnedEvent> {
    (
        prop::option::of(json_value()),
        headers(),
        "\\PC{0,40}",
        select(vec!["POST", "GET", "PUT", "post"]),
        prop::option::of("\\PC{0,20}"),
        select(vec!["203.0.113.9", "::1", "10.0.0.1"]),
    )
        .prop_map(
            |(body, headers, query, method, content_type, ip)| OwnedEvent {
                body,
                headers,
                query: query_pairs(&query),
                method: method.to_owned(),
                content_type,
                source_ip: ip.to_owned(),
            },
        )
}

// ---- stored events ------------------------------------------------------------------------

fn new_event() -> impl Strategy<Value = NewEvent> {
    (
        "\\PC{0,60}",
        prop::collection::vec(("\\PC{0,12}", "\\PC{0,24}"), 0..6),
        body(),
        prop::option::of("\\PC{0,20}"),
        any::<i64>(),
        "\\PC{0,8}",
    )
        .prop_map(
            |(query, headers, body, content_type, received_at, method)| NewEvent {
                id: "evt_fuzz".to_owned(),
                namespace: "ns".to_owned(),
                source: "src".to_owned(),
                method,
                path: "/v1/ingest/ns/src".to_owned(),
                query,
                headers,
                body: Bytes::from(body),
                content_type,
                source_ip: "203.0.113.9".to_owned(),
                received_at,
                validation_errors: None,
            },
        )
}

/// Configs with one Source that checks bodies against a JSON Schema, in warn and in reject
/// mode, built once.
static SCHEMA_CONFIGS: LazyLock<[RuntimeConfig; 2]> =
    LazyLock::new(|| [schema_source("warn"), schema_source("reject")]);

/// A Source that checks bodies against a JSON Schema with `action`.
fn schema_source(action: &str) -> RuntimeConfig {
    let yaml = format!(
        r#"apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: src, namespace: ns}}
spec:
  schema:
    action: {action}
    jsonSchema:
      type: object
      required: [type, items]
      properties:
        type: {{type: string, enum: [a, b], maxLength: 4}}
        items: {{type: array, maxItems: 3, items: {{type: integer, minimum: 0}}}}
        name: {{type: string, pattern: "^[a-z]+$"}}
      additionalProperties: {{type: number}}
"#
    );
    let mut objects = Objects::default();
    assert!(parse_into(&mut objects, "schema.yaml", &yaml).is_empty());
    let out = compile(&objects);
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    RuntimeConfig::build(out.config).expect("the schema compiles")
}

// ---- X-Forwarded-For ----------------------------------------------------------------------

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        select(vec![
            "10.0.0.1",
            "10.0.0.2",
            "::ffff:10.0.0.1",
            "203.0.113.9",
            "::1"
        ])
        .prop_map(|s| s.parse().expect("address")),
    ]
}

fn xff_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        ip().prop_map(|ip| ip.to_string()),
        (ip(), any::<u16>()).prop_map(|(ip, port)| std::net::SocketAddr::new(ip, port).to_string()),
        ip().prop_map(|ip| format!("[{ip}]")),
        "\\PC{0,12}",
        Just(String::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Garbage in any header, body, URL, secret and setting is answered, never a panic, and
    /// the same way twice.
    #[test]
    fn verification_never_panics(
        config in any_config(),
        headers in headers(),
        body in body(),
        url in url(),
        now in prop_oneof![Just(NOW), any::<i64>()],
    ) {
        let first = verify::verify_at(&config, &headers, &body, &url, now);
        let second = verify::verify_at(&config, &headers, &body, &url, now);
        prop_assert_eq!(first, second);
    }

    /// The genuine signature of any body under any secret is accepted, within the tolerance.
    #[test]
    fn the_real_signature_is_accepted(
        scheme in scheme(),
        secret in secret(),
        data in body(),
        skew in -5i64..=5,
    ) {
        prop_assume!(p256_key(&secret).is_some());
        let config = config_for(scheme, &secret);
        let (headers, body, url) = request(scheme, &Signer::Real(secret), &data, NOW + skew);
        prop_assert_eq!(verify::verify_at(&config, &headers, &body, &url, NOW), Ok(()));
    }

    /// A random signature for a fixed body and secret is refused, whatever its length.
    #[test]
    fn a_random_signature_is_refused(
        scheme in scheme(),
        forged in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100),
            prop::collection::vec(any::<u8>(), 20..=20),
            prop::collection::vec(any::<u8>(), 32..=32),
        ],
    ) {
        let secret = b"fixed-secret-for-forgery".to_vec();
        let data = br#"{"type":"order.created","amount":1500}"#;
        prop_assume!(forged != secret);
        let config = config_for(scheme, &secret);
        let (headers, body, url) = request(scheme, &Signer::Random(forged), data, NOW);
        prop_assert!(verify::verify_at(&config, &headers, &body, &url, NOW).is_err());
    }

    /// A signature made with another secret, or for another body, is refused.
    #[test]
    fn another_secret_or_another_body_is_refused(
        scheme in scheme(),
        secret in secret(),
        other in secret(),
        data in body(),
        tampered in body(),
    ) {
        prop_assume!(secret != other && data != tampered);
        prop_assume!(p256_key(&secret).is_some() && p256_key(&other).is_some());
        let config = config_for(scheme, &secret);
        let (headers, body, url) = request(scheme, &Signer::Real(other), &data, NOW);
        prop_assert!(verify::verify_at(&config, &headers, &body, &url, NOW).is_err());
        if scheme != VerificationType::BasicAuth {
            // Basic credentials do not sign the body.
            let (headers, body, url) = request(scheme, &Signer::Real(secret.clone()), &data, NOW);
            let (_, tampered, _) = request(scheme, &Signer::Real(secret), &tampered, NOW);
            // (Linear wraps the data as text, where different invalid UTF-8 reads the same.)
            prop_assume!(tampered != body);
            prop_assert!(verify::verify_at(&config, &headers, &tampered, &url, NOW).is_err());
        }
    }

    /// Arbitrary filters on arbitrary events: no panic, one answer, and the operators that
    /// are negations of others are.
    #[test]
    fn filters_never_panic_and_are_deterministic(
        filters in prop::collection::vec(filter(), 0..6),
        event in owned_event(),
    ) {
        let copy = event.clone();
        let results: Vec<bool> = filters.iter().map(|f| matches(f, &event.view())).collect();
        for (filter, result) in filters.iter().zip(&results) {
            prop_assert_eq!(matches(filter, &copy.view()), *result);
            if filter.op == FilterOp::Eq {
                let neq = Filter { op: FilterOp::Neq, ..filter.clone() };
                prop_assert_eq!(matches(&neq, &event.view()), !*result);
            }
            if filter.op == FilterOp::Exists {
                let present = Filter { value: Some(json!(true)), ..filter.clone() };
                let absent = Filter { value: Some(json!(false)), ..filter.clone() };
                prop_assert_eq!(
                    matches(&present, &event.view()),
                    !matches(&absent, &event.view())
                );
            }
        }
        let all = results.iter().all(|r| *r);
        prop_assert_eq!(matches_all(&filters, &event.view()), all);
        let reversed: Vec<Filter> = filters.iter().rev().cloned().collect();
        prop_assert_eq!(matches_all(&reversed, &event.view()), all);
    }

    /// A stored event of any content rebuilds for filters and transforms without a panic;
    /// the transform sees the body as the parser reads it.
    #[test]
    fn stored_events_parse_without_panicking(event in new_event(), filter in filter()) {
        let data = EventData::of(&event);
        let _ = matches(&filter, &data.view());
        let (body, bindings) = transform_input(&event);
        prop_assert_eq!(&body, &parse_body(&event.body));
        prop_assert_eq!(bindings.len(), 4);
        prop_assert!(headers_object(&event.headers).is_object());
        let _ = event_hops(&event);
    }

    /// Query strings: every `&`-separated part gives at most one pair, and the object form
    /// holds every name.
    #[test]
    fn query_strings_parse_without_panicking(query in prop_oneof![
        "\\PC{0,80}",
        prop::collection::vec(
            select(vec!["a", "=", "&", "%", "%2", "%zz", "%C3%A9", "+", "b=1", "a=2", ";", "é"]),
            0..20,
        ).prop_map(|p| p.concat()),
    ]) {
        let pairs = query_pairs(&query);
        prop_assert!(pairs.len() <= query.split('&').count());
        let object = query_object(&query);
        let object = object.as_object().expect("an object");
        for (name, _) in &pairs {
            prop_assert!(object.contains_key(name));
        }
    }

    /// Any body: the JSON check ingest runs before the schema agrees with the JSON parser,
    /// and the schema check answers within its bounds (at most 50 errors of at most 300 bytes
    /// and an ellipsis) in both modes.
    #[test]
    fn bodies_parse_and_validate_without_panicking(
        raw in prop_oneof![
            body(),
            json_value().prop_map(|v| serde_json::to_vec(&v).expect("JSON")),
        ],
        value in json_value(),
    ) {
        let parsed = schema::parse_json(&raw);
        if let Some(v) = &parsed {
            let reparsed = serde_json::from_slice::<Value>(&raw).ok();
            prop_assert_eq!(Some(v), reparsed.as_ref());
        }
        for config in SCHEMA_CONFIGS.iter() {
            let source = config.sources.values().next().expect("one Source");
            for body in [parsed.as_ref(), Some(&value), None] {
                match schema::validate(source, body) {
                    Ok(Some(Value::Array(errors))) | Err(Rejection::Invalid { errors: Value::Array(errors), .. }) => {
                        prop_assert!(!errors.is_empty() && errors.len() <= 50);
                        for e in &errors {
                            let message = e["message"].as_str().expect("a message");
                            prop_assert!(message.len() <= 300 + '…'.len_utf8());
                        }
                    }
                    Ok(None) => {}
                    Ok(Some(other)) => prop_assert!(false, "errors are not a list: {}", other),
                    Err(_) => prop_assert!(false, "a rejection other than Invalid"),
                }
            }
        }
    }

    /// `X-Forwarded-For` of any content: the client is the peer when the peer is no trusted
    /// proxy, and otherwise the peer or an address the header names.
    #[test]
    fn client_ip_is_the_peer_or_a_forwarded_address(
        peer in ip(),
        values in prop::collection::vec(prop::collection::vec(xff_entry(), 0..5), 0..3),
        trusted in prop::collection::vec(
            select(vec!["10.0.0.0/8", "::ffff:10.0.0.0/104", "0.0.0.0/0", "::/0", "203.0.113.9/32"]),
            0..3,
        ),
    ) {
        let trusted: Vec<IpNet> = trusted.iter().map(|n| n.parse().expect("network")).collect();
        let mut headers = HeaderMap::new();
        let mut named = vec![peer.to_canonical()];
        for entries in &values {
            let text = entries.join(",");
            if let Ok(value) = HeaderValue::from_str(&text) {
                headers.append("x-forwarded-for", value);
                for entry in text.split(',') {
                    let entry = entry.trim();
                    let inner = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')).unwrap_or(entry);
                    if let Ok(ip) = inner.parse::<IpAddr>() {
                        named.push(ip.to_canonical());
                    } else if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
                        named.push(socket.ip().to_canonical());
                    }
                }
            }
        }
        let client = ipfilter::client_ip(peer, &headers, &trusted);
        prop_assert!(named.contains(&client), "{} is neither the peer nor forwarded", client);
        if trusted.is_empty() {
            prop_assert_eq!(client, peer.to_canonical());
        }
        let _ = request_hops(&headers);
    }
}
