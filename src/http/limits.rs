//! Rate limits at the HTTP edge: the decision a request earned, its headers, and the 429.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{ApiError, Code};
pub use crate::ratelimit::noted::{note, noted, scope};
pub use crate::ratelimit::RateLimitSpec;
use crate::ratelimit::{Decision, Rate, Rates};

/// The windows of the decision noted so far, which stays in place for the response headers.
pub fn peek_views() -> Option<Vec<WindowView>> {
    crate::ratelimit::noted::peek(window_views)
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
/// Every answer with a decision carries these, so they are built without `format!`.
pub fn write_headers(headers: &mut HeaderMap, d: &Decision, now_secs: i64) {
    static X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    static X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    static X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    static STATE: HeaderName = HeaderName::from_static("ratelimit");
    let Some(b) = d.binding() else { return };
    headers.insert(X_LIMIT.clone(), HeaderValue::from(b.limit));
    headers.insert(X_REMAINING.clone(), HeaderValue::from(b.remaining));
    headers.insert(X_RESET.clone(), HeaderValue::from(b.reset_at));
    let mut n = itoa::Buffer::new();
    // `"api_key_60s";q=60;w=60, …` and `"api_key_60s";r=59;t=60, …`
    let (mut policies, mut states) = (String::with_capacity(128), String::with_capacity(128));
    for (i, w) in d.windows.iter().enumerate() {
        for (out, [a, b]) in [
            (
                &mut policies,
                [
                    (";q=", i64::from(w.limit)),
                    (";w=", i64::from(w.window_seconds)),
                ],
            ),
            (
                &mut states,
                [
                    (";r=", i64::from(w.remaining)),
                    (";t=", (w.reset_at - now_secs).max(0)),
                ],
            ),
        ] {
            if i > 0 {
                out.push_str(", ");
            }
            out.push('"');
            out.push_str(w.policy);
            out.push('_');
            out.push_str(n.format(w.window_seconds));
            out.push_str("s\"");
            for (name, value) in [a, b] {
                out.push_str(name);
                out.push_str(n.format(value));
            }
        }
    }
    // Policy names are static ASCII identifiers and the rest digits: always a valid value.
    for (name, v) in [(&POLICY, policies), (&STATE, states)] {
        if let Ok(v) = HeaderValue::try_from(v) {
            headers.insert(name.clone(), v);
        }
    }
    if !d.allowed {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(d.retry_after()),
        );
    }
}

/// The `/v1` refusal: `rate_limited` with `details` = `{retry_after, limit, window}`.
pub fn refused(d: &Decision) -> ApiError {
    let retry = d.retry_after();
    let (limit, window) = d.binding().map_or((0, 0), |b| (b.limit, b.window_seconds));
    let mut e = ApiError::msg(
        Code::RateLimited,
        format!(
            "Rate limit exceeded. Try again in {retry} second{}.",
            if retry == 1 { "" } else { "s" }
        ),
    )
    .details(serde_json::json!({ "retry_after": retry, "limit": limit, "window": window }));
    e.retry_after = Some(retry);
    e
}

/// The refusal when a fail-closed policy cannot reach Redis.
pub fn unavailable() -> ApiError {
    ApiError::unavailable(1, "Rate limiting is unavailable; retry shortly.")
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
