//! `GET /metrics`: Prometheus text format, behind `metrics_token` when set, on the main
//! listener or, with `metrics_listen`, only on an address of its own.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::auth::tokens::{ct_eq, sha256_hex};
use crate::error::{ApiError, Code};
use crate::http::envelope::ErrorEnvelope;

/// The content type of the exposition (OpenMetrics 1.0, which Prometheus reads).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `/metrics` on the main listener; nothing when `metrics_listen` gives it its own address
/// (the main listener's fallback then answers 404, and `/openapi.json` does not list it).
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    if state.config.metrics_listen.is_some() {
        OpenApiRouter::new()
    } else {
        OpenApiRouter::new().routes(routes!(metrics))
    }
}

/// The whole application of the `metrics_listen` address: `/metrics`, and 404 elsewhere.
pub fn own_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(crate::http::envelope::not_found)
        .with_state(state)
}

/// Whether the request carries `Authorization: Bearer <metrics_token>` (or no token is set).
fn allowed(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.config.metrics_token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    // Digests of equal length, so the comparison's time tells nothing of the token, not even
    // its length.
    given.is_some_and(|g| ct_eq(&sha256_hex(g), &sha256_hex(expected.expose_secret())))
}

/// Requests by route and status, latency histograms, rate-limit decisions by policy and
/// outcome, refused credentials by reason, Redis fallbacks and received invalidations.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    security((), ("metrics_token" = [])),
    responses(
        (status = 200, description = "The OpenMetrics text exposition", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, description = "`unauthorized`: `metrics_token` is set and the request does not carry it as a bearer token",
            body = ErrorEnvelope, headers(("WWW-Authenticate" = String, description = "`Bearer`")))))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !allowed(&state, &headers) {
        let mut res = ApiError::msg(
            Code::Unauthorized,
            "Send the metrics token: Authorization: Bearer <metrics_token>.",
        )
        .into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.edge.metrics.render(),
    )
        .into_response()
}
