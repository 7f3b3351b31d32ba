//! JSON Schema checks of a Source: a body that fails is refused (422) in `reject` mode, and
//! stored with its errors in `warn` mode. The error list is bounded, since a hostile body can
//! fail a schema millions of times and each message may echo the failing value.

use hookstream_crds::v1alpha1::SchemaAction;
use serde_json::{json, Value};

use super::Rejection;
use crate::config::RuntimeSource;

/// Most schema errors reported for one request.
const MAX_VALIDATION_ERRORS: usize = 50;
/// Longest schema error message kept, in bytes.
const MAX_VALIDATION_MESSAGE: usize = 300;

/// The body as JSON, when it is JSON.
pub fn parse_json(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if matches!(first, b'{' | b'[' | b'"')
        || first.is_ascii_digit()
        || matches!(first, b'-' | b't' | b'f' | b'n')
    {
        serde_json::from_slice(body).ok()
    } else {
        None
    }
}

/// `Err` in reject mode, the errors as JSON in warn mode, `None` when the body passes or the
/// Source has no schema.
pub fn validate(source: &RuntimeSource, body: Option<&Value>) -> Result<Option<Value>, Rejection> {
    let (Some(validator), Some(schema)) = (&source.schema, &source.config.schema) else {
        return Ok(None);
    };
    let errors: Vec<Value> = match body {
        None => vec![json!({ "path": "", "message": "body is not JSON" })],
        Some(v) => validator
            .iter_errors(v)
            .take(MAX_VALIDATION_ERRORS)
            .map(|e| json!({ "path": e.instance_path.to_string(), "message": shorten(e.to_string()) }))
            .collect(),
    };
    if errors.is_empty() {
        return Ok(None);
    }
    match schema.action {
        SchemaAction::Reject => Err(Rejection::Invalid {
            source: source.config.key.clone(),
            errors: Value::Array(errors),
        }),
        SchemaAction::Warn => Ok(Some(Value::Array(errors))),
    }
}

fn shorten(mut message: String) -> String {
    if message.len() > MAX_VALIDATION_MESSAGE {
        let cut = (0..=MAX_VALIDATION_MESSAGE)
            .rev()
            .find(|i| message.is_char_boundary(*i))
            .unwrap_or(0);
        message.truncate(cut);
        message.push('…');
    }
    message
}
