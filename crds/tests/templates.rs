//! Source templates: what `spec.template` sets, what explicit fields override, and the errors
//! a template's Source can have.

use hookstream_crds::compiler::{compile, Compilation, Objects, Reason};
use hookstream_crds::config::SourceConfig;
use hookstream_crds::manifest::parse_into;
use hookstream_crds::v1alpha1::{DedupStrategy, SignatureEncoding, VerificationType};

// A real P-256 public key (base64 DER SubjectPublicKeyInfo), as SendGrid shows one.
const P256_PUBLIC: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEM16vqn3Zl5hewtGa41n0PR26Dp8zdeeHIpI0fnFg9hWQw3Hq9vIMkTASTcZGQfKJaCj6qv7xZHazi9dcBv6SKg==";

fn compiled(source_spec: &str) -> Compilation {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: hook, namespace: p}}
stringData:
  current: whsec_current
  next: whsec_next
  sw: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
  public: "{P256_PUBLIC}"
  bad-public: not-a-key
  username: postmark
  password: s3cret
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: p}}
spec:
{source_spec}
"#
    );
    let mut objects = Objects::default();
    let errors = parse_into(&mut objects, "test.yaml", &yaml);
    assert!(errors.is_empty(), "{errors:#?}");
    compile(&objects)
}

fn source(spec: &str) -> SourceConfig {
    let out = compiled(spec);
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    out.config.sources[0].clone()
}

#[test]
fn a_template_sets_scheme_header_encoding_window_and_dedup() {
    let github =
        source("  template: github\n  verification: {secretRef: {name: hook, key: current}}");
    let v = github.verification.unwrap();
    assert_eq!(v.scheme, VerificationType::HmacSha256);
    assert_eq!(v.header, "x-hub-signature-256");
    assert_eq!(v.prefix.as_deref(), Some("sha256="));
    assert_eq!(v.encoding, Some(SignatureEncoding::Hex));
    let dedup = github.dedup.unwrap();
    assert_eq!(dedup.strategy, DedupStrategy::HeaderField);
    assert_eq!(dedup.field.as_deref(), Some("x-github-delivery"));

    let stripe =
        source("  template: stripe\n  verification: {secretRef: {name: hook, key: current}}");
    let v = stripe.verification.unwrap();
    assert_eq!(
        (v.scheme, v.header.as_str()),
        (VerificationType::Stripe, "stripe-signature")
    );
    assert_eq!(v.tolerance_seconds, 300);
    assert_eq!(
        v.secrets[0].expose(),
        b"whsec_current",
        "Stripe keys with the whole string"
    );
    assert_eq!(stripe.dedup.unwrap().field.as_deref(), Some("id"));

    let paddle =
        source("  template: paddle\n  verification: {secretRef: {name: hook, key: current}}");
    assert_eq!(paddle.verification.unwrap().tolerance_seconds, 5);
    let linear =
        source("  template: linear\n  verification: {secretRef: {name: hook, key: current}}");
    assert_eq!(linear.verification.unwrap().tolerance_seconds, 60);
}

#[test]
fn explicit_fields_override_the_template() {
    let s = source(
        "  template: paddle\n  verification: {secretRef: {name: hook, key: current}, tolerance: 2m, header: X-Sig}\n  dedup: {strategy: payload-hash}",
    );
    let v = s.verification.unwrap();
    assert_eq!((v.tolerance_seconds, v.header.as_str()), (120, "x-sig"));
    assert_eq!(s.dedup.unwrap().strategy, DedupStrategy::PayloadHash);
    // Another scheme drops the template's scheme-specific settings.
    let s = source("  template: github\n  verification: {type: hmac-sha1, secretRef: {name: hook, key: current}}");
    let v = s.verification.unwrap();
    assert_eq!(v.scheme, VerificationType::HmacSha1);
    assert_eq!((v.prefix, v.encoding), (None, None));
}

#[test]
fn secret_refs_add_keys_for_rotation() {
    let s = source(
        "  template: stripe\n  verification:\n    secretRef: {name: hook, key: current}\n    secretRefs: [{name: hook, key: next}]",
    );
    let keys: Vec<&[u8]> = s
        .verification
        .as_ref()
        .unwrap()
        .secrets
        .iter()
        .map(|k| k.expose())
        .collect();
    assert_eq!(
        keys,
        vec![b"whsec_current".as_slice(), b"whsec_next".as_slice()]
    );
    let out = compiled(
        "  template: stripe\n  verification:\n    secretRefs: [{name: hook, key: current}, {name: hook, key: gone}]",
    );
    assert_eq!(out.errors.len(), 1, "{:#?}", out.errors);
    assert_eq!(out.errors[0].field, "spec.verification.secretRefs[1]");
    assert_eq!(out.errors[0].reason, Reason::SecretNotFound);
}

#[test]
fn key_material_is_checked_for_its_scheme() {
    let s = source("  template: sendgrid\n  verification: {secretRef: {name: hook, key: public}}");
    assert_eq!(s.verification.unwrap().scheme, VerificationType::Sendgrid);
    let out = compiled(
        "  template: sendgrid\n  verification: {secretRef: {name: hook, key: bad-public}}",
    );
    assert!(
        out.errors[0].message.contains("ECDSA P-256 public key"),
        "{:#?}",
        out.errors
    );
    assert!(
        !out.errors[0].message.contains("not-a-key"),
        "the value stays secret"
    );

    let s = source("  template: svix\n  verification: {secretRef: {name: hook, key: sw}}");
    assert_eq!(s.verification.unwrap().header, "svix-signature");

    let s =
        source("  template: postmark\n  verification: {secretRef: {name: hook, key: password}}");
    let v = s.verification.unwrap();
    assert_eq!(v.scheme, VerificationType::BasicAuth);
    assert_eq!(v.secrets[0].expose(), b"postmark:s3cret");
}

#[test]
fn a_signing_template_without_a_secret_is_an_error_and_custom_needs_a_type() {
    let out = compiled("  template: stripe");
    assert_eq!(out.errors.len(), 1);
    assert_eq!(out.errors[0].field, "spec.verification.secretRef");
    assert!(out.errors[0]
        .message
        .contains("template stripe verifies signatures"));
    let out =
        compiled("  template: custom\n  verification: {secretRef: {name: hook, key: current}}");
    assert_eq!(out.errors[0].field, "spec.verification.type");
    // Custom without verification accepts anything, as before.
    let s = source("  template: custom");
    assert!(s.verification.is_none() && s.dedup.is_none());
}

fn destination(spec: &str) -> Compilation {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: p}}\nstringData: {{pd: routing-key-1}}\n---\napiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: out, namespace: p}}\nspec:\n{spec}\n"
    );
    let mut objects = Objects::default();
    let errors = parse_into(&mut objects, "test.yaml", &yaml);
    assert!(errors.is_empty(), "{errors:#?}");
    compile(&objects)
}

#[test]
fn destination_templates_default_the_url_and_need_their_credential() {
    let out =
        destination("  type: http\n  template: pagerduty\n  credentialsRef: {name: keys, key: pd}");
    assert!(out.errors.is_empty(), "{:#?}", out.errors);
    let d = &out.config.destinations[0];
    assert_eq!(
        d.http.as_ref().unwrap().url,
        "https://events.pagerduty.com/v2/enqueue"
    );
    assert_eq!(d.credential.as_ref().unwrap().expose(), b"routing-key-1");
    assert!(d
        .payload_transform
        .as_deref()
        .unwrap()
        .contains("routing_key"));

    let out = destination("  type: http\n  template: datadog");
    assert_eq!(out.errors[0].field, "spec.credentialsRef");
    assert!(out.errors[0].message.contains("template datadog"));
    let out = destination("  type: http\n  template: slack");
    assert_eq!(out.errors[0].field, "spec.http");
    let out = destination(
        "  type: http\n  template: zapier\n  http: {url: 'https://hooks.zapier.com/x'}\n  transform: {jsonata: '{'}",
    );
    assert_eq!(out.errors[0].reason, Reason::InvalidTransform);
}
