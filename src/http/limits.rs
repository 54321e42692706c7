//! Rate limits at the HTTP edge: the decision a request earned, its headers, and the 429.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::{ApiError, Code};
pub use crate::ratelimit::noted::{note, noted, scope};
pub use crate::ratelimit::RateLimitSpec;
use crate::ratelimit::{Decision, Rate, Rates, WindowState};

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
    // `"api_key_60s";q=60;w=60, …` and `"api_key_60s";r=59;t=60, …`
    let states = window_list(d, |w| {
        [
            (";r=", i64::from(w.remaining)),
            (";t=", (w.reset_at - now_secs).max(0)),
        ]
    });
    if let Some(v) = policy_value(d) {
        headers.insert(POLICY.clone(), v);
    }
    if let Some(v) = states {
        headers.insert(STATE.clone(), v);
    }
    if !d.allowed {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(d.retry_after()),
        );
    }
}

/// One entry per window of `d`: `"{policy}_{window}s"` and the two parameters `params` gives.
/// Policy names are static ASCII identifiers and the rest digits: always a valid value.
fn window_list(
    d: &Decision,
    params: impl Fn(&WindowState) -> [(&'static str, i64); 2],
) -> Option<HeaderValue> {
    let mut n = itoa::Buffer::new();
    let mut out = String::with_capacity(128);
    for (i, w) in d.windows.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(w.policy);
        out.push('_');
        out.push_str(n.format(w.window_seconds));
        out.push_str("s\"");
        for (name, value) in params(w) {
            out.push_str(name);
            out.push_str(n.format(value));
        }
    }
    HeaderValue::try_from(out).ok()
}

/// `RateLimit-Policy` of `d`. It changes only with the limits, so each thread keeps the last
/// value it built with the windows it was built for (one string build and allocation fewer
/// per answer while the same limits come back).
fn policy_value(d: &Decision) -> Option<HeaderValue> {
    type Shape = Vec<(&'static str, u32, u32)>;
    thread_local! {
        static LAST: std::cell::RefCell<Option<(Shape, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let same = |shape: &Shape| {
        shape.len() == d.windows.len()
            && shape
                .iter()
                .zip(&d.windows)
                .all(|(&(p, l, s), w)| p == w.policy && l == w.limit && s == w.window_seconds)
    };
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((shape, v)) = last.as_ref() {
            if same(shape) {
                return Some(v.clone());
            }
        }
        let v = window_list(d, |w| {
            [
                (";q=", i64::from(w.limit)),
                (";w=", i64::from(w.window_seconds)),
            ]
        })?;
        let shape = d
            .windows
            .iter()
            .map(|w| (w.policy, w.limit, w.window_seconds))
            .collect();
        *last = Some((shape, v.clone()));
        Some(v)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(windows: &[(&'static str, u32, u32)]) -> Decision {
        Decision {
            allowed: true,
            windows: windows
                .iter()
                .map(|&(policy, limit, window_seconds)| WindowState {
                    policy,
                    limit,
                    window_seconds,
                    remaining: limit - 1,
                    reset_at: 1_000 + i64::from(window_seconds),
                    retry_after: 0,
                })
                .collect(),
        }
    }

    fn policy(d: &Decision) -> String {
        let mut h = HeaderMap::new();
        write_headers(&mut h, d, 1_000);
        h["ratelimit-policy"].to_str().unwrap().to_string()
    }

    #[test]
    fn the_policy_header_follows_the_limits_though_each_thread_keeps_the_last_one() {
        let a = decision(&[("api_key", 60, 60), ("org", 120, 60)]);
        let expected_a = r#""api_key_60s";q=60;w=60, "org_60s";q=120;w=60"#;
        assert_eq!(policy(&a), expected_a);
        assert_eq!(policy(&a), expected_a, "the kept value is the same");
        // Another limit, another window, fewer windows, another policy: each is built anew.
        for (d, expected) in [
            (
                decision(&[("api_key", 61, 60), ("org", 120, 60)]),
                r#""api_key_60s";q=61;w=60, "org_60s";q=120;w=60"#,
            ),
            (
                decision(&[("api_key", 61, 30), ("org", 120, 60)]),
                r#""api_key_30s";q=61;w=30, "org_60s";q=120;w=60"#,
            ),
            (
                decision(&[("api_key", 61, 30)]),
                r#""api_key_30s";q=61;w=30"#,
            ),
            (
                decision(&[("sign_in", 61, 30)]),
                r#""sign_in_30s";q=61;w=30"#,
            ),
        ] {
            assert_eq!(policy(&d), expected);
        }
        assert_eq!(policy(&a), expected_a);
        // The state header is never kept: it moves with every decision.
        let mut h = HeaderMap::new();
        write_headers(&mut h, &a, 1_010);
        assert_eq!(
            h["ratelimit"].to_str().unwrap(),
            r#""api_key_60s";r=59;t=50, "org_60s";r=119;t=50"#
        );
    }
}
