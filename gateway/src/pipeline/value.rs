//! Values a delivery computes from its payload (a Kafka key, an SQS message group, a routing
//! key, an EventBridge detail type): a plain field path is looked up directly; any other
//! JSONata expression runs in the transform sandbox, under its limits, with `$event`,
//! `$headers`, `$query` and `$method` bound as for transforms.

use hookstream_crds::config::PayloadValue;
use hookstream_transform::sandbox::{Sandbox, Stage};
use serde_json::Value;

use super::event::{parse_body, transform_input};
use super::transform::Payload;
use crate::store::NewEvent;

/// The text of `value` for this payload; `None` when it yields nothing (missing, null).
/// Strings are taken as they are, other JSON as its text.
pub async fn evaluate(
    value: &PayloadValue,
    payload: &Payload,
    event: &NewEvent,
    sandbox: &Sandbox,
) -> Result<Option<String>, String> {
    let input = parse_body(&payload.body);
    let found = match value {
        PayloadValue::Field(path) => path.iter().try_fold(&input, |v, name| v.get(name)).cloned(),
        PayloadValue::Jsonata(expression) => {
            let (_, bindings) = transform_input(event);
            let stage = Stage {
                expression: expression.clone(),
                bindings,
            };
            sandbox
                .evaluate(input, vec![stage])
                .await
                .map_err(|e| format!("cannot compute {expression:?}: {e}"))?
        }
    };
    Ok(match found {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: &str) -> NewEvent {
        NewEvent {
            id: "evt_1".into(),
            namespace: "shop".into(),
            source: "in".into(),
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: Vec::new(),
            body: bytes::Bytes::from(body.to_owned()),
            content_type: None,
            source_ip: "127.0.0.1".into(),
            received_at: 0,
            validation_errors: None,
        }
    }

    #[tokio::test]
    async fn fields_are_looked_up_without_the_sandbox() {
        // A sandbox whose worker program does not exist: a field must not need it.
        let sandbox = Sandbox::new(
            "/nonexistent/worker".into(),
            hookstream_transform::sandbox::SandboxLimits::default(),
        );
        let e = event(r#"{"customer":{"id":42,"name":"ada"},"none":null}"#);
        let payload = Payload {
            body: e.body.clone(),
            content_type: None,
        };
        let get = |path: &str| PayloadValue::parse(path);
        assert_eq!(
            evaluate(&get("customer.id"), &payload, &e, &sandbox).await,
            Ok(Some("42".into()))
        );
        assert_eq!(
            evaluate(&get("customer.name"), &payload, &e, &sandbox).await,
            Ok(Some("ada".into()))
        );
        assert_eq!(
            evaluate(&get("none"), &payload, &e, &sandbox).await,
            Ok(None)
        );
        assert_eq!(
            evaluate(&get("missing.x"), &payload, &e, &sandbox).await,
            Ok(None)
        );
    }
}
