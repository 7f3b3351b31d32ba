//! `Source`: an ingest endpoint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// An ingest endpoint: webhooks sent to its URL are verified, filtered, stored as events and
/// routed by Connections.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "hookstream.io",
    version = "v1alpha1",
    kind = "Source",
    namespaced,
    status = "SourceStatus",
    shortname = "hsrc",
    category = "hookstream",
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".status.ingestUrl",
        description = "Ingest URL"
    ),
    printcolumn(
        name = "Verification",
        type_ = "string",
        json_path = ".spec.verification.type",
        priority = "1"
    ),
    printcolumn(
        name = "Events",
        type_ = "integer",
        json_path = ".status.eventsReceived",
        description = "Events received"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.verification) || has(self.verification.type) || has(self.template)",
    "message": "verification.type is required unless spec.template sets it (for example template: stripe)"
}]))]
pub struct SourceSpec {
    /// Provider preset: `stripe`, `shopify`, `github`, `slack`, `twilio`, `sendgrid`,
    /// `intercom`, `linear`, `clerk`, `svix`, `paddle`, `resend`, `postmark`, `typeform` or
    /// `custom`. It selects the provider's signature scheme, headers, encoding and replay
    /// window, and its dedup key; `verification.secretRef` names the key, and explicit
    /// `verification` and `dedup` fields override the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<SourceTemplate>,
    /// Signature verification. Requests whose signature is missing or wrong are refused with
    /// 401 and not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Drop repeated deliveries of the same webhook within a time window. A duplicate is
    /// answered 200 with `"duplicate": true` and not routed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<Dedup>,
    /// Allow and deny lists of client addresses. A blocked client gets 403.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_filter: Option<IpFilter>,
    /// JSON Schema validation of the request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaValidation>,
    /// Largest accepted request body in bytes; larger requests get 413. Defaults to the
    /// gateway's `--max-body-bytes` (25 MiB) and can only lower it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: Option<u64>,
    /// Most requests per second the Source accepts; beyond it senders get 429 with a
    /// `Retry-After` header, and nothing is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Store credential headers as received. By default the headers that carry a caller's
    /// credentials (`Authorization`, `Proxy-Authorization`, `Cookie`, `X-API-Key` and other
    /// API-key and token headers) are stored as `[redacted]`, after the signature check has
    /// seen them; filters, transforms and retries then see `[redacted]` too. Set this when a
    /// route needs them. The management API never shows them either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_credential_headers: Option<bool>,
}

/// A request rate limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second.
    #[schemars(range(min = 1))]
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate. Default: `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
}

/// How a Source checks the signature of incoming requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.secretRef) || (has(self.secretRefs) && size(self.secretRefs) > 0)",
    "message": "verification.secretRef is required: name the Secret and key that hold the signing secret, like {name: my-webhook, key: secret}"
}]))]
pub struct Verification {
    /// Signature scheme: `hmac-sha256` or `hmac-sha1` (an HMAC of the raw body, hex or
    /// base64, optionally prefixed like `sha256=`), `standard-webhooks` (the
    /// `webhook-id`/`webhook-timestamp`/`webhook-signature` scheme with `whsec_` secrets), or a
    /// provider's own scheme: `stripe`, `slack`, `twilio`, `sendgrid` (ECDSA; the Secret holds
    /// the public key), `linear`, `paddle`, `basic-auth` (the Secret key holds the password,
    /// the key `username` of the same Secret the user name). Optional with a `template`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<VerificationType>,
    /// The Secret key that holds the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// More Secret keys whose secrets are accepted too, for rotation without downtime: a
    /// request signed with any of them (or with `secretRef`) passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub secret_refs: Vec<SecretKeyRef>,
    /// Request header that carries the signature. Defaults: `X-Hookstream-Signature` for the
    /// HMAC types, `webhook-signature` for `standard-webhooks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Encoding of an HMAC signature: `hex` or `base64`. When unset both are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SignatureEncoding>,
    /// Prefix in front of an HMAC signature, such as `sha256=`. When unset, a `sha256=` or
    /// `sha1=` prefix is accepted and not required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Largest accepted age (or clock skew) of a signed timestamp, for schemes that sign one,
    /// such as `5m`. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<String>,
}

/// Signature schemes a Source can verify.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VerificationType {
    /// HMAC-SHA256 of the raw body.
    HmacSha256,
    /// HMAC-SHA1 of the raw body.
    HmacSha1,
    /// Standard Webhooks (standardwebhooks.com), also under Svix's `svix-*` header names.
    StandardWebhooks,
    /// Stripe: `Stripe-Signature: t=..,v1=..`, HMAC-SHA256 hex of `{t}.{body}`.
    Stripe,
    /// Slack: `X-Slack-Signature: v0=..` and `X-Slack-Request-Timestamp`, HMAC-SHA256 hex of
    /// `v0:{timestamp}:{body}`.
    Slack,
    /// Twilio: `X-Twilio-Signature`, HMAC-SHA1 base64 of the URL and the sorted form
    /// parameters (JSON bodies: the URL with its `bodySHA256` parameter).
    Twilio,
    /// SendGrid Event Webhook: ECDSA P-256/SHA-256 over `{timestamp}{body}`.
    Sendgrid,
    /// Linear: `linear-signature`, HMAC-SHA256 hex of the body, and the body's
    /// `webhookTimestamp` (ms) within the tolerance.
    Linear,
    /// Paddle: `Paddle-Signature: ts=..;h1=..`, HMAC-SHA256 hex of `{ts}:{body}`.
    Paddle,
    /// HTTP Basic authentication (Postmark).
    BasicAuth,
}

/// Provider templates of a Source.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceTemplate {
    /// Stripe.
    Stripe,
    /// Shopify.
    Shopify,
    /// GitHub.
    Github,
    /// Slack.
    Slack,
    /// Twilio.
    Twilio,
    /// SendGrid.
    Sendgrid,
    /// Intercom.
    Intercom,
    /// Linear.
    Linear,
    /// Clerk.
    Clerk,
    /// Svix.
    Svix,
    /// Paddle.
    Paddle,
    /// Resend.
    Resend,
    /// Postmark.
    Postmark,
    /// Typeform.
    Typeform,
    /// Any other sender.
    Custom,
}

impl SourceTemplate {
    /// The template as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceTemplate::Stripe => "stripe",
            SourceTemplate::Shopify => "shopify",
            SourceTemplate::Github => "github",
            SourceTemplate::Slack => "slack",
            SourceTemplate::Twilio => "twilio",
            SourceTemplate::Sendgrid => "sendgrid",
            SourceTemplate::Intercom => "intercom",
            SourceTemplate::Linear => "linear",
            SourceTemplate::Clerk => "clerk",
            SourceTemplate::Svix => "svix",
            SourceTemplate::Paddle => "paddle",
            SourceTemplate::Resend => "resend",
            SourceTemplate::Postmark => "postmark",
            SourceTemplate::Typeform => "typeform",
            SourceTemplate::Custom => "custom",
        }
    }
}

/// Text encodings of an HMAC signature.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lowercase or uppercase hexadecimal.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Deduplication of repeated webhooks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.strategy == 'payload-hash' || (has(self.field) && self.field != '')",
    "message": "dedup.field is required for the header-field and body-field strategies: name the header or the body path that identifies a webhook"
}]))]
pub struct Dedup {
    /// What makes two requests the same: `payload-hash` (SHA-256 of the raw body),
    /// `header-field` (the value of the header named by `field`), or `body-field` (the JSON
    /// body value at the dot path `field`).
    pub strategy: DedupStrategy,
    /// Header name (for `header-field`) or dot path into the JSON body (for `body-field`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// How long a key is remembered, in seconds. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub window_seconds: Option<u64>,
}

/// Deduplication strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DedupStrategy {
    /// SHA-256 of the raw body.
    PayloadHash,
    /// A request header.
    HeaderField,
    /// A field of the JSON body.
    BodyField,
}

/// Client address filtering. The client address is the socket peer, or the first
/// `X-Forwarded-For` entry when the peer is one of the gateway's trusted proxies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IpFilter {
    /// Addresses or CIDR ranges (IPv4 or IPv6) allowed to send. When not empty, every other
    /// address is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 64)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(a, isIP(a) || isCIDR(a))",
        "message": "ipFilter.allow entries must be IP addresses or CIDR ranges, like 10.0.0.0/8 or 2001:db8::/32"
    }]))]
    pub allow: Vec<String>,
    /// Addresses or CIDR ranges refused even when allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 64)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(a, isIP(a) || isCIDR(a))",
        "message": "ipFilter.deny entries must be IP addresses or CIDR ranges, like 203.0.113.7 or 192.0.2.0/24"
    }]))]
    pub deny: Vec<String>,
}

/// JSON Schema validation of request bodies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaValidation {
    /// `reject` answers 422 with the validation errors and stores nothing; `warn` stores and
    /// routes the event with its validation errors attached.
    pub action: SchemaAction,
    /// The JSON Schema (draft 2020-12 unless `$schema` says otherwise).
    #[schemars(schema_with = "crate::v1alpha1::common::any_object")]
    pub json_schema: serde_json::Value,
}

/// What happens to a body that fails schema validation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SchemaAction {
    /// Refuse with 422.
    Reject,
    /// Accept, store the errors with the event.
    Warn,
}

/// Observed state of a Source.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The generation of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The generation the gateway serves: this one when it is valid, the last valid one
    /// while an edit is broken (`Ready` then stays `True` with reason
    /// `LastValidGeneration`), absent when no version is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs` and `Ready`, with reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::v1alpha1::common::conditions")]
    pub conditions: Vec<Condition>,
    /// The URL senders post webhooks to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_url: Option<String>,
    /// Events accepted since the Source was created (written by the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_received: Option<u64>,
    /// When the last event was accepted (written by the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_received_at: Option<Time>,
}
