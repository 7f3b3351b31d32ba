//! The pipeline: an event as data and the routing of an event to its deliveries.
//!
//! [`event`] turns a stored request into what filters and transforms look at (method,
//! headers, query, the body as JSON, the envelope); [`filter`] decides whether a route takes
//! an event; [`route`] turns the routes an event matches into deliveries; [`transform`] makes
//! a delivery's payload with the route's and the destination's JSONata; [`value`] computes a
//! value of it (a key, a group) for the queue and stream types. Ingest, delivery, the
//! retry endpoints and replay all go through here, so an event routes the same way whoever
//! asks.

pub mod event;
pub mod filter;
pub mod route;
pub mod transform;
pub mod value;
