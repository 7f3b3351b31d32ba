//! AlertRules: validated only, not compiled into the gateway config (the gateway does not
//! evaluate them yet). This module owns their checks: durations, the Source and Destination
//! they watch, and their webhook channels. Duplicate names are not reported for this kind.

use crate::v1alpha1::AlertRule;

use super::{Ctx, Reason, References};

pub(super) fn check_alert_rule(rule: &AlertRule, refs: &References<'_>, ctx: &mut Ctx<'_>) {
    let spec = &rule.spec;
    if let Some(window) = &spec.window {
        ctx.duration_ms("spec.window", window);
    }
    if let Some(cooldown) = &spec.cooldown {
        ctx.duration_ms("spec.cooldown", cooldown);
    }
    if let Some(source) = &spec.source {
        refs.check_source(ctx, "spec.source", source);
    }
    if let Some(destination) = &spec.destination {
        refs.check_destination(ctx, "spec.destination", destination);
    }
    for (i, channel) in spec.channels.iter().enumerate() {
        let Some(webhook) = &channel.webhook else {
            ctx.error(
                &format!("spec.channels[{i}]"),
                Reason::InvalidSpec,
                "must set webhook".to_owned(),
            );
            continue;
        };
        if url::Url::parse(&webhook.url).is_err() {
            ctx.error(
                &format!("spec.channels[{i}].webhook.url"),
                Reason::InvalidSpec,
                format!("{:?} is not a valid URL", webhook.url),
            );
        }
        if let Some(reference) = &webhook.secret_ref {
            ctx.secret(&format!("spec.channels[{i}].webhook.secretRef"), reference);
        }
    }
}
