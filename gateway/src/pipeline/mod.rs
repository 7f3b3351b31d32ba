//! Routing decisions: which routes an event matches.

pub mod filter;
