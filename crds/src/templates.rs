//! Provider templates for Sources: what `spec.template` presets. Each provider's real signing
//! scheme (header, encoding, what is signed, replay window), the dedup key it sends, and where
//! its documentation is. Explicit `verification` and `dedup` fields override a template.

use crate::v1alpha1::{
    DedupStrategy, DestinationTemplate, SignatureEncoding, SourceTemplate, VerificationType,
};

/// What a template sets on a Source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePreset {
    /// The template as written in manifests.
    pub id: SourceTemplate,
    /// Display name.
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// The provider's documentation of its webhook signatures.
    pub docs_url: Option<&'static str>,
    /// Signature scheme, if the template verifies signatures.
    pub verification: Option<VerificationPreset>,
    /// Default dedup key: strategy and header name or body path.
    pub dedup: Option<(DedupStrategy, Option<&'static str>)>,
}

/// The verification part of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerificationPreset {
    /// Scheme.
    pub scheme: VerificationType,
    /// Header carrying the signature (lowercase).
    pub header: &'static str,
    /// Signature encoding, for the HMAC schemes.
    pub encoding: Option<SignatureEncoding>,
    /// Required signature prefix, for the HMAC schemes.
    pub prefix: Option<&'static str>,
    /// Replay window in seconds, for schemes that sign a timestamp.
    pub tolerance_seconds: Option<u64>,
}

const fn hmac(
    scheme: VerificationType,
    header: &'static str,
    encoding: SignatureEncoding,
    prefix: Option<&'static str>,
) -> Option<VerificationPreset> {
    Some(VerificationPreset {
        scheme,
        header,
        encoding: Some(encoding),
        prefix,
        tolerance_seconds: None,
    })
}

const fn timed(
    scheme: VerificationType,
    header: &'static str,
    tolerance_seconds: Option<u64>,
) -> Option<VerificationPreset> {
    Some(VerificationPreset {
        scheme,
        header,
        encoding: None,
        prefix: None,
        tolerance_seconds,
    })
}

const STANDARD_WEBHOOKS: Option<VerificationPreset> = timed(
    VerificationType::StandardWebhooks,
    "svix-signature",
    Some(300),
);

/// Every Source template, in the order the reference lists them.
pub const SOURCE_PRESETS: [SourcePreset; 15] = [
    SourcePreset {
        id: SourceTemplate::Stripe,
        name: "Stripe",
        description: "Stripe events, verified with the Stripe-Signature header (HMAC-SHA256 of the timestamp and body, 5-minute replay window).",
        docs_url: Some("https://docs.stripe.com/webhooks#verify-events"),
        verification: timed(VerificationType::Stripe, "stripe-signature", Some(300)),
        dedup: Some((DedupStrategy::BodyField, Some("id"))),
    },
    SourcePreset {
        id: SourceTemplate::Shopify,
        name: "Shopify",
        description: "Shopify webhooks, verified with X-Shopify-Hmac-Sha256 (HMAC-SHA256 of the body, base64).",
        docs_url: Some("https://shopify.dev/docs/apps/build/webhooks/subscribe/https"),
        verification: hmac(
            VerificationType::HmacSha256,
            "x-shopify-hmac-sha256",
            SignatureEncoding::Base64,
            None,
        ),
        dedup: Some((DedupStrategy::HeaderField, Some("x-shopify-webhook-id"))),
    },
    SourcePreset {
        id: SourceTemplate::Github,
        name: "GitHub",
        description: "GitHub webhooks, verified with X-Hub-Signature-256 (sha256= and the hex HMAC-SHA256 of the body).",
        docs_url: Some(
            "https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries",
        ),
        verification: hmac(
            VerificationType::HmacSha256,
            "x-hub-signature-256",
            SignatureEncoding::Hex,
            Some("sha256="),
        ),
        dedup: Some((DedupStrategy::HeaderField, Some("x-github-delivery"))),
    },
    SourcePreset {
        id: SourceTemplate::Slack,
        name: "Slack",
        description: "Slack requests, verified with X-Slack-Signature (v0= HMAC-SHA256 of v0:timestamp:body, 5-minute replay window).",
        docs_url: Some("https://api.slack.com/authentication/verifying-requests-from-slack"),
        verification: timed(VerificationType::Slack, "x-slack-signature", Some(300)),
        dedup: Some((DedupStrategy::BodyField, Some("event_id"))),
    },
    SourcePreset {
        id: SourceTemplate::Twilio,
        name: "Twilio",
        description: "Twilio webhooks, verified with X-Twilio-Signature (HMAC-SHA1 of the URL and the sorted form parameters, or of the URL with bodySHA256 for JSON).",
        docs_url: Some("https://www.twilio.com/docs/usage/webhooks/webhooks-security"),
        verification: timed(VerificationType::Twilio, "x-twilio-signature", None),
        dedup: Some((DedupStrategy::HeaderField, Some("i-twilio-idempotency-token"))),
    },
    SourcePreset {
        id: SourceTemplate::Sendgrid,
        name: "SendGrid",
        description: "SendGrid Event Webhook, verified with its ECDSA P-256 signature; the Secret holds the verification public key (base64 DER).",
        docs_url: Some("https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features"),
        verification: timed(
            VerificationType::Sendgrid,
            "x-twilio-email-event-webhook-signature",
            None,
        ),
        dedup: Some((DedupStrategy::PayloadHash, None)),
    },
    SourcePreset {
        id: SourceTemplate::Intercom,
        name: "Intercom",
        description: "Intercom webhooks, verified with X-Hub-Signature (sha1= and the hex HMAC-SHA1 of the body with the client secret).",
        docs_url: Some("https://developers.intercom.com/docs/webhooks/webhook-notifications"),
        verification: hmac(
            VerificationType::HmacSha1,
            "x-hub-signature",
            SignatureEncoding::Hex,
            Some("sha1="),
        ),
        dedup: Some((DedupStrategy::BodyField, Some("id"))),
    },
    SourcePreset {
        id: SourceTemplate::Linear,
        name: "Linear",
        description: "Linear webhooks, verified with linear-signature (hex HMAC-SHA256 of the body) and a webhookTimestamp within 60 seconds.",
        docs_url: Some("https://linear.app/developers/webhooks#securing-webhooks"),
        verification: timed(VerificationType::Linear, "linear-signature", Some(60)),
        dedup: Some((DedupStrategy::HeaderField, Some("linear-delivery"))),
    },
    SourcePreset {
        id: SourceTemplate::Clerk,
        name: "Clerk",
        description: "Clerk webhooks (sent through Svix), verified the Standard Webhooks way.",
        docs_url: Some("https://clerk.com/docs/webhooks/sync-data"),
        verification: STANDARD_WEBHOOKS,
        dedup: Some((DedupStrategy::HeaderField, Some("svix-id"))),
    },
    SourcePreset {
        id: SourceTemplate::Svix,
        name: "Svix",
        description: "Webhooks sent through Svix, verified the Standard Webhooks way (svix-id, svix-timestamp, svix-signature).",
        docs_url: Some("https://docs.svix.com/receiving/verifying-payloads/how-manual"),
        verification: STANDARD_WEBHOOKS,
        dedup: Some((DedupStrategy::HeaderField, Some("svix-id"))),
    },
    SourcePreset {
        id: SourceTemplate::Paddle,
        name: "Paddle",
        description: "Paddle Billing webhooks, verified with Paddle-Signature (ts and h1, HMAC-SHA256 of ts:body, 5-second replay window by default).",
        docs_url: Some("https://developer.paddle.com/webhooks/signature-verification"),
        verification: timed(VerificationType::Paddle, "paddle-signature", Some(5)),
        dedup: Some((DedupStrategy::BodyField, Some("event_id"))),
    },
    SourcePreset {
        id: SourceTemplate::Resend,
        name: "Resend",
        description: "Resend webhooks (sent through Svix), verified the Standard Webhooks way.",
        docs_url: Some("https://resend.com/docs/dashboard/webhooks/verify-webhooks-requests"),
        verification: STANDARD_WEBHOOKS,
        dedup: Some((DedupStrategy::HeaderField, Some("svix-id"))),
    },
    SourcePreset {
        id: SourceTemplate::Postmark,
        name: "Postmark",
        description: "Postmark webhooks, which carry no signature: Basic auth credentials from a Secret (keys username and password), best with an IP allow list.",
        docs_url: Some("https://postmarkapp.com/developer/webhooks/webhooks-overview"),
        verification: timed(VerificationType::BasicAuth, "authorization", None),
        dedup: Some((DedupStrategy::PayloadHash, None)),
    },
    SourcePreset {
        id: SourceTemplate::Typeform,
        name: "Typeform",
        description: "Typeform webhooks, verified with Typeform-Signature (sha256= and the base64 HMAC-SHA256 of the body).",
        docs_url: Some("https://www.typeform.com/developers/webhooks/secure-your-webhooks/"),
        verification: hmac(
            VerificationType::HmacSha256,
            "typeform-signature",
            SignatureEncoding::Base64,
            Some("sha256="),
        ),
        dedup: Some((DedupStrategy::BodyField, Some("event_id"))),
    },
    SourcePreset {
        id: SourceTemplate::Custom,
        name: "Custom",
        description: "Any sender: verification and dedup exactly as the Source's own fields say.",
        docs_url: None,
        verification: None,
        dedup: None,
    },
];

/// The header a scheme reads when neither the Source nor its template names one.
pub fn default_header(scheme: VerificationType) -> &'static str {
    match scheme {
        VerificationType::HmacSha256 | VerificationType::HmacSha1 => "x-hookstream-signature",
        VerificationType::StandardWebhooks => "webhook-signature",
        VerificationType::Stripe => "stripe-signature",
        VerificationType::Slack => "x-slack-signature",
        VerificationType::Twilio => "x-twilio-signature",
        VerificationType::Sendgrid => "x-twilio-email-event-webhook-signature",
        VerificationType::Linear => "linear-signature",
        VerificationType::Paddle => "paddle-signature",
        VerificationType::BasicAuth => "authorization",
    }
}

/// The replay window of a scheme that signs a timestamp, when neither the Source nor its
/// template sets one: the provider's own (5 minutes for most, 60 s for Linear, 5 s for
/// Paddle).
pub fn default_tolerance_seconds(scheme: VerificationType) -> u64 {
    match scheme {
        VerificationType::Linear => 60,
        VerificationType::Paddle => 5,
        _ => 300,
    }
}

/// The preset of a template.
pub fn source_preset(id: SourceTemplate) -> &'static SourcePreset {
    SOURCE_PRESETS
        .iter()
        .find(|p| p.id == id)
        .expect("every template has a preset")
}

/// How a Destination template uses the credential its `credentialsRef` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The service needs none (the URL is the secret).
    None,
    /// Sent in this header.
    Header(&'static str),
    /// Bound as `$credential` in the payload transform (a key that goes in the body).
    Binding,
}

/// What a template sets on a Destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestinationPreset {
    /// The template as written in manifests.
    pub id: DestinationTemplate,
    /// Display name.
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// The service's documentation of what it accepts.
    pub docs_url: &'static str,
    /// URL used when `spec.http` is not set (services with one public intake URL).
    pub default_url: Option<&'static str>,
    /// Where the credential goes.
    pub credential: Credential,
    /// The payload transform (JSONata) when the Destination sets none; `None` sends the
    /// routed payload as it is.
    pub transform: Option<&'static str>,
}

/// Every Destination template, in the order the reference lists them.
pub const DESTINATION_PRESETS: [DestinationPreset; 6] = [
    DestinationPreset {
        id: DestinationTemplate::Slack,
        name: "Slack",
        description: "Post each event to a Slack channel through an Incoming Webhook URL.",
        docs_url: "https://api.slack.com/messaging/webhooks",
        default_url: None,
        credential: Credential::None,
        transform: Some(
            r#"{"text": $substring(($exists(type) and $type(type) = "string" ? "[" & type & "] " : "") & $string($), 0, 40000)}"#,
        ),
    },
    DestinationPreset {
        id: DestinationTemplate::Discord,
        name: "Discord",
        description: "Post each event to a Discord channel webhook (content up to 2,000 characters).",
        docs_url: "https://discord.com/developers/docs/resources/webhook#execute-webhook",
        default_url: None,
        credential: Credential::None,
        transform: Some(
            r#"{"content": $substring(($exists(type) and $type(type) = "string" ? "[" & type & "] " : "") & $string($), 0, 2000)}"#,
        ),
    },
    DestinationPreset {
        id: DestinationTemplate::Pagerduty,
        name: "PagerDuty",
        description: "Trigger a PagerDuty incident per event through the Events API v2; credentialsRef holds the integration's routing key.",
        docs_url: "https://developer.pagerduty.com/docs/events-api-v2/trigger-events/",
        default_url: Some("https://events.pagerduty.com/v2/enqueue"),
        credential: Credential::Binding,
        transform: Some(
            r#"{"routing_key": $credential, "event_action": "trigger", "dedup_key": $event.id, "payload": {"summary": $substring(($exists(type) and $type(type) = "string" ? type : "hookstream event") & " from " & $event.namespace & "/" & $event.source, 0, 1024), "source": $event.namespace & "/" & $event.source, "severity": "error", "custom_details": $}}"#,
        ),
    },
    DestinationPreset {
        id: DestinationTemplate::Datadog,
        name: "Datadog",
        description: "Send each event to Datadog's HTTP log intake; credentialsRef holds the API key (DD-API-KEY).",
        docs_url: "https://docs.datadoghq.com/api/latest/logs/#send-logs",
        default_url: Some("https://http-intake.logs.datadoghq.com/api/v2/logs"),
        credential: Credential::Header("DD-API-KEY"),
        transform: Some(
            r#"[{"ddsource": "hookstream", "service": $event.source, "hostname": $event.namespace, "message": $string($), "hookstream": {"event_id": $event.id}}]"#,
        ),
    },
    DestinationPreset {
        id: DestinationTemplate::Zapier,
        name: "Zapier",
        description: "Trigger a Zap through its Catch Hook URL with the event payload.",
        docs_url: "https://help.zapier.com/hc/en-us/articles/8496288690317",
        default_url: None,
        credential: Credential::None,
        transform: None,
    },
    DestinationPreset {
        id: DestinationTemplate::Linear,
        name: "Linear",
        description: "Send each event to a Linear endpoint with the API key in the Authorization header.",
        docs_url: "https://linear.app/developers",
        default_url: None,
        credential: Credential::Header("Authorization"),
        transform: None,
    },
];

/// The preset of a Destination template.
pub fn destination_preset(id: DestinationTemplate) -> &'static DestinationPreset {
    DESTINATION_PRESETS
        .iter()
        .find(|p| p.id == id)
        .expect("every template has a preset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_exactly_one_preset() {
        for p in &SOURCE_PRESETS {
            assert_eq!(source_preset(p.id), p);
            assert_eq!(
                SOURCE_PRESETS.iter().filter(|q| q.id == p.id).count(),
                1,
                "{}",
                p.name
            );
        }
    }
}
