//! Dedup keys: the payload's hash, a header, or a body field, remembered for the Source's
//! window. The store claims the key in the same transaction as the event, so two copies that
//! arrive at once are stored once.

use hookstream_crds::config::DedupConfig;
use hookstream_crds::v1alpha1::DedupStrategy;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::pipeline::filter::lookup;
use crate::store::DedupClaim;

/// The dedup key of a request, when the strategy finds one.
pub fn key(
    d: &DedupConfig,
    headers: &HeaderMap,
    body: &[u8],
    parsed: Option<&Value>,
    now: i64,
) -> Option<DedupClaim> {
    let key = match d.strategy {
        DedupStrategy::PayloadHash => hex::encode(Sha256::digest(body)),
        DedupStrategy::HeaderField => headers.get(d.field.as_deref()?)?.to_str().ok()?.to_owned(),
        DedupStrategy::BodyField => match lookup(parsed?, d.field.as_deref()?)? {
            Value::String(s) => s.clone(),
            Value::Null => return None,
            other => other.to_string(),
        },
    };
    let window = i64::try_from(d.window_seconds)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    Some(DedupClaim {
        key,
        expires_at: now.saturating_add(window),
    })
}
