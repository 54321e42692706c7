//! `/dashboard`: the owners' web page, three static files embedded in the binary, and `/`,
//! which sends a browser there.
//!
//! The page talks to `/v1` with `fetch()` from its own origin and the HttpOnly session
//! cookie, so the CSRF check on `/v1` (Origin, else Referer) covers every change it makes.
//! The headers below forbid inline script and style, framing and any other origin.

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use secrecy::ExposeSecret;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;

/// The page, its script and its styles.
static INDEX_HTML: &[u8] = include_bytes!("../../assets/dashboard/index.html");
static APP_JS: &[u8] = include_bytes!("../../assets/dashboard/app.js");
static APP_CSS: &[u8] = include_bytes!("../../assets/dashboard/app.css");

/// Only the page's own files; no inline code, no other origin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `/dashboard`, `/dashboard/`, the page's two assets and its settings: files for a
/// browser, not API operations, so plain routes that `/openapi.json` leaves out. `/` is
/// described: it is where a newcomer lands first.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(root))
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
        .route("/dashboard/config.json", get(config))
}

/// The server's root sends a browser to the dashboard.
#[utoipa::path(get, path = "/", tag = "ops",
    responses((status = 303, description = "To the dashboard",
               headers(("Location" = String, description = "`/dashboard`")))))]
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// One of the three files with the security headers every dashboard response carries.
fn asset(content_type: &'static str, cache: &'static str, body: &'static [u8]) -> Response {
    let headers: [(HeaderName, HeaderValue); 7] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, body).into_response()
}

/// The page. Never cached: it is the entry point, and a stale one could load stale code.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", "no-store", INDEX_HTML)
}

/// The script. Revalidated on every load, so an upgraded binary serves its own version.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", "no-cache", APP_JS)
}

/// What the page needs: the publishable key to call `/auth/v1` (sign-up, emailed codes and
/// links, recovery), public by design as Supabase's anon key is, how often usage counters
/// are written, which the usage page states, and the currency its amounts are in.
pub async fn config(State(state): State<AppState>) -> Response {
    let body = serde_json::json!({
        "publishable_key": state.edge.publishable_key.expose_secret(),
        "write_behind_seconds": state.config.write_behind_seconds,
        "currency": state.config.currency,
    });
    let mut res = asset("application/json", "no-store", &[]);
    *res.body_mut() = axum::body::Body::from(body.to_string());
    res
}

/// The styles.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", "no-cache", APP_CSS)
}
