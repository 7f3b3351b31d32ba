//! Topics: publish endpoints that fan out to subscribed Destinations. This module owns a
//! Topic's checks: every subscription names a valid Destination of the same namespace and
//! has well-formed filters and transform.

use crate::config::{SubscriptionConfig, TopicConfig};
use crate::v1alpha1::Topic;

use super::{check_filters, check_transform, Ctx, References};

pub(super) fn compile_topic(
    topic: &Topic,
    refs: &References<'_>,
    ctx: &mut Ctx<'_>,
) -> TopicConfig {
    let mut subscriptions = Vec::new();
    for (i, sub) in topic.spec.subscriptions.iter().enumerate() {
        let base = format!("spec.subscriptions[{i}]");
        refs.check_destination(ctx, &format!("{base}.destination"), &sub.destination);
        check_filters(ctx, &format!("{base}.filters"), &sub.filters);
        check_transform(
            ctx,
            &format!("{base}.transform.jsonata"),
            sub.transform.as_ref(),
        );
        subscriptions.push(SubscriptionConfig {
            destination: sub.destination.clone(),
            filters: sub.filters.clone(),
            transform: sub.transform.as_ref().map(|t| t.jsonata.clone()),
        });
    }
    TopicConfig {
        key: ctx.key.clone(),
        subscriptions,
    }
}
