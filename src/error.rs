use serde_json::Value;

/// Every error code Gatehouse answers with on `/v1`, with its HTTP status.
/// A code never changes once shipped; `tests::the_code_table_is_stable` pins them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 400: the request is malformed.
    InvalidRequest,
    /// 401: no valid credential.
    Unauthorized,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: no such object (or not visible to the caller).
    NotFound,
    /// 409: the change conflicts with existing state.
    Conflict,
    /// 413: the body exceeds the limit.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 422: well-formed but invalid values.
    ValidationFailed,
    /// 429: a rate limit refused the request.
    RateLimited,
    /// 500: a bug or an unexpected failure; details are only in the log.
    InternalError,
    /// 503: a dependency is unavailable or overloaded; retry later.
    ServiceUnavailable,
    /// 502: the model server failed.
    UpstreamError,
    /// 504: the model server did not answer in time.
    UpstreamTimeout,
}

impl Code {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        self.row().1
    }

    /// The generic message used when none is given.
    pub fn default_message(self) -> &'static str {
        self.row().2
    }

    fn row(self) -> (&'static str, u16, &'static str) {
        match self {
            Code::InvalidRequest => ("invalid_request", 400, "The request is invalid."),
            Code::Unauthorized => ("unauthorized", 401, "Authentication required."),
            Code::Forbidden => ("forbidden", 403, "You are not allowed to do this."),
            Code::NotFound => ("not_found", 404, "Not found."),
            Code::Conflict => (
                "conflict",
                409,
                "The request conflicts with the current state.",
            ),
            Code::PayloadTooLarge => ("payload_too_large", 413, "The request body is too large."),
            Code::UnsupportedMediaType => (
                "unsupported_media_type",
                415,
                "The request body must be JSON (Content-Type: application/json).",
            ),
            Code::ValidationFailed => ("validation_failed", 422, "Some fields are invalid."),
            Code::RateLimited => ("rate_limited", 429, "Rate limit exceeded."),
            Code::InternalError => (
                "internal_error",
                500,
                "Internal error. Quote the request id when reporting it.",
            ),
            Code::UpstreamError => ("upstream_error", 502, "The model server failed."),
            Code::UpstreamTimeout => (
                "upstream_timeout",
                504,
                "The model server did not answer in time.",
            ),
            Code::ServiceUnavailable => (
                "service_unavailable",
                503,
                "The service is temporarily unavailable.",
            ),
        }
    }
}

/// An error answered in the `/v1` envelope.
#[derive(Debug)]
pub struct ApiError {
    /// The code (and so the status).
    pub code: Code,
    /// A message for the developer reading the response.
    pub message: String,
    /// Structured details (`reason`, `required`, `fields`…).
    pub details: Option<Value>,
    /// Seconds for `Retry-After`, when it applies.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the code's default message.
    pub fn new(code: Code) -> Self {
        Self {
            code,
            message: code.default_message().to_string(),
            details: None,
            retry_after: None,
        }
    }
    /// An error with a specific message.
    pub fn msg(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    /// Adds details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    /// 401 with `details.reason`.
    pub fn unauthorized(reason: &'static str, message: &str) -> Self {
        Self::msg(Code::Unauthorized, message).details(serde_json::json!({ "reason": reason }))
    }
    /// 422 naming one field.
    pub fn field(field: &str, problem: &str) -> Self {
        Self::msg(Code::ValidationFailed, format!("{field}: {problem}"))
            .details(serde_json::json!({ "fields": { field: problem } }))
    }
    /// 404 for a kind of object.
    pub fn not_found(what: &str) -> Self {
        Self::msg(Code::NotFound, format!("{what} not found."))
    }
    /// 500 whose cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::InternalError)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound => ApiError::new(Code::NotFound),
            StoreError::Conflict(what) => ApiError::msg(Code::Conflict, what),
            StoreError::Busy => {
                let mut e =
                    ApiError::msg(Code::ServiceUnavailable, "Storage is busy; retry shortly.");
                e.retry_after = Some(1);
                e
            }
            StoreError::Other(cause) => ApiError::internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_table_is_stable() {
        let table: Vec<(&str, u16)> = [
            Code::InvalidRequest,
            Code::Unauthorized,
            Code::Forbidden,
            Code::NotFound,
            Code::Conflict,
            Code::PayloadTooLarge,
            Code::UnsupportedMediaType,
            Code::ValidationFailed,
            Code::RateLimited,
            Code::InternalError,
            Code::ServiceUnavailable,
            Code::UpstreamError,
            Code::UpstreamTimeout,
        ]
        .iter()
        .map(|c| (c.as_str(), c.status()))
        .collect();
        assert_eq!(
            table,
            vec![
                ("invalid_request", 400),
                ("unauthorized", 401),
                ("forbidden", 403),
                ("not_found", 404),
                ("conflict", 409),
                ("payload_too_large", 413),
                ("unsupported_media_type", 415),
                ("validation_failed", 422),
                ("rate_limited", 429),
                ("internal_error", 500),
                ("service_unavailable", 503),
                ("upstream_error", 502),
                ("upstream_timeout", 504),
            ]
        );
    }
}
