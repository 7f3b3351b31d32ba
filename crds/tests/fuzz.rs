//! Property tests (fuzzing) of manifest reading and compilation: whatever text or field values
//! a user writes, `parse_into` and `compile` never panic, every error names the kind, the
//! object and the field at fault, no error quotes a Secret's value, an object with an error is
//! left out of the config, and compiling twice gives the same result.
//!
//! The number of inputs per property is proptest's default (256) or `PROPTEST_CASES`, as in
//! `PROPTEST_CASES=20000 cargo test -p hookstream-crds --test fuzz`.

use std::collections::BTreeSet;

use hookstream_crds::compiler::{compile, Compilation, ConfigError, Objects, Reason};
use hookstream_crds::config::ObjectKey;
use hookstream_crds::manifest::parse_into;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Map, Value};

/// The five kinds the compiler reports on.
const KINDS: [&str; 5] = ["Source", "Destination", "Connection", "Topic", "AlertRule"];
/// Text that only ever appears as a Secret's value: no error may contain it.
const MARKER: &str = "hs-secret-marker-6f1d2b";
/// A valid Standard Webhooks key.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A manifest set that compiles cleanly, the seed of the mutated texts.
const SEED: &str = r#"apiVersion: v1
kind: Secret
metadata: {name: s, namespace: a}
stringData: {key: hs-secret-marker-6f1d2b, wh: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: src, namespace: a}
spec:
  verification: {type: hmac-sha256, secretRef: {name: s, key: key}, header: X-Sig}
  dedup: {strategy: body-field, field: id, windowSeconds: 60}
  ipFilter: {allow: [10.0.0.0/8], deny: ["10.1.2.3"]}
  schema: {action: reject, jsonSchema: {type: object, required: [type]}}
  rateLimit: {requestsPerSecond: 5, burst: 10}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: dst, namespace: a}
spec:
  type: http
  http:
    url: "http://192.0.2.10:8080/x"
    headersFrom: [{name: Authorization, secretRef: {name: s, key: key}}]
    timeoutSeconds: 10
  signing: {scheme: standard-webhooks, secretRef: {name: s, key: wh}}
  retry: {maxRetries: 3, intervals: [1s, 1m]}
  circuitBreaker: {failureThreshold: 2, cooldown: 30s}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: c, namespace: a}
spec:
  source: src
  destination: dst
  filters: [{field: body.type, op: eq, value: order.created}, {field: headers.x-n, op: gt, value: 3}]
  transform: {jsonata: "{ 'id': id }"}
---
apiVersion: hookstream.io/v1alpha1
kind: Topic
metadata: {name: t, namespace: a}
spec:
  subscriptions: [{destination: dst, filters: [{field: method, op: in, value: [POST]}]}]
---
apiVersion: hookstream.io/v1alpha1
kind: AlertRule
metadata: {name: r, namespace: a}
spec:
  type: failure-rate
  threshold: 0.5
  window: 5m
  destination: dst
  channels: [{webhook: {url: "http://192.0.2.10/alerts", secretRef: {name: s, key: key}}}]
"#;

/// Inputs per property: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- arbitrary text ---------------------------------------------------------------------

/// One edit of a text: insert, delete or replace at a position.
#[derive(Clone, Debug)]
enum Edit {
    Insert(Index, String),
    Delete(Index, usize),
    Replace(Index, usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let piece = prop_oneof![
        "[ -~\n\t]{0,12}",
        select(vec![
            ":",
            "- ",
            "---\n",
            "\n  ",
            "{",
            "}",
            "[",
            "]",
            "&a ",
            "*a",
            "!!binary ",
            "'",
            "\"",
            "~",
            "null",
            "kind: Source\n",
            "apiVersion: v1\n",
            "<<: *a\n",
            "? ",
            "|\n",
            "#",
        ])
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        (any::<Index>(), piece.clone()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<Index>(), 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<Index>(), 1usize..20, piece).prop_map(|(at, n, s)| Edit::Replace(at, n, s)),
    ]
}

/// `text` with `edits` applied, each at a char boundary.
fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: &Index| i.index(chars.len() + 1);
        match e {
            Edit::Insert(i, s) => {
                let p = at(i);
                chars.splice(p..p, s.chars());
            }
            Edit::Delete(i, n) => {
                let p = at(i);
                let end = (p + n).min(chars.len());
                chars.drain(p..end);
            }
            Edit::Replace(i, n, s) => {
                let p = at(i);
                let end = (p + n).min(chars.len());
                chars.splice(p..end, s.chars());
            }
        }
    }
    chars.into_iter().collect()
}

/// Arbitrary YAML-ish text: random characters, random YAML tokens, and the seed manifests
/// with random edits (which keep most of the structure, so the decoders get deep inputs).
fn yamlish() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => "\\PC{0,300}",
        1 => prop::collection::vec(
            select(vec![
                "apiVersion: hookstream.io/v1alpha1\n", "kind: Source\n", "kind: Secret\n",
                "metadata: {name: x}\n", "spec:\n", "  ", "- ", "---\n", ": ", "{", "}", "[",
                "]", ",", "\n", "&x ", "*x", "0x1F", "1e999", "-", "true", "~", "'", "\"",
            ]),
            0..60,
        )
        .prop_map(|parts| parts.concat()),
        3 => prop::collection::vec(edit(), 1..6).prop_map(|edits| apply(SEED, &edits)),
    ]
}

// ---- structurally valid manifests with arbitrary values --------------------------------

/// Strings users might write, valid or not, and random text.
fn text() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => select(vec![
            "", " ", "0", "-1", "1s", "0s", "500ms", "99999999999999999999d", "1x", "5m",
            "http://192.0.2.10/x", "https://example.com:8443/p?q=1", "http://127.0.0.1:1/",
            "http://169.254.169.254/latest", "http://[::1]/", "ftp://x", "http://", "//x",
            "10.0.0.0/8", "::1", "fe80::/10", "300.1.1.1", "1.2.3.4/33", "body.type", "body",
            "headers.x-a", "query.q", "method", "payload.", "a..b", "{ 'a': $ }", "$", "(",
            "$$.x", "X-Sig", "sha256=", "whsec_", WHSEC, "s", "key", "wh", "src", "dst",
            "\u{0}", "é", "💥", "\\", "a:b", "-\n-",
        ])
        .prop_map(Value::from),
        2 => "\\PC{0,24}".prop_map(Value::from),
    ]
    .boxed()
}

/// Any scalar: text, booleans, null and numbers of every kind.
fn scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => text(),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        2 => (0u32..100).prop_map(Value::from),
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value, up to a few levels deep.
fn any_json() -> BoxedStrategy<Value> {
    scalar()
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z$]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
        .boxed()
}

/// One of `words` most of the time, else any scalar.
fn word(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => select(words).prop_map(Value::from),
        1 => scalar(),
    ]
    .boxed()
}

/// An object with each of `fields` present or absent.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    fields
        .into_iter()
        .map(|(name, value)| prop::option::of(value.prop_map(move |v| (name, v))))
        .collect::<Vec<_>>()
        .prop_map(|present| {
            Value::Object(
                present
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect::<Map<_, _>>(),
            )
        })
        .boxed()
}

fn list(item: BoxedStrategy<Value>, max: usize) -> BoxedStrategy<Value> {
    prop::collection::vec(item, 0..max)
        .prop_map(Value::Array)
        .boxed()
}

fn secret_ref() -> BoxedStrategy<Value> {
    object(vec![
        ("name", word(&["s", "t", "missing"])),
        ("key", word(&["key", "wh", "pem", "empty", "nope"])),
    ])
}

fn filter() -> BoxedStrategy<Value> {
    object(vec![
        ("field", text()),
        (
            "op",
            word(&[
                "eq", "neq", "contains", "gt", "gte", "lt", "lte", "exists", "in",
            ]),
        ),
        ("value", any_json()),
    ])
}

fn transform() -> BoxedStrategy<Value> {
    object(vec![("jsonata", text())])
}

fn source_spec() -> BoxedStrategy<Value> {
    object(vec![
        (
            "template",
            word(&[
                "stripe", "github", "slack", "svix", "twilio", "custom", "paddle",
            ]),
        ),
        (
            "verification",
            object(vec![
                (
                    "type",
                    word(&[
                        "hmac-sha256",
                        "hmac-sha1",
                        "standard-webhooks",
                        "stripe",
                        "slack",
                        "twilio",
                        "sendgrid",
                        "linear",
                        "paddle",
                        "basic-auth",
                    ]),
                ),
                ("secretRef", secret_ref()),
                ("secretRefs", list(secret_ref(), 3)),
                ("header", text()),
                ("encoding", word(&["hex", "base64"])),
                ("prefix", text()),
                ("tolerance", text()),
            ]),
        ),
        (
            "dedup",
            object(vec![
                (
                    "strategy",
                    word(&["payload-hash", "header-field", "body-field"]),
                ),
                ("field", text()),
                ("windowSeconds", scalar()),
            ]),
        ),
        (
            "ipFilter",
            object(vec![("allow", list(text(), 3)), ("deny", list(text(), 3))]),
        ),
        (
            "schema",
            object(vec![
                ("action", word(&["reject", "warn"])),
                ("jsonSchema", any_json()),
            ]),
        ),
        ("maxBodyBytes", scalar()),
        (
            "rateLimit",
            object(vec![("requestsPerSecond", scalar()), ("burst", scalar())]),
        ),
    ])
}

fn destination_spec() -> BoxedStrategy<Value> {
    object(vec![
        ("type", word(&["http", "sqs", "kafka", "websocket"])),
        (
            "template",
            word(&[
                "slack",
                "discord",
                "pagerduty",
                "datadog",
                "zapier",
                "linear",
            ]),
        ),
        ("credentialsRef", secret_ref()),
        ("transform", transform()),
        (
            "http",
            object(vec![
                ("url", text()),
                ("method", word(&["POST", "PUT", "GET", "post"])),
                (
                    "headers",
                    prop::collection::btree_map("[A-Za-z-]{0,8}", text(), 0..3)
                        .prop_map(|m| Value::Object(m.into_iter().collect()))
                        .boxed(),
                ),
                (
                    "headersFrom",
                    list(
                        object(vec![("name", text()), ("secretRef", secret_ref())]),
                        3,
                    ),
                ),
                ("timeoutSeconds", scalar()),
            ]),
        ),
        (
            "signing",
            object(vec![
                ("scheme", word(&["hmac", "standard-webhooks"])),
                ("secretRef", secret_ref()),
                ("secretRefs", list(secret_ref(), 3)),
                ("algorithm", word(&["sha256", "sha1"])),
                ("header", text()),
            ]),
        ),
        (
            "retry",
            object(vec![
                ("maxRetries", scalar()),
                ("backoff", word(&["exponential", "linear", "fixed"])),
                ("intervals", list(text(), 4)),
            ]),
        ),
        (
            "circuitBreaker",
            object(vec![("failureThreshold", scalar()), ("cooldown", text())]),
        ),
        ("concurrency", scalar()),
        ("rateLimit", scalar()),
    ])
}

fn connection_spec() -> BoxedStrategy<Value> {
    object(vec![
        ("source", word(&["src", "other", ""])),
        ("destination", word(&["dst", "other", ""])),
        ("filters", list(filter(), 4)),
        ("transform", transform()),
        ("paused", scalar()),
    ])
}

fn topic_spec() -> BoxedStrategy<Value> {
    object(vec![
        ("description", text()),
        (
            "subscriptions",
            list(
                object(vec![
                    ("destination", word(&["dst", "other"])),
                    ("filters", list(filter(), 3)),
                    ("transform", transform()),
                ]),
                3,
            ),
        ),
    ])
}

fn alert_rule_spec() -> BoxedStrategy<Value> {
    object(vec![
        (
            "type",
            word(&[
                "failure-rate",
                "latency",
                "volume-drop",
                "dlq",
                "issue-opened",
            ]),
        ),
        ("threshold", scalar()),
        ("window", text()),
        ("source", word(&["src", "other"])),
        ("destination", word(&["dst", "other"])),
        (
            "channels",
            list(
                object(vec![(
                    "webhook",
                    object(vec![("url", text()), ("secretRef", secret_ref())]),
                )]),
                3,
            ),
        ),
        ("cooldown", text()),
    ])
}

/// One object of a hookstream kind, named from a small pool so that references resolve
/// (and names repeat) often.
fn hookstream_object() -> impl Strategy<Value = Value> {
    let spec = prop_oneof![
        source_spec().prop_map(|s| ("Source", "src", s)),
        destination_spec().prop_map(|s| ("Destination", "dst", s)),
        connection_spec().prop_map(|s| ("Connection", "c", s)),
        topic_spec().prop_map(|s| ("Topic", "t", s)),
        alert_rule_spec().prop_map(|s| ("AlertRule", "r", s)),
    ];
    let naming = select(vec!["usual", "other", "empty", "missing"]);
    (spec, naming, select(vec!["a", "b"])).prop_map(|((kind, usual, spec), naming, ns)| {
        let metadata = match naming {
            "usual" => json!({"name": usual, "namespace": ns}),
            "other" => json!({"name": "other", "namespace": ns}),
            "empty" => json!({"name": "", "namespace": ns}),
            _ => json!({"namespace": ns}),
        };
        json!({
            "apiVersion": "hookstream.io/v1alpha1",
            "kind": kind,
            "metadata": metadata,
            "spec": spec,
        })
    })
}

/// A Secret whose values embed the marker (or are a valid key, or empty).
fn secret() -> impl Strategy<Value = Value> {
    let value = select(vec![
        MARKER.to_owned(),
        format!("{MARKER}-2"),
        WHSEC.to_owned(),
        format!("whsec_{MARKER}"),
        String::new(),
    ]);
    (
        select(vec!["s", "t"]),
        select(vec!["a", "b"]),
        prop::collection::btree_map(select(vec!["key", "wh", "pem", "empty"]), value, 0..4),
    )
        .prop_map(|(name, ns, data)| {
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": ns},
                "stringData": data,
            })
        })
}

/// A manifest file: Secrets and hookstream objects as YAML documents.
fn manifests() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(secret(), 0..3),
        prop::collection::vec(hookstream_object(), 1..7),
    )
        .prop_map(|(secrets, objects)| {
            secrets
                .iter()
                .chain(&objects)
                .map(|doc| serde_yaml::to_string(doc).expect("JSON values are YAML"))
                .collect::<Vec<_>>()
                .join("---\n")
        })
}

// ---- the properties ---------------------------------------------------------------------

/// An error names its kind, its object (namespace and name) and a field, and says something.
fn assert_named(error: &ConfigError) {
    assert!(!error.kind.is_empty(), "no kind: {error:?}");
    assert!(!error.object.name.is_empty(), "no object name: {error:?}");
    assert!(
        !error.object.namespace.is_empty(),
        "no namespace: {error:?}"
    );
    assert!(!error.field.is_empty(), "no field: {error:?}");
    assert!(!error.message.is_empty(), "no message: {error:?}");
}

/// Every key of the objects of `kind` in `objects`.
fn keys_of(objects: &Objects, kind: &str) -> BTreeSet<ObjectKey> {
    fn keys<K: kube::ResourceExt>(items: &[K]) -> BTreeSet<ObjectKey> {
        items
            .iter()
            .map(|o| ObjectKey::new(o.namespace().unwrap_or_default(), o.name_any()))
            .collect()
    }
    match kind {
        "Source" => keys(&objects.sources),
        "Destination" => keys(&objects.destinations),
        "Connection" => keys(&objects.connections),
        "Topic" => keys(&objects.topics),
        "AlertRule" => keys(&objects.alert_rules),
        _ => BTreeSet::new(),
    }
}

/// The compile-time properties of `objects`: errors name a kind, an object of that kind that
/// exists, and a field; invalid objects stay out of the config; compiling is deterministic.
fn check_compilation(objects: &Objects) -> Compilation {
    let out = compile(objects);
    for error in &out.errors {
        assert_named(error);
        assert!(KINDS.contains(&error.kind.as_str()), "{error:?}");
        assert!(
            keys_of(objects, &error.kind).contains(&error.object),
            "error about an object that was not given: {error:?}"
        );
    }
    // A second object of a name is reported as a duplicate, while the first one is kept.
    let broken: BTreeSet<(&str, &ObjectKey)> = out
        .errors
        .iter()
        .filter(|e| e.reason != Reason::DuplicateName)
        .map(|e| (e.kind.as_str(), &e.object))
        .collect();
    let compiled = out
        .config
        .sources
        .iter()
        .map(|s| ("Source", &s.key))
        .chain(
            out.config
                .destinations
                .iter()
                .map(|d| ("Destination", &d.key)),
        )
        .chain(
            out.config
                .connections
                .iter()
                .map(|c| ("Connection", &c.key)),
        )
        .chain(out.config.topics.iter().map(|t| ("Topic", &t.key)));
    for (kind, key) in compiled {
        assert!(
            !broken.contains(&(kind, key)),
            "{kind} {key} has errors yet is in the config"
        );
    }
    let again = compile(objects);
    assert_eq!(out.errors, again.errors, "compiling twice differs");
    assert_eq!(
        serde_json::to_string(&out.config).expect("config serializes"),
        serde_json::to_string(&again.config).expect("config serializes"),
        "compiling twice differs"
    );
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Any text: reading and compiling never panic, and every error is named.
    #[test]
    fn arbitrary_text_never_panics_and_errors_are_named(text in yamlish()) {
        let mut objects = Objects::default();
        let errors = parse_into(&mut objects, "fuzz.yaml", &text);
        for error in &errors {
            assert_named(error);
            assert_eq!(error.origin.as_deref().map(|o| o.starts_with("fuzz.yaml")), Some(true));
        }
        check_compilation(&objects);
    }

    /// Well-formed objects with arbitrary field values: the same, and no error (of reading
    /// or compiling) quotes a Secret's value.
    #[test]
    fn arbitrary_field_values_never_panic_and_never_leak_secrets(text in manifests()) {
        let mut objects = Objects::default();
        let errors = parse_into(&mut objects, "fuzz.yaml", &text);
        for error in &errors {
            assert_named(error);
            prop_assert!(!error.to_string().contains(MARKER), "{error}");
        }
        let out = check_compilation(&objects);
        for error in &out.errors {
            prop_assert!(!error.to_string().contains(MARKER), "{error}");
        }
    }
}

/// The seed itself is valid, so the mutations above start from a manifest that compiles.
#[test]
fn the_seed_compiles_cleanly() {
    let mut objects = Objects::default();
    let errors = parse_into(&mut objects, "seed.yaml", SEED);
    assert!(errors.is_empty(), "{errors:#?}");
    let out = compile(&objects);
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    assert_eq!(out.config.connections.len(), 1);
    assert_eq!(out.config.topics.len(), 1);
}

/// Found by the properties above: an object without a name (or with an empty one) was read,
/// so its errors named no object and a valid one was routed as `namespace/`. Now it is
/// refused when read, with an error that says so.
#[test]
fn a_nameless_object_is_refused_when_read() {
    for metadata in ["{namespace: a}", "{name: '', namespace: a}"] {
        for (api_version, kind) in [
            ("hookstream.io/v1alpha1", "Source"),
            ("hookstream.io/v1alpha1", "Topic"),
            ("v1", "Secret"),
        ] {
            let text = format!("apiVersion: {api_version}\nkind: {kind}\nmetadata: {metadata}\n");
            let mut objects = Objects::default();
            let errors = parse_into(&mut objects, "nameless.yaml", &text);
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert_named(&errors[0]);
            assert_eq!(errors[0].kind, kind);
            assert!(errors[0].message.contains("metadata.name is required"));
            assert!(objects.sources.is_empty() && objects.topics.is_empty());
            assert!(objects.secrets.is_empty());
        }
    }
}
