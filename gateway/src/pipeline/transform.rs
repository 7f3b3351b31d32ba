//! A delivery's payload: the event's body as received, or the JSON that the route's transform
//! and then the destination's payload transform (a template's, with `$credential`) make of it.
//! A transform that fails or yields nothing is an error in words, recorded as a failed
//! attempt by the caller; it never takes the gateway down.

use bytes::Bytes;
use hookstream_transform::Limits;
use serde_json::Value;

use super::event::transform_input;
use crate::config::Route;
use crate::metrics::Metrics;
use crate::store::SharedEvent;

/// What a destination is sent.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The body.
    pub body: Bytes,
    /// Its content type: the original one, or JSON after a transform.
    pub content_type: Option<String>,
}

/// The payload of `event` along `route`, evaluated off the async workers.
pub async fn payload(
    route: &Route,
    event: &SharedEvent,
    limits: Limits,
    metrics: &Metrics,
) -> Result<Payload, String> {
    if route.transform.is_none() && route.payload.is_none() {
        return Ok(Payload {
            body: event.body.clone(),
            content_type: event.content_type.clone(),
        });
    }
    let (transform, payload) = (route.transform.clone(), route.payload.clone());
    let credential = route.credential.clone();
    let event = event.clone();
    let label = format!("{}/{}", route.namespace, route.destination);
    // Evaluation is CPU work bounded by the limits; it runs off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let (input, mut bindings) = transform_input(&event);
        let routed = match transform {
            Some(expression) => {
                let refs: Vec<(&str, &Value)> = bindings.iter().map(|(k, v)| (*k, v)).collect();
                match expression.evaluate(&input, &refs, &limits) {
                    Ok(Some(value)) => value,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(("transform", e)),
                }
            }
            None => input,
        };
        let Some(expression) = payload else {
            return Ok(Some(routed));
        };
        if let Some(c) = credential {
            bindings.push(("credential", Value::String(c)));
        }
        let refs: Vec<(&str, &Value)> = bindings.iter().map(|(k, v)| (*k, v)).collect();
        expression
            .evaluate(&routed, &refs, &limits)
            .map_err(|e| ("destination transform", e))
    })
    .await
    .map_err(|e| format!("transform failed: {e}"))?;
    match result {
        Ok(Some(value)) => {
            let body = serde_json::to_vec(&value)
                .map_err(|e| format!("transform result is not JSON: {e}"))?;
            Ok(Payload {
                body: Bytes::from(body),
                content_type: Some("application/json".to_owned()),
            })
        }
        Ok(None) => {
            metrics
                .transform_failures
                .with_label_values(&[&label, "empty"])
                .inc();
            Err("transform yielded nothing (JSONata undefined) for this event".to_owned())
        }
        Err((stage, e)) => {
            metrics
                .transform_failures
                .with_label_values(&[&label, e.category()])
                .inc();
            Err(format!("{stage} failed: {e}"))
        }
    }
}
