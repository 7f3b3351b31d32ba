//! Routing: the deliveries an event makes. A route (a Connection, or a Topic subscription)
//! takes an event when it is not paused and every one of its filters matches.

use std::sync::Arc;

use super::filter::{matches_all, EventView};
use crate::config::Route;
use crate::ids;
use crate::store::NewDelivery;

/// Whether a new event goes along `route`.
pub fn takes(route: &Route, event: &EventView<'_>) -> bool {
    !route.paused && matches_all(&route.filters, event)
}

/// The routes among `routes` that take `event`.
pub fn matching<'r>(routes: &'r [Arc<Route>], event: &EventView<'_>) -> Vec<&'r Arc<Route>> {
    routes.iter().filter(|r| takes(r, event)).collect()
}

/// A new delivery along `route`; `lease_until` hands it straight to a worker (claimed in the
/// same transaction that stores it), `None` queues it.
pub fn delivery(route: &Route, lease_until: Option<i64>) -> NewDelivery {
    NewDelivery {
        id: ids::delivery(),
        destination: route.destination.clone(),
        route_kind: route.kind,
        route: route.name.clone(),
        lease_until,
    }
}
