//! The JSON error body of every API and ingest error:
//! `{"error": "...", "status": N, "request_id": "req_..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookstream_common::api::ErrorBody;
use serde_json::Value;

use crate::ids;
use crate::ingest::Rejection;
use crate::store::{error_chain, StoreError};

/// An error answered to a client. Messages are for people and never carry secrets; 5xx
/// messages stay generic and the cause goes to the log.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// What few errors carry beside the message (boxed: errors travel in every `Result`).
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    /// Schema errors of a rejected ingest.
    validation_errors: Option<Value>,
    /// Response headers.
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: String) -> ApiError {
        ApiError {
            status,
            message,
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        self.extra().headers.push((name, value));
        self
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message.into())
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let extra = self.extra.map(|e| *e).unwrap_or_default();
        let body = ErrorBody {
            error: self.message,
            status: self.status.as_u16(),
            request_id: ids::request(),
            validation_errors: extra.validation_errors,
        };
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in extra.headers {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let mut e = ApiError::new(r.status(), r.message());
        match r {
            Rejection::RateLimited {
                per_second,
                retry_in_seconds,
                ..
            } => {
                e = e
                    .with_header("retry-after", retry_in_seconds.max(1).to_string())
                    .with_header("x-ratelimit-limit", per_second.to_string());
            }
            Rejection::Throttled {
                retry_in_seconds, ..
            } => {
                e = e.with_header("retry-after", retry_in_seconds.max(1).to_string());
            }
            Rejection::Invalid { errors, .. } => e.extra().validation_errors = Some(errors),
            _ => {}
        }
        e
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %error_chain(&e), "database error in API request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event store is unavailable; retry later".to_owned(),
        )
    }
}
