//! What every list of the API shares: the page size, the opaque cursor (the time and
//! sequence number of a page's last item), time filters and `namespace/name` filters.

use base64::Engine as _;
use hookstream_common::api::Pagination;

use super::error::ApiError;
use crate::clock::parse_rfc3339;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 100;

/// The page size asked for.
pub fn limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit must be a number from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

/// A time filter.
pub fn time(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| {
        parse_rfc3339(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an ISO 8601 time like 2026-03-01T14:30:00Z"
            ))
        })
    })
    .transpose()
}

fn encode_cursor((at, seq): (i64, i64)) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{at}:{seq}"))
}

/// The position a cursor stands for.
pub fn cursor(cursor: Option<&str>) -> Result<Option<(i64, i64)>, ApiError> {
    let Some(text) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (at, seq) = s.split_once(':')?;
            Some((at.parse().ok()?, seq.parse().ok()?))
        })
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "cursor is not valid; pass the cursor of a previous page unchanged",
            )
        })
}

/// A `namespace/name` or bare `name` filter as (namespace, name).
pub fn object_filter(value: Option<String>) -> (Option<String>, Option<String>) {
    match value {
        Some(s) => match s.split_once('/') {
            Some((ns, name)) => (Some(ns.to_owned()), Some(name.to_owned())),
            None => (None, Some(s)),
        },
        None => (None, None),
    }
}

/// One page of `rows` fetched with one extra row (which tells whether there are more): the
/// page's items, and the cursor of the next page (the position of this page's last item).
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The cursor of the next page.
    pub cursor: Option<String>,
    /// Whether more items follow.
    pub has_more: bool,
    /// How the list is paged.
    pub pagination: Pagination,
}

impl<T> Page<T> {
    /// Cuts `rows` to `limit` items.
    pub fn of(mut rows: Vec<T>, limit: u32, position: impl Fn(&T) -> (i64, i64)) -> Page<T> {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let cursor = if has_more {
            rows.last().map(|r| encode_cursor(position(r)))
        } else {
            None
        };
        Page {
            items: rows,
            pagination: Pagination {
                limit,
                has_more,
                next_cursor: cursor.clone(),
            },
            cursor,
            has_more,
        }
    }
}

/// `namespace/name`, as the API names objects.
pub fn object_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
