//! A delivery's payload: the event's body as received, or the JSON that the route's transform
//! and then the destination's payload transform (a template's, with `$credential`) make of it.
//! A transform that fails or yields nothing is an error in words, recorded as a failed
//! attempt by the caller; it never takes the gateway down.

use bytes::Bytes;
use hookstream_transform::sandbox::{Sandbox, SandboxError, Stage};
use serde_json::Value;

use super::event::transform_input;
use crate::config::Route;
use crate::metrics::Metrics;
use crate::store::SharedEvent;

/// Why no payload could be made.
#[derive(Clone, Debug)]
pub struct Failure {
    /// In words, for the attempt record.
    pub message: String,
    /// The same event fails the same way every time (an error in the expression's logic for
    /// this event, or nothing to send): retrying cannot help. A limit hit or a worker lost is
    /// not permanent.
    pub permanent: bool,
}

/// What a destination is sent.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The body.
    pub body: Bytes,
    /// Its content type: the original one, or JSON after a transform.
    pub content_type: Option<String>,
}

/// The payload of `event` along `route`: the route's transform and then the destination's
/// payload transform run in the sandbox's worker processes, under its memory and time
/// limits.
pub async fn payload(
    route: &Route,
    event: &SharedEvent,
    sandbox: &Sandbox,
    metrics: &Metrics,
) -> Result<Payload, Failure> {
    if route.transform.is_none() && route.payload.is_none() {
        return Ok(Payload {
            body: event.body.clone(),
            content_type: event.content_type.clone(),
        });
    }
    let (input, bindings) = transform_input(event);
    let mut stages = Vec::with_capacity(2);
    let mut names = Vec::with_capacity(2);
    if let Some(expression) = &route.transform {
        stages.push(Stage {
            expression: expression.source().to_owned(),
            bindings: bindings.clone(),
        });
        names.push("transform");
    }
    if let Some(expression) = &route.payload {
        let mut bindings = bindings;
        if let Some(c) = &route.credential {
            bindings.push(("credential".to_owned(), Value::String(c.clone())));
        }
        stages.push(Stage {
            expression: expression.source().to_owned(),
            bindings,
        });
        names.push("destination transform");
    }
    let label = format!("{}/{}", route.namespace, route.destination);
    let fail = |category: &str, message: String, permanent: bool| {
        metrics
            .transform_failures
            .with_label_values(&[&label, category])
            .inc();
        Failure { message, permanent }
    };
    match sandbox.evaluate(input, stages).await {
        Ok(Some(value)) => {
            let body = serde_json::to_vec(&value).map_err(|e| Failure {
                message: format!("transform result is not JSON: {e}"),
                permanent: true,
            })?;
            Ok(Payload {
                body: Bytes::from(body),
                content_type: Some("application/json".to_owned()),
            })
        }
        Ok(None) => Err(fail(
            "empty",
            "transform yielded nothing (JSONata undefined) for this event".to_owned(),
            true,
        )),
        Err(e @ SandboxError::Eval { stage, .. }) => {
            let stage = names.get(stage).copied().unwrap_or("transform");
            let permanent = !matches!(e.category(), "time_limit" | "memory_limit" | "depth");
            Err(fail(
                e.category(),
                format!("{stage} failed: {e}"),
                permanent,
            ))
        }
        Err(e) => Err(fail(e.category(), format!("transform failed: {e}"), false)),
    }
}
