//! Connection and subscription filters: whether an event satisfies a list of
//! [`Filter`] comparisons and so should be routed.
//!
//! A filter names a field of the event (a dot path into the JSON body, a header, a query
//! parameter, or the method, content type or source address), an operator and a value.
//! Headers and query parameters are strings, so comparisons against numbers parse the string
//! as a number: `headers.x-count eq 5` matches `X-Count: 5`. A missing field matches only
//! `exists: false` and `neq`.

use std::borrow::Cow;
use std::cmp::Ordering;

use hookstream_crds::v1alpha1::{Filter, FilterOp};
use http::HeaderMap;
use serde_json::{Number, Value};

/// What a filter can look at.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    /// The parsed JSON body, `None` when the body is not JSON.
    pub body: Option<&'a Value>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Decoded query parameters, in order.
    pub query: &'a [(String, String)],
    /// Request method.
    pub method: &'a str,
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The client address.
    pub source_ip: &'a str,
}

/// The value of a filter that was written without one.
static NULL: Value = Value::Null;

/// Whether `event` satisfies `filter`.
pub fn matches(filter: &Filter, event: &EventView<'_>) -> bool {
    let field = resolve(&filter.field, event);
    let field = field.as_deref();
    let value = filter.value.as_ref().unwrap_or(&NULL);
    match filter.op {
        FilterOp::Eq => field.is_some_and(|f| equals(f, value)),
        FilterOp::Neq => !field.is_some_and(|f| equals(f, value)),
        FilterOp::Contains => field.is_some_and(|f| contains(f, value)),
        FilterOp::Gt => compare(field, value).is_some_and(Ordering::is_gt),
        FilterOp::Gte => compare(field, value).is_some_and(Ordering::is_ge),
        FilterOp::Lt => compare(field, value).is_some_and(Ordering::is_lt),
        FilterOp::Lte => compare(field, value).is_some_and(Ordering::is_le),
        FilterOp::Exists => {
            let present = field.is_some_and(|f| !f.is_null());
            present == value.as_bool().unwrap_or(true)
        }
        FilterOp::In => field.is_some_and(|f| {
            value
                .as_array()
                .is_some_and(|list| list.iter().any(|v| equals(f, v)))
        }),
    }
}

/// Whether `event` satisfies every filter; an empty list matches everything.
pub fn matches_all(filters: &[Filter], event: &EventView<'_>) -> bool {
    filters.iter().all(|filter| matches(filter, event))
}

/// The value `field` names in `event`, or `None` when it is missing.
fn resolve<'a>(field: &str, event: &EventView<'a>) -> Option<Cow<'a, Value>> {
    let text = |s: &str| Cow::Owned(Value::String(s.to_owned()));
    let (root, rest) = match field.split_once('.') {
        Some((root, rest)) => (root, Some(rest)),
        None => (field, None),
    };
    match (root, rest) {
        ("body" | "payload", None) => event.body.map(Cow::Borrowed),
        ("body" | "payload", Some(path)) => lookup(event.body?, path).map(Cow::Borrowed),
        ("headers", Some(name)) => {
            let value = event.headers.get(name)?;
            std::str::from_utf8(value.as_bytes()).ok().map(text)
        }
        ("query", Some(name)) => event
            .query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| text(value)),
        ("method", None) => Some(text(event.method)),
        ("content_type", None) => event.content_type.map(text),
        ("source_ip", None) => Some(text(event.source_ip)),
        _ => None,
    }
}

/// The value at dot path `path` inside `value` (`data.items.0.sku`), or `None` when a segment
/// is missing. A numeric segment indexes an array; on an object it is an ordinary key.
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .try_fold(value, |current, segment| match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// JSON equality, with numbers compared by value and a string field compared to a number
/// value as the number it spells.
fn equals(field: &Value, value: &Value) -> bool {
    match (field, value) {
        (Value::Number(_) | Value::String(_), Value::Number(b)) => {
            as_number(field).is_some_and(|a| compare_numbers(&a, b) == Some(Ordering::Equal))
        }
        _ => field == value,
    }
}

/// Substring of a string field, or member of an array field.
fn contains(field: &Value, value: &Value) -> bool {
    match (field, value) {
        (Value::String(haystack), Value::String(needle)) => haystack.contains(needle.as_str()),
        (Value::Array(items), _) => items.iter().any(|item| equals(item, value)),
        _ => false,
    }
}

/// How a numeric field compares with a numeric value.
fn compare(field: Option<&Value>, value: &Value) -> Option<Ordering> {
    compare_numbers(&as_number(field?)?, &as_number(value)?)
}

/// A number, or a string holding one.
fn as_number(value: &Value) -> Option<Number> {
    match value {
        Value::Number(n) => Some(n.clone()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Orders two numbers, exactly when both are integers.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;
    use FilterOp::{Contains, Eq, Exists, Gt, Gte, In, Lt, Lte, Neq};

    fn body() -> Value {
        json!({
            "type": "order.created",
            "amount": 1500,
            "ratio": 0.25,
            "price": "19.99",
            "paid": true,
            "note": null,
            "tags": ["vip", "eu", 7],
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
            "data": {"object": {"status": "succeeded", "id": "ch_1", "0": "zero"}},
            "big": 9007199254740993_u64,
            "empty": ""
        })
    }

    fn headers() -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("x-count", HeaderValue::from_static("5"));
        map.insert("x-github-event", HeaderValue::from_static("push"));
        map.append("x-multi", HeaderValue::from_static("first"));
        map.append("x-multi", HeaderValue::from_static("second"));
        map
    }

    fn query() -> Vec<(String, String)> {
        [
            ("topic", "orders"),
            ("page", "3"),
            ("topic", "ignored"),
            ("flag", ""),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    fn filter(field: &str, op: FilterOp, value: Option<Value>) -> Filter {
        Filter {
            field: field.to_owned(),
            op,
            value,
        }
    }

    /// Runs `cases` of (field, op, value, expected) against the standard event.
    fn run(cases: &[(&str, FilterOp, Option<Value>, bool)]) {
        let body = body();
        let headers = headers();
        let query = query();
        let event = EventView {
            body: Some(&body),
            headers: &headers,
            query: &query,
            method: "POST",
            content_type: Some("application/json; charset=utf-8"),
            source_ip: "203.0.113.9",
        };
        for (field, op, value, expected) in cases {
            let f = filter(field, *op, value.clone());
            assert_eq!(
                matches(&f, &event),
                *expected,
                "{field} {} {value:?}",
                op.as_str()
            );
        }
    }

    #[test]
    fn eq() {
        run(&[
            ("body.type", Eq, Some(json!("order.created")), true),
            ("payload.type", Eq, Some(json!("order.created")), true),
            ("body.type", Eq, Some(json!("order.updated")), false),
            ("body.amount", Eq, Some(json!(1500)), true),
            ("body.amount", Eq, Some(json!(1500.0)), true),
            ("body.amount", Eq, Some(json!("1500")), false),
            ("body.ratio", Eq, Some(json!(0.25)), true),
            ("body.price", Eq, Some(json!(19.99)), true),
            ("body.paid", Eq, Some(json!(true)), true),
            ("body.paid", Eq, Some(json!("true")), false),
            ("body.note", Eq, Some(json!(null)), true),
            ("body.note", Eq, None, true),
            ("body.missing", Eq, Some(json!(null)), false),
            (
                "body.data.object.status",
                Eq,
                Some(json!("succeeded")),
                true,
            ),
            ("body.data.object.0", Eq, Some(json!("zero")), true),
            ("body.items.0.sku", Eq, Some(json!("A-1")), true),
            ("body.items.1.qty", Eq, Some(json!(1)), true),
            ("body.items.2.sku", Eq, Some(json!("A-1")), false),
            ("body.items.x.sku", Eq, Some(json!("A-1")), false),
            ("body.tags", Eq, Some(json!(["vip", "eu", 7])), true),
            ("body.big", Eq, Some(json!(9007199254740993_u64)), true),
            ("body.big", Eq, Some(json!(9007199254740992_u64)), false),
            ("body.empty", Eq, Some(json!("")), true),
            ("headers.X-Count", Eq, Some(json!(5)), true),
            ("headers.x-count", Eq, Some(json!("5")), true),
            ("headers.X-GitHub-Event", Eq, Some(json!("push")), true),
            ("headers.x-multi", Eq, Some(json!("first")), true),
            ("headers.x-missing", Eq, Some(json!("")), false),
            ("query.topic", Eq, Some(json!("orders")), true),
            ("query.page", Eq, Some(json!(3)), true),
            ("query.page", Eq, Some(json!(3.0)), true),
            ("query.Topic", Eq, Some(json!("orders")), false),
            ("query.flag", Eq, Some(json!("")), true),
            ("method", Eq, Some(json!("POST")), true),
            ("method", Eq, Some(json!("GET")), false),
            (
                "content_type",
                Eq,
                Some(json!("application/json; charset=utf-8")),
                true,
            ),
            ("source_ip", Eq, Some(json!("203.0.113.9")), true),
            ("unknown", Eq, Some(json!("POST")), false),
            ("method.x", Eq, Some(json!("POST")), false),
        ]);
    }

    #[test]
    fn neq() {
        run(&[
            ("body.type", Neq, Some(json!("order.updated")), true),
            ("body.type", Neq, Some(json!("order.created")), false),
            ("body.amount", Neq, Some(json!(1500.0)), false),
            ("body.amount", Neq, Some(json!(1501)), true),
            ("body.missing", Neq, Some(json!("x")), true),
            ("body.note", Neq, Some(json!("x")), true),
            ("body.note", Neq, Some(json!(null)), false),
            ("headers.X-COUNT", Neq, Some(json!(5)), false),
            ("headers.x-missing", Neq, Some(json!(5)), true),
            ("query.page", Neq, Some(json!("4")), true),
            ("query.missing", Neq, Some(json!("4")), true),
            ("method", Neq, Some(json!("GET")), true),
            ("content_type", Neq, Some(json!("text/plain")), true),
            ("source_ip", Neq, Some(json!("203.0.113.9")), false),
        ]);
    }

    #[test]
    fn contains_op() {
        run(&[
            ("body.type", Contains, Some(json!("order.")), true),
            ("body.type", Contains, Some(json!("refund")), false),
            ("body.type", Contains, Some(json!("")), true),
            ("body.tags", Contains, Some(json!("vip")), true),
            ("body.tags", Contains, Some(json!(7)), true),
            ("body.tags", Contains, Some(json!("us")), false),
            ("body.amount", Contains, Some(json!("15")), false),
            ("body.missing", Contains, Some(json!("x")), false),
            ("body.note", Contains, Some(json!("x")), false),
            ("headers.x-github-event", Contains, Some(json!("us")), true),
            ("query.topic", Contains, Some(json!("order")), true),
            ("method", Contains, Some(json!("OS")), true),
            (
                "content_type",
                Contains,
                Some(json!("application/json")),
                true,
            ),
            ("content_type", Contains, Some(json!("xml")), false),
            ("source_ip", Contains, Some(json!("203.0.113.")), true),
        ]);
    }

    #[test]
    fn ordered_comparisons() {
        run(&[
            ("body.amount", Gt, Some(json!(1000)), true),
            ("body.amount", Gt, Some(json!(1500)), false),
            ("body.amount", Gte, Some(json!(1500)), true),
            ("body.amount", Gte, Some(json!(1500.5)), false),
            ("body.amount", Lt, Some(json!(1500.5)), true),
            ("body.amount", Lt, Some(json!(1500)), false),
            ("body.amount", Lte, Some(json!(1500)), true),
            ("body.amount", Lte, Some(json!(-1)), false),
            ("body.ratio", Lt, Some(json!(1)), true),
            ("body.price", Gt, Some(json!(19.5)), true),
            ("body.price", Lte, Some(json!(20)), true),
            ("body.big", Gt, Some(json!(9007199254740992_u64)), true),
            ("body.type", Gt, Some(json!(0)), false),
            ("body.type", Lt, Some(json!(0)), false),
            ("body.paid", Gt, Some(json!(0)), false),
            ("body.note", Gte, Some(json!(0)), false),
            ("body.missing", Lt, Some(json!(0)), false),
            ("body.missing", Gte, Some(json!(0)), false),
            ("body.amount", Gt, Some(json!("abc")), false),
            ("body.amount", Gt, None, false),
            ("body.items.0.qty", Gte, Some(json!(2)), true),
            ("headers.x-count", Gt, Some(json!(4)), true),
            ("headers.X-Count", Lte, Some(json!(4)), false),
            ("headers.x-github-event", Gt, Some(json!(0)), false),
            ("query.page", Gte, Some(json!(3)), true),
            ("query.page", Lt, Some(json!(3)), false),
            ("query.flag", Lt, Some(json!(1)), false),
            ("method", Gt, Some(json!(0)), false),
            ("content_type", Lt, Some(json!(0)), false),
            ("source_ip", Gte, Some(json!(0)), false),
        ]);
    }

    #[test]
    fn exists() {
        run(&[
            ("body.type", Exists, None, true),
            ("body.type", Exists, Some(json!(true)), true),
            ("body.type", Exists, Some(json!(false)), false),
            ("body.missing", Exists, None, false),
            ("body.missing", Exists, Some(json!(false)), true),
            ("body.note", Exists, Some(json!(true)), false),
            ("body.note", Exists, Some(json!(false)), true),
            ("body.empty", Exists, None, true),
            ("body.items.1", Exists, None, true),
            ("body.items.5", Exists, Some(json!(false)), true),
            ("body.type.deeper", Exists, Some(json!(false)), true),
            ("body", Exists, None, true),
            ("payload", Exists, None, true),
            ("headers.x-count", Exists, None, true),
            ("headers.X-Missing", Exists, Some(json!(false)), true),
            ("query.flag", Exists, None, true),
            ("query.missing", Exists, None, false),
            ("method", Exists, None, true),
            ("content_type", Exists, None, true),
            ("source_ip", Exists, Some(json!(false)), false),
        ]);
    }

    #[test]
    fn in_op() {
        run(&[
            (
                "body.type",
                In,
                Some(json!(["order.created", "order.updated"])),
                true,
            ),
            ("body.type", In, Some(json!(["order.deleted"])), false),
            ("body.type", In, Some(json!([])), false),
            ("body.type", In, Some(json!("order.created")), false),
            ("body.amount", In, Some(json!([1, 1500.0])), true),
            ("body.note", In, Some(json!([null])), true),
            ("body.missing", In, Some(json!([null, "x"])), false),
            ("headers.X-Count", In, Some(json!([4, 5])), true),
            ("query.topic", In, Some(json!(["orders", "refunds"])), true),
            ("method", In, Some(json!(["PUT", "POST"])), true),
            ("method", In, Some(json!(["post"])), false),
            ("content_type", In, Some(json!(["text/plain"])), false),
            ("source_ip", In, Some(json!(["203.0.113.9", "::1"])), true),
        ]);
    }

    #[test]
    fn whole_body_and_missing_body() {
        run(&[
            ("body", Eq, Some(body()), true),
            ("payload", Neq, Some(json!({})), true),
        ]);
        let headers = HeaderMap::new();
        let event = EventView {
            body: None,
            headers: &headers,
            query: &[],
            method: "GET",
            content_type: None,
            source_ip: "::1",
        };
        for (field, op, value, expected) in [
            ("body", Exists, None, false),
            ("body", Exists, Some(json!(false)), true),
            ("body.type", Eq, Some(json!("x")), false),
            ("body.type", Neq, Some(json!("x")), true),
            ("content_type", Exists, Some(json!(false)), true),
            ("content_type", Eq, Some(json!("text/plain")), false),
            ("query.any", Neq, Some(json!("x")), true),
            ("method", Eq, Some(json!("GET")), true),
        ] {
            let f = filter(field, op, value.clone());
            assert_eq!(
                matches(&f, &event),
                expected,
                "{field} {} {value:?}",
                op.as_str()
            );
        }
    }

    #[test]
    fn scalar_body_with_path_is_missing() {
        let body = json!("just a string");
        let headers = HeaderMap::new();
        let event = EventView {
            body: Some(&body),
            headers: &headers,
            query: &[],
            method: "POST",
            content_type: Some("application/json"),
            source_ip: "127.0.0.1",
        };
        assert!(matches(
            &filter("body", Contains, Some(json!("string"))),
            &event
        ));
        assert!(!matches(&filter("body.x", Exists, None), &event));
        assert!(matches(&filter("body.0", Neq, Some(json!("j"))), &event));
    }

    #[test]
    fn lookup_follows_dot_paths() {
        let body = body();
        assert_eq!(lookup(&body, "items.1.sku"), Some(&json!("B-2")));
        assert_eq!(lookup(&body, "data.object.0"), Some(&json!("zero")));
        assert_eq!(lookup(&body, "note"), Some(&Value::Null));
        for path in [
            "items.2",
            "items.-1",
            "type.x",
            "missing",
            "",
            "data..object",
        ] {
            assert_eq!(lookup(&body, path), None, "{path:?}");
        }
    }

    #[test]
    fn matches_all_is_a_conjunction() {
        let body = body();
        let headers = headers();
        let event = EventView {
            body: Some(&body),
            headers: &headers,
            query: &[],
            method: "POST",
            content_type: None,
            source_ip: "10.0.0.1",
        };
        assert!(matches_all(&[], &event));
        let yes = filter("body.type", Eq, Some(json!("order.created")));
        let also = filter("body.amount", Gte, Some(json!(1000)));
        let no = filter("method", Eq, Some(json!("GET")));
        assert!(matches_all(&[yes.clone(), also.clone()], &event));
        assert!(!matches_all(&[yes, no, also], &event));
    }

    #[test]
    fn filters_deserialize_from_manifests() {
        let f: Filter =
            serde_json::from_value(json!({"field": "headers.X-Count", "op": "gte", "value": 5}))
                .expect("valid filter");
        let headers = headers();
        let event = EventView {
            body: None,
            headers: &headers,
            query: &[],
            method: "POST",
            content_type: None,
            source_ip: "10.0.0.1",
        };
        assert!(matches(&f, &event));
    }
}
