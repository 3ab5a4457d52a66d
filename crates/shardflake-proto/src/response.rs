//! [`ApiError`]: the one error response of every shardflake HTTP service (feature `axum`).
//!
//! The status comes from the code ([`ErrorCode::http_status`]), the body is [`ErrorBody`],
//! and the code rides along in the response's extensions so that a service's middleware can
//! count errors by code without parsing bodies.

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{retry_after_secs, ErrorBody, ErrorCode};

/// The `Retry-After` a retryable 503 gets when the error names no better wait.
pub const RETRY_AFTER_MS_DEFAULT: u64 = 1_000;

/// An error answer: a stable code, a message, and for 503s a retry hint.
///
/// ```
/// use axum::response::IntoResponse;
/// use shardflake_proto::{ApiError, ErrorCode};
/// let r = ApiError::new(ErrorCode::StaleToken, "token 3 is not current").into_response();
/// assert_eq!(r.status(), 409);
/// assert_eq!(r.extensions().get::<ErrorCode>(), Some(&ErrorCode::StaleToken));
/// let r = ApiError::new(ErrorCode::ClockBehind, "behind").retry_after_ms(Some(2_500)).into_response();
/// assert_eq!(r.headers()["retry-after"], "3");
/// let r = ApiError::new(ErrorCode::LayoutExpired, "over").into_response();
/// assert!(r.headers().get("retry-after").is_none());
/// let r = ApiError::new(ErrorCode::RateLimited, "slow down").retry_after_ms(Some(200)).into_response();
/// assert_eq!((r.status().as_u16(), &r.headers()["retry-after"]), (429, &"1".parse::<axum::http::HeaderValue>().unwrap()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
    /// For retryable errors (503s, 429): how long to wait before retrying, if known.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// Sets the retry hint.
    pub fn retry_after_ms(mut self, ms: Option<u64>) -> Self {
        self.retry_after_ms = ms;
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&ErrorBody::new(self.code, self.message))
            .expect("error body serializes");
        let mut r = Response::new(axum::body::Body::from(body));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.code.is_retryable() {
            let ms = self.retry_after_ms.unwrap_or(RETRY_AFTER_MS_DEFAULT);
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(ms)));
        }
        r.extensions_mut().insert(self.code);
        r
    }
}

/// The `{name}` path segment of the namespace routes, checked against the name rule
/// ([`crate::ns::validate_name`]); every refusal, axum's own path rejections included, is an
/// [`ApiError`] (`400 bad_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NamePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(name)) => match crate::ns::validate_name(&name) {
                Ok(()) => Ok(NamePath(name)),
                Err(e) => Err(ApiError::new(ErrorCode::BadRequest, e)),
            },
            Err(r) => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("namespace name: {}", r.body_text()),
            )),
        }
    }
}
