//! Connections: routes from a Source to a Destination of the same namespace. This module owns
//! a Connection's checks: both references resolve to valid objects, and its filters and
//! transform are well-formed.

use crate::config::ConnectionConfig;
use crate::v1alpha1::Connection;

use super::{check_filters, check_transform, Ctx, References};

pub(super) fn compile_connection(
    connection: &Connection,
    refs: &References<'_>,
    ctx: &mut Ctx<'_>,
) -> Option<ConnectionConfig> {
    let spec = &connection.spec;
    refs.check_source(ctx, "spec.source", &spec.source);
    refs.check_destination(ctx, "spec.destination", &spec.destination);
    check_filters(ctx, "spec.filters", &spec.filters);
    check_transform(ctx, "spec.transform.jsonata", spec.transform.as_ref());
    Some(ConnectionConfig {
        key: ctx.key.clone(),
        source: spec.source.clone(),
        destination: spec.destination.clone(),
        filters: spec.filters.clone(),
        transform: spec.transform.as_ref().map(|t| t.jsonata.clone()),
        paused: spec.paused == Some(true),
    })
}
