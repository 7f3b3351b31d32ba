//! The compiler reports every problem at once, naming object, field and reason, and keeps
//! every valid object.

use hookstream_crds::compiler::{compile, Objects, Reason};
use hookstream_crds::config::ObjectKey;
use hookstream_crds::manifest::parse_into;

fn objects(yaml: &str) -> Objects {
    let mut objects = Objects::default();
    let errors = parse_into(&mut objects, "test.yaml", yaml);
    assert!(errors.is_empty(), "{errors:#?}");
    objects
}

const BASE: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: a}
stringData: {key: abc, wh: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: src, namespace: a}
spec:
  verification: {type: hmac-sha256, secretRef: {name: s, key: key}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: dst, namespace: a}
spec:
  type: http
  http: {url: "http://127.0.0.1:1/x"}
"#;

#[test]
fn a_valid_set_compiles_with_defaults_applied() {
    let yaml = format!("{BASE}---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c, namespace: a}}\nspec: {{source: src, destination: dst}}\n");
    let out = compile(&objects(&yaml));
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    let d = &out.config.destinations[0];
    assert_eq!(d.retry.max_retries, 5);
    assert_eq!(
        d.retry.intervals_ms,
        vec![30_000, 300_000, 1_800_000, 7_200_000, 86_400_000]
    );
    assert_eq!(d.circuit.failure_threshold, 5);
    assert_eq!(d.circuit.cooldown_ms, 60_000);
    assert_eq!(
        out.config.sources[0].verification.as_ref().unwrap().secrets[0].expose(),
        b"abc"
    );
}

#[test]
fn every_error_is_reported_with_object_field_and_reason() {
    let yaml = format!(
        "{BASE}{}",
        r#"---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: missing-dest, namespace: a}
spec: {source: src, destination: nope}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: bad-transform, namespace: a}
spec:
  source: src
  destination: dst
  transform: {jsonata: "{ 'a': "}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: bad-filter, namespace: a}
spec:
  source: src
  destination: dst
  filters: [{field: bogus.x, op: eq, value: 1}, {field: body.n, op: gt, value: "x"}]
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: bad-dst, namespace: a}
spec:
  type: http
  http: {url: "ftp://x"}
  retry: {intervals: ["30", 5m]}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: bad-src, namespace: a}
spec:
  verification: {type: standard-webhooks, secretRef: {name: s, key: absent}}
  ipFilter: {allow: ["10.0.0.0/33"]}
  dedup: {strategy: header-field}
"#
    );
    let out = compile(&objects(&yaml));
    let find = |kind: &str, name: &str, field: &str| {
        out.errors
            .iter()
            .find(|e| e.kind == kind && e.object == ObjectKey::new("a", name) && e.field == field)
            .unwrap_or_else(|| panic!("no error for {kind} a/{name} {field}: {:#?}", out.errors))
    };
    assert_eq!(
        find("Connection", "missing-dest", "spec.destination").reason,
        Reason::DestinationNotFound
    );
    let t = find("Connection", "bad-transform", "spec.transform.jsonata");
    assert_eq!(t.reason, Reason::InvalidTransform);
    assert!(
        t.to_string()
            .contains("test.yaml: Connection a/bad-transform: spec.transform.jsonata:"),
        "{t}"
    );
    assert_eq!(
        find("Connection", "bad-filter", "spec.filters[0].field").reason,
        Reason::InvalidFilter
    );
    assert_eq!(
        find("Connection", "bad-filter", "spec.filters[1].value").reason,
        Reason::InvalidFilter
    );
    assert!(find("Destination", "bad-dst", "spec.http.url")
        .message
        .contains("http or https"));
    assert!(find("Destination", "bad-dst", "spec.retry.intervals[0]")
        .message
        .contains("no unit"));
    assert_eq!(
        find("Source", "bad-src", "spec.verification.secretRef").reason,
        Reason::SecretNotFound
    );
    assert!(find("Source", "bad-src", "spec.ipFilter.allow[0]")
        .message
        .contains("10.0.0.0/33"));
    find("Source", "bad-src", "spec.dedup.field");
    // Valid objects stay routed; broken ones are left out.
    assert_eq!(
        out.config
            .sources
            .iter()
            .map(|s| s.key.name.as_str())
            .collect::<Vec<_>>(),
        ["src"]
    );
    assert_eq!(
        out.config
            .destinations
            .iter()
            .map(|d| d.key.name.as_str())
            .collect::<Vec<_>>(),
        ["dst"]
    );
    assert!(out.config.connections.is_empty());
}

#[test]
fn a_connection_to_an_invalid_destination_is_not_ready() {
    let yaml = format!(
        "{BASE}{}",
        r#"---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {name: broken, namespace: a}
spec: {type: http}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {name: c, namespace: a}
spec: {source: src, destination: broken}
"#
    );
    let out = compile(&objects(&yaml));
    let e = out.errors.iter().find(|e| e.kind == "Connection").unwrap();
    assert_eq!(e.reason, Reason::DestinationNotReady);
    assert!(e.reason.is_reference());
}

#[test]
fn secret_values_never_appear_in_errors() {
    let yaml = r#"
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: a}
stringData: {wh: "not-base64-!!-topsecret"}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: src, namespace: a}
spec:
  verification: {type: standard-webhooks, secretRef: {name: s, key: wh}}
"#;
    let out = compile(&objects(yaml));
    assert_eq!(out.errors.len(), 1);
    assert!(!format!("{:?} {}", out.errors, out.errors[0]).contains("topsecret"));
}

#[test]
fn parse_errors_name_the_file_document_and_field() {
    let mut objects = Objects::default();
    let errors = parse_into(
        &mut objects,
        "conn.yaml",
        "apiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {name: c}\nspec: {source: a, destination: b, filters: [{field: body.x, op: like}]}\n---\napiVersion: hookstream.io/v1alpha1\nkind: Sourc\nmetadata: {name: x}\n",
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let first = errors[0].to_string();
    assert!(
        first.contains("conn.yaml (document 1)")
            && first.contains("spec.filters[0].op")
            && first.contains("like"),
        "{first}"
    );
    assert!(
        errors[1].to_string().contains("unknown kind \"Sourc\""),
        "{}",
        errors[1]
    );
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let mut objects = Objects::default();
    let errors = parse_into(
        &mut objects,
        "d.yaml",
        "apiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {name: d}\nspec: {type: http, http: {url: 'http://x', timeout: 5}}\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .to_string()
            .contains("spec.http.timeout: unknown field"),
        "{}",
        errors[0]
    );
    assert!(objects.destinations.is_empty());
}

#[test]
fn secret_values_never_appear_in_parse_errors() {
    let mut objects = Objects::default();
    let errors = parse_into(
        &mut objects,
        "s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: a}\nstringData: {pin: 918273}\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let text = errors[0].to_string();
    assert!(
        text.contains("stringData.pin") && !text.contains("918273"),
        "{text}"
    );
}

#[test]
fn a_destination_at_a_denied_literal_address_is_refused_with_egress_denied() {
    let dest = |name: &str, url: &str| {
        format!("---\napiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: {name}, namespace: a}}\nspec: {{type: http, http: {{url: \"{url}\"}}}}\n")
    };
    let yaml = [
        dest("metadata", "http://169.254.169.254/latest/meta-data/"),
        dest("decimal", "http://2852039166/"),
        dest("mapped", "http://[::ffff:169.254.169.254]/"),
        dest("loop", "http://127.0.0.1:9/"),
        dest("named", "http://metadata.internal/"),
    ]
    .concat();
    let mut objs = objects(&yaml);
    let open = compile(&objs);
    let denied: Vec<&str> = open
        .errors
        .iter()
        .filter(|e| e.reason == Reason::EgressDenied)
        .map(|e| e.object.name.as_str())
        .collect();
    assert_eq!(
        denied,
        ["metadata", "decimal", "mapped"],
        "{:#?}",
        open.errors
    );
    let e = &open.errors[0];
    assert_eq!(e.field, "spec.http.url");
    assert!(
        e.message.contains("169.254.169.254") && e.message.contains("always denied"),
        "{}",
        e.message
    );

    // The install's default list also refuses loopback; a host name is left to the gateway.
    objs.egress = hookstream_crds::egress::EgressPolicy::new(
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        Vec::new(),
    );
    let install = compile(&objs);
    let denied: Vec<&str> = install
        .errors
        .iter()
        .filter(|e| e.reason == Reason::EgressDenied)
        .map(|e| e.object.name.as_str())
        .collect();
    assert_eq!(denied, ["metadata", "decimal", "mapped", "loop"]);
    assert_eq!(
        install.config.destinations.len(),
        1,
        "the named one is kept"
    );
}

#[test]
fn a_transform_calling_an_unknown_function_is_refused_when_it_compiles() {
    let connection = |jsonata: &str| {
        format!("{BASE}---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: c, namespace: a}}\nspec:\n  source: src\n  destination: dst\n  transform:\n    jsonata: |\n      {jsonata}\n")
    };
    let out = compile(&objects(&connection(r#"{"n": $upercase(name)}"#)));
    let e = out
        .errors
        .iter()
        .find(|e| e.reason == Reason::InvalidTransform)
        .expect("refused");
    assert_eq!(e.field, "spec.transform.jsonata");
    assert!(e.message.contains("$upercase"), "{}", e.message);
    // Built-ins, functions defined in the text and parameters holding functions are fine.
    let fine = compile(&objects(&connection(
        r#"( $twice := function($f, $x) { $f($f($x)) }; {"n": $twice(function($v) { $uppercase($v) }, name), "m": $map([1,2], function($v) { $v * 2 })} )"#,
    )));
    assert!(fine.errors.is_empty(), "{:#?}", fine.errors);
}
