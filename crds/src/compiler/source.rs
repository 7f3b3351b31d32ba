//! Sources: the ingest endpoints. This module owns a Source's checks and defaults:
//! signature verification (its own fields over its template's preset, and the key material
//! each scheme needs), deduplication, the IP filter, the JSON Schema, the body size limit
//! and the rate limit.

use crate::config::{
    DedupConfig, IpFilterConfig, RateLimitConfig, SchemaConfig, SecretValue, SourceConfig,
    VerificationConfig,
};
use crate::templates::{self, SourcePreset, VerificationPreset};
use crate::v1alpha1::{
    Dedup, DedupStrategy, RateLimit, SchemaValidation, SecretKeyRef, Source, Verification,
    VerificationType,
};

use super::{parse_networks, standard_webhooks_key, Ctx, Reason};

const DEFAULT_DEDUP_WINDOW_SECONDS: u64 = 300;

pub(super) fn compile_source(source: &Source, ctx: &mut Ctx<'_>) -> Option<SourceConfig> {
    let spec = &source.spec;
    let preset = spec.template.map(templates::source_preset);
    let verification = compile_verification(ctx, spec.verification.as_ref(), preset);

    let preset_dedup = preset
        .and_then(|p| p.dedup)
        .map(|(strategy, field)| DedupConfig {
            strategy,
            field: field.map(str::to_owned),
            window_seconds: DEFAULT_DEDUP_WINDOW_SECONDS,
        });
    let dedup = spec.dedup.as_ref().map(|d| compile_dedup(ctx, d));
    let dedup = dedup.or(preset_dedup);

    let ip_filter = spec.ip_filter.as_ref().map(|f| IpFilterConfig {
        allow: parse_networks(ctx, "spec.ipFilter.allow", &f.allow),
        deny: parse_networks(ctx, "spec.ipFilter.deny", &f.deny),
    });
    let schema = spec.schema.as_ref().map(|s| compile_schema(ctx, s));
    if spec.max_body_bytes == Some(0) {
        ctx.error(
            "spec.maxBodyBytes",
            Reason::InvalidSpec,
            "must be at least 1".to_owned(),
        );
    }
    let rate_limit = spec
        .rate_limit
        .as_ref()
        .and_then(|r| compile_rate_limit(ctx, r));

    Some(SourceConfig {
        key: ctx.key.clone(),
        verification,
        dedup,
        ip_filter,
        schema,
        max_body_bytes: spec.max_body_bytes,
        rate_limit,
        keep_credential_headers: spec.keep_credential_headers.unwrap_or(false),
    })
}

/// The verification of a Source: its own fields over its template's preset.
fn compile_verification(
    ctx: &mut Ctx<'_>,
    given: Option<&Verification>,
    preset: Option<&SourcePreset>,
) -> Option<VerificationConfig> {
    let from_template = preset.and_then(|p| p.verification);
    let v = match (given, from_template, preset) {
        (Some(v), ..) => v,
        (None, Some(_), Some(p)) => {
            let message = format!(
                "is required: template {} verifies signatures; name the Secret key that holds the {} signing secret",
                p.id.as_str(),
                p.name
            );
            ctx.error("spec.verification.secretRef", Reason::InvalidSpec, message);
            return None;
        }
        (None, ..) => return None,
    };
    let Some(scheme) = v.type_.or(from_template.map(|p| p.scheme)) else {
        let message = "is required unless spec.template sets it".to_owned();
        ctx.error("spec.verification.type", Reason::InvalidSpec, message);
        return None;
    };
    // The template's header, encoding and window belong to its scheme only.
    let base = from_template.filter(|p| p.scheme == scheme);
    let secrets = verification_secrets(ctx, scheme, v);
    let header = verification_header(ctx, v, scheme, base);
    let tolerance_seconds = match &v.tolerance {
        Some(text) => (ctx.duration_ms("spec.verification.tolerance", text)? / 1000).max(1),
        None => base
            .and_then(|b| b.tolerance_seconds)
            .unwrap_or_else(|| templates::default_tolerance_seconds(scheme)),
    };
    Some(VerificationConfig {
        scheme,
        secrets,
        header,
        encoding: v.encoding.or(base.and_then(|b| b.encoding)),
        prefix: v
            .prefix
            .clone()
            .or(base.and_then(|b| b.prefix.map(str::to_owned))),
        tolerance_seconds,
    })
}

/// The signature header: the Source's own (lowercased), or else its template's (for the same
/// scheme), or else the scheme's default.
fn verification_header(
    ctx: &mut Ctx<'_>,
    v: &Verification,
    scheme: VerificationType,
    base: Option<VerificationPreset>,
) -> String {
    match &v.header {
        Some(h) => {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                ctx.error(
                    "spec.verification.header",
                    Reason::InvalidSpec,
                    format!("{h:?} is not a valid header name"),
                );
            }
            h.to_ascii_lowercase()
        }
        None => base.map_or_else(
            || templates::default_header(scheme).to_owned(),
            |b| b.header.to_owned(),
        ),
    }
}

/// The key material of every secretRef of a verification (`secretRef`, then `secretRefs`);
/// at least one is required.
fn verification_secrets(
    ctx: &mut Ctx<'_>,
    scheme: VerificationType,
    v: &Verification,
) -> Vec<SecretValue> {
    let refs: Vec<(String, &SecretKeyRef)> = v
        .secret_ref
        .iter()
        .map(|r| ("spec.verification.secretRef".to_owned(), r))
        .chain(
            v.secret_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("spec.verification.secretRefs[{i}]"), r)),
        )
        .collect();
    if refs.is_empty() {
        let message = "is required: the verification needs the signing secret".to_owned();
        ctx.error("spec.verification.secretRef", Reason::InvalidSpec, message);
    }
    let mut secrets = Vec::new();
    for (field, reference) in refs {
        if let Some(secret) = verification_secret(ctx, scheme, &field, reference) {
            secrets.push(secret);
        }
    }
    secrets
}

/// The key material of one secretRef, in the form the scheme uses.
fn verification_secret(
    ctx: &mut Ctx<'_>,
    scheme: VerificationType,
    field: &str,
    reference: &SecretKeyRef,
) -> Option<SecretValue> {
    let raw = ctx.secret(field, reference)?;
    let what = |ctx: &Ctx<'_>, kind: &str| {
        format!(
            "Secret {}/{} key {:?} is not {kind}",
            ctx.key.namespace, reference.name, reference.key
        )
    };
    match scheme {
        VerificationType::StandardWebhooks => match standard_webhooks_key(&raw) {
            Some(key) => Some(SecretValue(key)),
            None => {
                let message = what(
                    ctx,
                    "a Standard Webhooks secret (whsec_ followed by base64)",
                );
                ctx.error(field, Reason::InvalidSpec, message);
                None
            }
        },
        VerificationType::Sendgrid => match crate::keys::ecdsa_p256_public_key(&raw) {
            Some(der) => Some(SecretValue(der)),
            None => {
                let message = what(
                    ctx,
                    "an ECDSA P-256 public key (base64 DER, as SendGrid shows it, or PEM)",
                );
                ctx.error(field, Reason::InvalidSpec, message);
                None
            }
        },
        VerificationType::BasicAuth => {
            // The referenced key holds the password; `username` of the same Secret the user.
            let user_ref = SecretKeyRef {
                name: reference.name.clone(),
                key: "username".to_owned(),
            };
            let user = ctx.secret(field, &user_ref)?;
            if user.contains(&b':') {
                let message = what(ctx, "usable: a Basic auth user name cannot contain ':'")
                    .replace(&format!("key {:?}", reference.key), "key \"username\"");
                ctx.error(field, Reason::InvalidSpec, message);
                return None;
            }
            let mut credentials = user;
            credentials.push(b':');
            credentials.extend_from_slice(&raw);
            Some(SecretValue(credentials))
        }
        _ => Some(SecretValue(raw)),
    }
}

/// A Source's own dedup settings; the field is normalized for its strategy.
fn compile_dedup(ctx: &mut Ctx<'_>, d: &Dedup) -> DedupConfig {
    let needs_field = matches!(
        d.strategy,
        DedupStrategy::HeaderField | DedupStrategy::BodyField
    );
    let field = match (&d.field, needs_field) {
        (Some(f), true) if !f.trim().is_empty() => {
            Some(if d.strategy == DedupStrategy::HeaderField {
                f.to_ascii_lowercase()
            } else {
                f.strip_prefix("body.")
                    .or_else(|| f.strip_prefix("payload."))
                    .unwrap_or(f)
                    .to_owned()
            })
        }
        (_, true) => {
            let what = if d.strategy == DedupStrategy::HeaderField {
                "a header name"
            } else {
                "a body path like data.id"
            };
            ctx.error(
                "spec.dedup.field",
                Reason::InvalidSpec,
                format!("is required for this strategy: give {what}"),
            );
            None
        }
        (_, false) => None,
    };
    DedupConfig {
        strategy: d.strategy,
        field,
        window_seconds: d.window_seconds.unwrap_or(DEFAULT_DEDUP_WINDOW_SECONDS),
    }
}

fn compile_schema(ctx: &mut Ctx<'_>, s: &SchemaValidation) -> SchemaConfig {
    if let Err(e) = jsonschema::validator_for(&s.json_schema) {
        ctx.error(
            "spec.schema.jsonSchema",
            Reason::InvalidSchema,
            format!("is not a valid JSON Schema: {e}"),
        );
    }
    SchemaConfig {
        action: s.action,
        json_schema: s.json_schema.clone(),
    }
}

fn compile_rate_limit(ctx: &mut Ctx<'_>, r: &RateLimit) -> Option<RateLimitConfig> {
    if r.requests_per_second == 0 {
        let message = "must be at least 1".to_owned();
        ctx.error(
            "spec.rateLimit.requestsPerSecond",
            Reason::InvalidSpec,
            message,
        );
        return None;
    }
    if r.burst == Some(0) {
        ctx.error(
            "spec.rateLimit.burst",
            Reason::InvalidSpec,
            "must be at least 1".to_owned(),
        );
        return None;
    }
    Some(RateLimitConfig {
        per_second: r.requests_per_second,
        burst: r.burst.unwrap_or(r.requests_per_second),
    })
}
