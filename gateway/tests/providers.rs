//! Provider templates against the providers' own libraries: for every Source template, a
//! request signed by the provider's SDK (or by its documented scheme where no SDK signs,
//! cross-checked by a verify-only SDK) is accepted; a changed body, a wrong secret, a missing
//! header and, where the scheme signs a time, a stale timestamp are refused with 401; a
//! request signed with the rotated-in secret is accepted. Outbound Standard Webhooks
//! signatures are checked by the `standardwebhooks` library.
//!
//! The SDKs are installed, pinned, by `tests/providers/setup` (PyPI and npm) into a cache.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use common::{unix_now, Gateway, Receiver};
use serde_json::{json, Value};

/// Where the pinned SDKs are.
struct Sdks {
    python: PathBuf,
    node_modules: PathBuf,
}

fn providers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/providers")
}

fn sdks() -> &'static Sdks {
    static SDKS: OnceLock<Sdks> = OnceLock::new();
    SDKS.get_or_init(|| {
        let out = Command::new(providers_dir().join("setup"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("cannot run tests/providers/setup");
        assert!(out.status.success(), "tests/providers/setup failed");
        let text = String::from_utf8(out.stdout).unwrap();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("setup printed no {key}: {text}"))
        };
        Sdks {
            python: value("PYTHON="),
            node_modules: value("NODE_MODULES="),
        }
    })
}

/// A request as a signer produced it.
#[derive(Clone, Debug)]
struct Signed {
    headers: Vec<(String, String)>,
    body: String,
    url: Option<String>,
    content_type: Option<String>,
}

impl Signed {
    /// A signer's output: `{"headers": {...}, "body": "...", "url"?, "content_type"?}`.
    fn from_json(v: &Value) -> Signed {
        Signed {
            headers: v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
            body: v["body"].as_str().unwrap().to_owned(),
            url: v["url"].as_str().map(str::to_owned),
            content_type: v["content_type"].as_str().map(str::to_owned),
        }
    }

    fn without(&self, header: &str) -> Signed {
        let mut s = self.clone();
        s.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(header));
        assert_ne!(s.headers.len(), self.headers.len(), "no {header} to remove");
        s
    }

    fn with_body(&self, body: &str) -> Signed {
        let mut s = self.clone();
        s.body = body.to_owned();
        s
    }
}

/// Runs the signer of `provider` (Node for the providers whose SDK is on npm).
fn sign(provider: &str, args: &[(&str, &str)]) -> Signed {
    let sdks = sdks();
    let node = matches!(provider, "github" | "shopify" | "linear");
    let mut cmd = if node {
        let mut c = Command::new("node");
        c.arg(providers_dir().join("sign.mjs"))
            .env("NODE_MODULES", &sdks.node_modules)
            .env("NODE_PATH", &sdks.node_modules);
        c
    } else {
        let mut c = Command::new(&sdks.python);
        c.arg(providers_dir().join("sign.py"));
        c
    };
    cmd.arg(provider);
    for (flag, value) in args {
        cmd.arg(format!("--{flag}")).arg(value);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "signer {provider} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "signer {provider} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    Signed::from_json(&v)
}

async fn send(gw: &Gateway, source: &str, signed: &Signed) -> u16 {
    let url = signed
        .url
        .clone()
        .unwrap_or_else(|| format!("{}/v1/ingest/p/{source}", gw.base));
    let mut req = reqwest::Client::new()
        .post(url)
        .header(
            "content-type",
            signed.content_type.as_deref().unwrap_or("application/json"),
        )
        .body(signed.body.clone());
    for (k, v) in &signed.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.send().await.unwrap().status().as_u16()
}

/// A Secret `NAME` with keys `current` and `next`, and a Source `NAME` with
/// `template: TEMPLATE` accepting both; `verification_extra` adds lines (indented by four
/// spaces) to its verification, such as a `type`.
fn source(
    name: &str,
    template: &str,
    current: &str,
    next: &str,
    verification_extra: &str,
) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: p}}
stringData:
  current: "{current}"
  next: "{next}"
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: {name}, namespace: p}}
spec:
  template: {template}
  verification:
{verification_extra}    secretRef: {{name: {name}, key: current}}
    secretRefs: [{{name: {name}, key: next}}]
"#
    )
}

const STRIPE_CURRENT: &str = "whsec_test_current_5f0c9a";
const STRIPE_NEXT: &str = "whsec_test_next_77ad01";
const SW_CURRENT: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_NEXT: &str = "whsec_dGhlIG5leHQgc2lnbmluZyBrZXkgZm9yIHRlc3Rz";
const SW_WRONG: &str = "whsec_d3Jvbmcgc2lnbmluZyBrZXkgZm9yIHRlc3Rz";

struct Case<'a> {
    /// The Source name (the template name, or a variant).
    source: &'a str,
    /// Signer name.
    signer: &'a str,
    /// Signer flags other than secret/body/timestamp.
    args: Vec<(&'a str, String)>,
    current: String,
    next: String,
    wrong: String,
    /// The flag carrying the secret (`secret`, `private-key-pem`, `password`).
    secret_flag: &'a str,
    /// The header that carries the signature.
    header: &'a str,
    /// Seconds past the replay window, for schemes that sign a time.
    stale_by: Option<i64>,
    /// Body of a genuine request; `{ts}` is replaced by the signing time in ms.
    body: &'a str,
    /// Whether the scheme covers the body (Basic auth does not).
    body_signed: bool,
}

fn signed(case: &Case<'_>, secret: &str, timestamp: i64, body: &str) -> Signed {
    let ts = timestamp.to_string();
    let body = body.replace("{ts}", &(timestamp * 1000).to_string());
    let mut args: Vec<(&str, &str)> = vec![
        (case.secret_flag, secret),
        ("body", &body),
        ("timestamp", &ts),
    ];
    for (k, v) in &case.args {
        args.push((k, v));
    }
    sign(case.signer, &args)
}

async fn check(gw: &Gateway, case: &Case<'_>) {
    let now = unix_now();
    let who = format!("{} (signer {})", case.source, case.signer);
    let genuine = signed(case, &case.current, now, case.body);
    assert_eq!(
        send(gw, case.source, &genuine).await,
        200,
        "{who}: genuine request"
    );
    if case.body_signed {
        let changed = genuine.with_body(&genuine.body.replacen('1', "2", 1));
        assert_ne!(changed.body, genuine.body);
        assert_eq!(
            send(gw, case.source, &changed).await,
            401,
            "{who}: changed body"
        );
    }
    let wrong = signed(case, &case.wrong, now, case.body);
    assert_eq!(
        send(gw, case.source, &wrong).await,
        401,
        "{who}: wrong secret"
    );
    let missing = genuine.without(case.header);
    assert_eq!(
        send(gw, case.source, &missing).await,
        401,
        "{who}: missing header"
    );
    if let Some(by) = case.stale_by {
        let stale = signed(case, &case.current, now - by, case.body);
        assert_eq!(
            send(gw, case.source, &stale).await,
            401,
            "{who}: stale timestamp"
        );
    }
    let rotated_body = case.body.replace("evt", "rot");
    let rotated = signed(case, &case.next, now, &rotated_body);
    assert_eq!(
        send(gw, case.source, &rotated).await,
        200,
        "{who}: rotated secret"
    );
}

fn case<'a>(
    source: &'a str,
    signer: &'a str,
    current: &str,
    next: &str,
    wrong: &str,
    header: &'a str,
    stale_by: Option<i64>,
) -> Case<'a> {
    Case {
        source,
        signer,
        args: Vec::new(),
        current: current.to_owned(),
        next: next.to_owned(),
        wrong: wrong.to_owned(),
        secret_flag: "secret",
        header,
        stale_by,
        body: r#"{"id":"evt_1001","type":"test.event","data":{"n":1}}"#,
        body_signed: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_accepts_what_the_provider_signs_and_refuses_the_rest() {
    let keygen = |_: u8| {
        let out = Command::new(&sdks().python)
            .arg(providers_dir().join("sign.py"))
            .arg("sendgrid-keygen")
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["private_key_pem"].as_str().unwrap().to_owned(),
            v["public_key"].as_str().unwrap().to_owned(),
        )
    };
    // SendGrid's own signed example (from its SDK's test suite): a real key and signature.
    let known_answer = {
        let out = Command::new(&sdks().python)
            .arg(providers_dir().join("sign.py"))
            .arg("sendgrid-known-answer")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let sendgrid_current = keygen(0);
    let sendgrid_next = keygen(1);
    let sendgrid_wrong = keygen(2);

    let mut manifests = String::new();
    for (name, template, current, next) in [
        ("stripe", "stripe", STRIPE_CURRENT, STRIPE_NEXT),
        ("shopify", "shopify", "shpss_current", "shpss_next"),
        ("github", "github", "gh-current", "gh-next"),
        ("slack", "slack", "slack-current", "slack-next"),
        (
            "twilio",
            "twilio",
            "twilio-token-current",
            "twilio-token-next",
        ),
        (
            "twilio-json",
            "twilio",
            "twilio-token-current",
            "twilio-token-next",
        ),
        ("intercom", "intercom", "ic-current", "ic-next"),
        ("linear", "linear", "lin_wh_current", "lin_wh_next"),
        ("clerk", "clerk", SW_CURRENT, SW_NEXT),
        ("svix", "svix", SW_CURRENT, SW_NEXT),
        ("resend", "resend", SW_CURRENT, SW_NEXT),
        ("paddle", "paddle", "pdl_ntfset_current", "pdl_ntfset_next"),
        ("typeform", "typeform", "tf-current", "tf-next"),
        (
            "sendgrid",
            "sendgrid",
            &sendgrid_current.1,
            &sendgrid_next.1,
        ),
    ] {
        manifests.push_str(&source(name, template, current, next, ""));
    }
    // Postmark: the user name beside each password, in the same Secret.
    manifests.push_str(
        r#"
---
apiVersion: v1
kind: Secret
metadata: {name: postmark-next, namespace: p}
stringData: {username: hooks, password: pm-next}
---
apiVersion: v1
kind: Secret
metadata: {name: postmark, namespace: p}
stringData: {username: hooks, password: pm-current}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {name: postmark, namespace: p}
spec:
  template: postmark
  verification:
    secretRef: {name: postmark, key: password}
    secretRefs: [{name: postmark-next, key: password}]
"#,
    );
    manifests.push_str(&source(
        "standard",
        "custom",
        SW_CURRENT,
        SW_NEXT,
        "    type: standard-webhooks\n",
    ));
    manifests.push_str(&source(
        "sendgrid-example",
        "sendgrid",
        known_answer["public_key"].as_str().unwrap(),
        &sendgrid_next.1,
        "",
    ));
    let gw = Gateway::start(&manifests).await;
    let example = Signed::from_json(&known_answer);
    assert_eq!(
        send(&gw, "sendgrid-example", &example).await,
        200,
        "SendGrid's own example"
    );
    let tampered = example.with_body(&example.body.replacen(
        "hello@world.com",
        "hello@world.org",
        1,
    ));
    assert_ne!(tampered.body, example.body);
    assert_eq!(send(&gw, "sendgrid-example", &tampered).await, 401);
    let ingest = |source: &str| format!("{}/v1/ingest/p/{source}", gw.base);

    let mut cases = vec![
        case(
            "stripe",
            "stripe",
            STRIPE_CURRENT,
            STRIPE_NEXT,
            "whsec_wrong",
            "stripe-signature",
            Some(360),
        ),
        case(
            "shopify",
            "shopify",
            "shpss_current",
            "shpss_next",
            "shpss_wrong",
            "x-shopify-hmac-sha256",
            None,
        ),
        case(
            "github",
            "github",
            "gh-current",
            "gh-next",
            "gh-wrong",
            "x-hub-signature-256",
            None,
        ),
        case(
            "slack",
            "slack",
            "slack-current",
            "slack-next",
            "slack-wrong",
            "x-slack-signature",
            Some(360),
        ),
        case(
            "intercom",
            "intercom",
            "ic-current",
            "ic-next",
            "ic-wrong",
            "x-hub-signature",
            None,
        ),
        case(
            "clerk",
            "svix",
            SW_CURRENT,
            SW_NEXT,
            SW_WRONG,
            "svix-signature",
            Some(360),
        ),
        case(
            "svix",
            "svix",
            SW_CURRENT,
            SW_NEXT,
            SW_WRONG,
            "svix-signature",
            Some(360),
        ),
        case(
            "resend",
            "svix",
            SW_CURRENT,
            SW_NEXT,
            SW_WRONG,
            "svix-signature",
            Some(360),
        ),
        case(
            "paddle",
            "paddle",
            "pdl_ntfset_current",
            "pdl_ntfset_next",
            "pdl_ntfset_wrong",
            "paddle-signature",
            Some(30),
        ),
        case(
            "typeform",
            "typeform",
            "tf-current",
            "tf-next",
            "tf-wrong",
            "typeform-signature",
            None,
        ),
    ];
    // A custom Source of type standard-webhooks reads the webhook-* headers the Standard
    // Webhooks libraries send.
    cases.push(case(
        "standard",
        "standardwebhooks",
        SW_CURRENT,
        SW_NEXT,
        SW_WRONG,
        "webhook-signature",
        Some(360),
    ));
    let mut linear = case(
        "linear",
        "linear",
        "lin_wh_current",
        "lin_wh_next",
        "lin_wh_wrong",
        "linear-signature",
        Some(120),
    );
    linear.body =
        r#"{"action":"create","type":"Issue","data":{"id":"evt_1"},"webhookTimestamp":{ts}}"#;
    cases.push(linear);
    let mut twilio = case(
        "twilio",
        "twilio-form",
        "twilio-token-current",
        "twilio-token-next",
        "twilio-token-wrong",
        "x-twilio-signature",
        None,
    );
    twilio.args.push(("url", ingest("twilio")));
    twilio.body = "CallSid=CA1001evt&From=%2B15551234567&To=%2B15557654321&Digits=1";
    cases.push(twilio);
    let mut twilio_json = case(
        "twilio-json",
        "twilio-json",
        "twilio-token-current",
        "twilio-token-next",
        "twilio-token-wrong",
        "x-twilio-signature",
        None,
    );
    twilio_json.args.push(("url", ingest("twilio-json")));
    cases.push(twilio_json);
    let mut sendgrid = case(
        "sendgrid",
        "sendgrid",
        &sendgrid_current.0,
        &sendgrid_next.0,
        &sendgrid_wrong.0,
        "x-twilio-email-event-webhook-signature",
        None,
    );
    sendgrid.secret_flag = "private-key-pem";
    sendgrid.body = r#"[{"email":"a@example.com","event":"delivered","sg_event_id":"evt_1001","timestamp":1700000000}]"#;
    cases.push(sendgrid);
    let mut postmark = case(
        "postmark",
        "postmark",
        "pm-current",
        "pm-next",
        "pm-wrong",
        "authorization",
        None,
    );
    postmark.secret_flag = "password";
    postmark.body_signed = false;
    postmark.args.push(("username", "hooks".to_owned()));
    cases.push(postmark);

    for c in &cases {
        check(&gw, c).await;
    }
    // Every template that signs was exercised.
    let covered: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.source).collect();
    for t in hookstream_crds::templates::SOURCE_PRESETS
        .iter()
        .filter(|p| p.verification.is_some())
    {
        assert!(
            covered.contains(t.id.as_str()),
            "template {} has no conformance case",
            t.id.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_standard_webhooks_signatures_verify_with_the_standardwebhooks_library() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: out, namespace: p}}
stringData: {{key: "{SW_CURRENT}", next: "{SW_NEXT}"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: in, namespace: p}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: out, namespace: p}}
spec:
  type: http
  http: {{url: "{}/hook"}}
  signing:
    scheme: standard-webhooks
    secretRef: {{name: out, key: key}}
    secretRefs: [{{name: out, key: next}}]
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: c, namespace: p}}
spec:
  source: in
  destination: out
  transform: {{jsonata: '{{"order": id, "via": "hookstream"}}'}}
"#,
        receiver.url
    ))
    .await;
    let r = gw.ingest("p", "in", r#"{"id":"ord_1"}"#, &[]).await;
    assert_eq!(r.status().as_u16(), 200);
    let got = receiver
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    let delivery = &got[0];
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| (h.to_string(), json!(delivery.header(h).unwrap_or_default())))
            .collect();
    let body = String::from_utf8(delivery.body.to_vec()).unwrap();
    let verify = |secret: &str, body: &str| {
        let input = json!({"secret": secret, "body": body, "headers": headers}).to_string();
        let mut child = Command::new(&sdks().python)
            .arg("-c")
            .arg(
                "import json, sys\nfrom standardwebhooks.webhooks import Webhook\nd = json.load(sys.stdin)\nWebhook(d['secret']).verify(d['body'], d['headers'])\nprint('verified')",
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified")
    };
    assert!(
        verify(SW_CURRENT, &body),
        "the library refuses the delivery: {headers:?}"
    );
    assert!(
        verify(SW_NEXT, &body),
        "receivers holding the rotated-in key verify too"
    );
    assert!(!verify(SW_WRONG, &body), "another key must not verify");
    assert!(
        !verify(SW_CURRENT, &body.replace("ord_1", "ord_2")),
        "a changed body must not verify"
    );
    assert_eq!(
        headers["webhook-id"].as_str().unwrap(),
        delivery.header("x-hookstream-event-id").unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_dedups_on_the_id_the_provider_sends() {
    let mut manifests = source("stripe", "stripe", STRIPE_CURRENT, STRIPE_NEXT, "");
    manifests.push_str(&source("github", "github", "gh-current", "gh-next", ""));
    let gw = Gateway::start(&manifests).await;
    let ingest = |signed: Signed, source: &'static str| {
        let gw = &gw;
        async move {
            let url = format!("{}/v1/ingest/p/{source}", gw.base);
            let mut req = reqwest::Client::new().post(url).body(signed.body.clone());
            for (k, v) in &signed.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // Stripe retries an event with a new signature timestamp; its id (evt_...) stays.
    let now = unix_now();
    let body = r#"{"id":"evt_dedup_1","type":"charge.succeeded"}"#;
    let first = sign(
        "stripe",
        &[
            ("secret", STRIPE_CURRENT),
            ("body", body),
            ("timestamp", &now.to_string()),
        ],
    );
    let retry = sign(
        "stripe",
        &[
            ("secret", STRIPE_CURRENT),
            ("body", body),
            ("timestamp", &(now - 30).to_string()),
        ],
    );
    let a = ingest(first, "stripe").await;
    let b = ingest(retry, "stripe").await;
    assert_eq!(b["duplicate"], true, "{b}");
    assert_eq!(a["event_id"], b["event_id"]);
    let other = sign(
        "stripe",
        &[
            ("secret", STRIPE_CURRENT),
            ("body", r#"{"id":"evt_dedup_2","type":"charge.succeeded"}"#),
        ],
    );
    assert!(ingest(other, "stripe").await.get("duplicate").is_none());

    // GitHub redelivers with the same X-GitHub-Delivery (the body need not be byte-equal).
    let delivery = sign(
        "github",
        &[("secret", "gh-current"), ("body", r#"{"zen":"a"}"#)],
    );
    let id = delivery
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-github-delivery"))
        .map(|(_, v)| v.clone())
        .unwrap();
    let mut again = sign(
        "github",
        &[("secret", "gh-current"), ("body", r#"{"zen": "a"}"#)],
    );
    for (k, v) in &mut again.headers {
        if k.eq_ignore_ascii_case("x-github-delivery") {
            *v = id.clone();
        }
    }
    assert_ne!(again.body, delivery.body);
    let a = ingest(delivery, "github").await;
    let b = ingest(again, "github").await;
    assert_eq!(b["duplicate"], true, "{b}");
    assert_eq!(a["event_id"], b["event_id"]);
}
