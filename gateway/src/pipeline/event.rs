//! An event as data: the request a Source received, seen as filters and transforms see it
//! (the body as JSON, headers and query as objects, the envelope bound as `$event`).

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::filter::EventView;
use crate::clock::rfc3339;
use crate::store::NewEvent;

/// The header that counts how many gateways an event has passed through: each delivery
/// carries the hop count of its event plus one, and ingest refuses a request over the limit
/// (`--max-hops`), so a Connection pointing back at a gateway cannot loop.
pub const HOPS_HEADER: &str = "X-Hookstream-Hops";

/// The hop count a request carries: its `X-Hookstream-Hops` header, 0 when absent or not a
/// number (a request that did not come from a gateway).
pub fn request_hops(headers: &HeaderMap) -> u32 {
    headers
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The hop count of a stored event: the `X-Hookstream-Hops` header it was received with.
pub fn event_hops(event: &NewEvent) -> u32 {
    event
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(HOPS_HEADER))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A stored event's request rebuilt for filters: what [`EventView`] borrows from.
pub struct EventData {
    method: String,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    body: Option<Value>,
    content_type: Option<String>,
    source_ip: String,
}

impl EventData {
    /// Rebuilds the request of a stored event. Header pairs that are no longer valid HTTP
    /// are left out (they could not have been received).
    pub fn of(event: &NewEvent) -> EventData {
        let mut headers = HeaderMap::new();
        for (k, v) in &event.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                headers.append(k, v);
            }
        }
        EventData {
            method: event.method.clone(),
            headers,
            query: query_pairs(&event.query),
            body: serde_json::from_slice(&event.body).ok(),
            content_type: event.content_type.clone(),
            source_ip: event.source_ip.clone(),
        }
    }

    /// What filters look at.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            body: self.body.as_ref(),
            headers: &self.headers,
            query: &self.query,
            method: &self.method,
            content_type: self.content_type.as_deref(),
            source_ip: &self.source_ip,
        }
    }
}

/// A query string's decoded name and value pairs, in order.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Headers as a JSON object; repeated headers are joined with `, `.
pub fn headers_object(headers: &[(String, String)]) -> Value {
    let mut map = Map::new();
    for (k, v) in headers {
        match map.get_mut(k) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(v);
            }
            _ => {
                map.insert(k.clone(), Value::String(v.clone()));
            }
        }
    }
    Value::Object(map)
}

/// A query string as a JSON object; repeated names become lists.
pub fn query_object(query: &str) -> Value {
    let mut map = Map::new();
    for (k, v) in query_pairs(query) {
        match map.get_mut(&k) {
            Some(Value::Array(list)) => list.push(Value::String(v)),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, Value::String(v)]);
            }
            None => {
                map.insert(k, Value::String(v));
            }
        }
    }
    Value::Object(map)
}

/// The body as JSON when it parses, else as a string.
pub fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// The transform's input (the parsed body, or the body as a string when it is not JSON) and
/// its bindings: `$headers`, `$query`, `$method` and `$event` (the whole envelope).
pub fn transform_input(event: &NewEvent) -> (Value, Vec<(String, Value)>) {
    let body = parse_body(&event.body);
    let headers = headers_object(&event.headers);
    let query = query_object(&event.query);
    let envelope = json!({
        "id": event.id,
        "namespace": event.namespace,
        "source": event.source,
        "method": event.method,
        "path": event.path,
        "query": query,
        "headers": headers,
        "body": body,
        "content_type": event.content_type,
        "source_ip": event.source_ip,
        "received_at": rfc3339(event.received_at),
    });
    let bindings = vec![
        ("headers".to_owned(), headers),
        ("query".to_owned(), query),
        ("method".to_owned(), Value::String(event.method.clone())),
        ("event".to_owned(), envelope),
    ];
    (body, bindings)
}
