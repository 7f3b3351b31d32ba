//! The JSON error body of every API and ingest error:
//! `{"error": "...", "status": N, "request_id": "req_..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::ids;

/// An error answered to a client. Messages are for people and never carry secrets; 5xx
/// messages stay generic and the cause goes to the log.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// Metric outcome label.
    outcome: &'static str,
    /// Extra fields of the body.
    extra: Vec<(&'static str, Value)>,
    /// Extra response headers.
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: String) -> ApiError {
        let outcome = match status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            s if s.is_server_error() => "unavailable",
            _ => "bad_request",
        };
        ApiError {
            status,
            message,
            outcome,
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: String) -> ApiError {
        self.headers.push((name, value));
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

    /// 500 with a generic message; log the cause before calling.
    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the gateway log".to_owned(),
        )
    }

    /// Sets the metric outcome label.
    pub fn with_outcome(mut self, outcome: &'static str) -> ApiError {
        self.outcome = outcome;
        self
    }

    /// Adds a field to the body.
    pub fn with_field(mut self, name: &'static str, value: Value) -> ApiError {
        self.extra.push((name, value));
        self
    }

    /// The metric outcome label.
    pub fn outcome(&self) -> &'static str {
        self.outcome
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "error": self.message,
            "status": self.status.as_u16(),
            "request_id": ids::request(),
        });
        for (k, v) in self.extra {
            body[k] = v;
        }
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "database error in API request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event store is unavailable; retry later".to_owned(),
        )
    }
}
