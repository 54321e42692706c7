//! Rate limits at the HTTP edge: the decision a request earned, its headers, and the 429.

use std::cell::RefCell;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{ApiError, Code};
pub use crate::ratelimit::RateLimitSpec;
use crate::ratelimit::{Decision, Rate, Rates};

tokio::task_local! {
    static DECISION: RefCell<Option<Decision>>;
}

/// Runs `fut` with room for the decision the request earns.
pub async fn scope<F: std::future::Future>(fut: F) -> F::Output {
    DECISION.scope(RefCell::new(None), fut).await
}

/// Remembers a decision, so the response carries its headers.
pub fn note(decision: &Decision) {
    let _ = DECISION.try_with(|d| *d.borrow_mut() = Some(decision.clone()));
}

/// The decision noted during this request, if any.
pub fn noted() -> Option<Decision> {
    DECISION.try_with(|d| d.borrow_mut().take()).ok().flatten()
}

/// The decision noted so far, left in place for the response headers.
pub fn peek() -> Option<Decision> {
    DECISION.try_with(|d| d.borrow().clone()).ok().flatten()
}

/// One window's state as `/v1/me` shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct WindowView {
    /// `api_key` or `org`.
    pub policy: &'static str,
    /// Requests per window.
    pub limit: u32,
    /// Window length in seconds.
    pub window_seconds: u32,
    /// Requests left now (after this one).
    pub remaining: u32,
    /// Unix seconds at which the window is full again.
    pub reset: i64,
}

/// The windows of the request's decision.
pub fn window_views(d: &Decision) -> Vec<WindowView> {
    d.windows
        .iter()
        .map(|w| WindowView {
            policy: w.policy,
            limit: w.limit,
            window_seconds: w.window_seconds,
            remaining: w.remaining,
            reset: w.reset_at,
        })
        .collect()
}

/// The names CORS exposes.
pub const EXPOSED: [&str; 5] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-policy",
    "ratelimit",
];

/// Writes `X-RateLimit-*` for the window closest to exhaustion, the IETF draft's
/// `RateLimit-Policy` and `RateLimit` for every window, and `Retry-After` on a denial.
pub fn write_headers(headers: &mut HeaderMap, d: &Decision, now_secs: i64) {
    let Some(b) = d.binding() else { return };
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-ratelimit-limit", b.limit.to_string());
    put("x-ratelimit-remaining", b.remaining.to_string());
    put("x-ratelimit-reset", b.reset_at.to_string());
    let id = |w: &crate::ratelimit::WindowState| format!("\"{}_{}s\"", w.policy, w.window_seconds);
    let policies: Vec<String> = d
        .windows
        .iter()
        .map(|w| format!("{};q={};w={}", id(w), w.limit, w.window_seconds))
        .collect();
    put("ratelimit-policy", policies.join(", "));
    let states: Vec<String> = d
        .windows
        .iter()
        .map(|w| {
            format!(
                "{};r={};t={}",
                id(w),
                w.remaining,
                (w.reset_at - now_secs).max(0)
            )
        })
        .collect();
    put("ratelimit", states.join(", "));
    if !d.allowed {
        put("retry-after", d.retry_after().to_string());
    }
}

/// The `/v1` refusal: `rate_limited` with `details` = `{retry_after, limit, window}`.
pub fn refused(d: &Decision) -> ApiError {
    let retry = d.retry_after();
    let (limit, window) = d.binding().map_or((0, 0), |b| (b.limit, b.window_seconds));
    let mut e = ApiError::msg(
        Code::RateLimited,
        format!("Rate limit exceeded. Try again in {retry} seconds."),
    )
    .details(serde_json::json!({ "retry_after": retry, "limit": limit, "window": window }));
    e.retry_after = Some(retry);
    e
}

/// The refusal when a fail-closed policy cannot reach Redis.
pub fn unavailable() -> ApiError {
    let mut e = ApiError::msg(
        Code::ServiceUnavailable,
        "Rate limiting is unavailable; retry shortly.",
    );
    e.retry_after = Some(1);
    e
}

/// Checks a list given for `field`; 422 naming the field when it is not acceptable.
pub fn parse_specs(field: &str, specs: &[RateLimitSpec]) -> Result<Rates, ApiError> {
    let rates = specs
        .iter()
        .map(|s| Rate::checked(s.limit, s.window_seconds))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::field(field, &e))?;
    Rates::checked(rates).map_err(|e| ApiError::field(field, &e))
}
