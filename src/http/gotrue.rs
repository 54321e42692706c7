//! Supabase Auth (GoTrue) wire formats: errors, the API-version header and the `apikey` gate.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::accounts::AccountError;
use crate::app::AppState;
use crate::auth::tokens::ct_eq;
use crate::http::extract::{read_json, BodyProblem};
use crate::ratelimit::Decision;

/// The header both Supabase clients send and read back.
pub static API_VERSION: HeaderName = HeaderName::from_static("x-supabase-api-version");

/// The only API version defined so far.
const VERSION_2024: &str = "2024-01-01";

tokio::task_local! {
    static VERSIONED: bool;
}

/// An error answered in GoTrue's format.
#[derive(Debug)]
pub struct GoTrueError {
    status: StatusCode,
    code: &'static str,
    message: String,
    weak_password: Option<Vec<&'static str>>,
    retry_after: Option<u64>,
}

impl GoTrueError {
    /// An error with status, GoTrue error code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            weak_password: None,
            retry_after: None,
        }
    }
    /// Status, code and message (for answers that are not JSON, e.g. a redirect).
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        (self.status, self.code, self.message.clone())
    }
    /// 400 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }
    /// 429 `over_request_rate_limit`.
    /// The headers come from the decision noted for the request.
    pub fn rate_limited(d: &Decision) -> Self {
        let retry = d.retry_after();
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "over_request_rate_limit",
            format!("Request rate limit reached. Try again in {retry} seconds."),
        );
        e.retry_after = Some(retry);
        e
    }
    /// 503 when a fail-closed limit cannot be decided.
    pub fn limiter_unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "Rate limiting is unavailable; retry shortly.",
        );
        e.retry_after = Some(1);
        e
    }
    /// 401/403 for a bad access token.
    pub fn bad_jwt(message: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "bad_jwt",
            format!("invalid JWT: unable to parse or verify signature, {message}"),
        )
    }
}

impl From<AccountError> for GoTrueError {
    fn from(e: AccountError) -> Self {
        let msg = e.to_string();
        let (status, code) = match &e {
            AccountError::InvalidCredentials => (StatusCode::BAD_REQUEST, "invalid_credentials"),
            AccountError::EmailNotConfirmed => (StatusCode::BAD_REQUEST, "email_not_confirmed"),
            AccountError::UserExists => (StatusCode::UNPROCESSABLE_ENTITY, "user_already_exists"),
            AccountError::WeakPassword(_) => (StatusCode::UNPROCESSABLE_ENTITY, "weak_password"),
            AccountError::SamePassword => (StatusCode::UNPROCESSABLE_ENTITY, "same_password"),
            AccountError::RefreshNotFound => (StatusCode::BAD_REQUEST, "refresh_token_not_found"),
            AccountError::RefreshAlreadyUsed => {
                (StatusCode::BAD_REQUEST, "refresh_token_already_used")
            }
            AccountError::SessionNotFound => (StatusCode::FORBIDDEN, "session_not_found"),
            AccountError::SessionExpired(_) => (StatusCode::BAD_REQUEST, "session_expired"),
            AccountError::Validation(_) => (StatusCode::BAD_REQUEST, "validation_failed"),
            AccountError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "request_timeout"),
            AccountError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "unexpected_failure"),
        };
        let mut out = Self::new(status, code, msg);
        if let AccountError::WeakPassword(w) = &e {
            out.weak_password = Some(w.reasons.clone());
        }
        if matches!(e, AccountError::Busy) {
            out.retry_after = Some(1);
        }
        out
    }
}

impl IntoResponse for GoTrueError {
    fn into_response(self) -> Response {
        let versioned = VERSIONED.try_with(|v| *v).unwrap_or(false);
        let mut body = if versioned {
            json!({ "code": self.code, "message": self.message })
        } else {
            // The legacy shape, plus the OAuth-style fields older clients still read.
            json!({ "code": self.status.as_u16(), "error_code": self.code, "msg": self.message,
                    "error": self.code, "error_description": self.message })
        };
        if let Some(reasons) = &self.weak_password {
            body["weak_password"] = json!({ "reasons": reasons });
        }
        let mut res = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        res
    }
}

/// A JSON body on `/auth/v1`. GoTrue ignores unknown fields, and so do the targets here.
pub struct GoTrueJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for GoTrueJson<T> {
    type Rejection = GoTrueError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state)
            .await
            .map(GoTrueJson)
            .map_err(|p| match p {
                BodyProblem::TooLarge => GoTrueError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    "Request body is too large",
                ),
                BodyProblem::NotJson => GoTrueError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    "Content-Type must be application/json",
                ),
                BodyProblem::Malformed(m) => GoTrueError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("Could not parse request body as JSON: {m}"),
                ),
            })
    }
}

/// Runs `/auth/v1` requests in the client's API version (error shape) and echoes it back.
pub async fn api_version(req: Request, next: Next) -> Response {
    let versioned = req
        .headers()
        .get(&API_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim() >= VERSION_2024 && v.trim().len() == VERSION_2024.len())
        .unwrap_or(false);
    let mut res = VERSIONED.scope(versioned, next.run(req)).await;
    if versioned {
        res.headers_mut()
            .insert(API_VERSION.clone(), HeaderValue::from_static(VERSION_2024));
    }
    res
}

/// Refuses `/auth/v1` calls without the deployment's publishable key in `apikey`.
pub async fn require_apikey(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get("apikey")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match presented {
        None => GoTrueError::new(
            StatusCode::UNAUTHORIZED,
            "no_api_key",
            "No API key found in request",
        )
        .into_response(),
        Some(k) if ct_eq(&k, state.publishable_key.expose_secret()) => next.run(req).await,
        Some(_) => GoTrueError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "Invalid API key",
        )
        .into_response(),
    }
}
