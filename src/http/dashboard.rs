//! `/dashboard`: the owners' web page, three static files embedded in the binary.
//!
//! The page talks to `/v1` with `fetch()` from its own origin and the HttpOnly session
//! cookie, so the CSRF check on `/v1` (Origin, else Referer) covers every change it makes.
//! The headers below forbid inline script and style, framing and any other origin.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The page, its script and its styles.
static INDEX_HTML: &[u8] = include_bytes!("../../assets/dashboard/index.html");
static APP_JS: &[u8] = include_bytes!("../../assets/dashboard/app.js");
static APP_CSS: &[u8] = include_bytes!("../../assets/dashboard/app.css");

/// Only the page's own files; no inline code, no other origin, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `/dashboard`, `/dashboard/` and the page's two assets: files for a browser, not API
/// operations, so plain routes that `/openapi.json` leaves out.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/dashboard", get(index))
        .route("/dashboard/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/app.css", get(app_css))
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

/// The styles.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", "no-cache", APP_CSS)
}
