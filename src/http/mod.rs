//! HTTP: one file per resource, each with its `router()`; extractors; the envelope.

pub mod api_keys;
pub mod auth_v1;
pub mod envelope;
pub mod extract;
pub mod gotrue;
pub mod health;
pub mod me;
pub mod openapi;
pub mod orgs;
pub mod session;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::{middleware, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::AppState;
use crate::ratelimit::Decision;

/// The whole application.
pub fn router(state: AppState) -> Router {
    let auth_cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            HeaderName::from_static("apikey"),
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-client-info"),
            gotrue::API_VERSION.clone(),
        ])
        .expose_headers([gotrue::API_VERSION.clone(), envelope::X_REQUEST_ID.clone()]);
    let auth = auth_v1::router()
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gotrue::require_apikey,
        ))
        .merge(auth_v1::public_router())
        .layer(middleware::from_fn(gotrue::api_version))
        .layer(auth_cors);

    // API keys and tokens travel in headers, never cookies, across origins: no credentials.
    let api_cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-api-key"),
        ])
        .expose_headers([
            envelope::X_REQUEST_ID.clone(),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ]);
    let v1 = Router::new()
        .merge(me::router())
        .merge(session::router())
        .merge(orgs::router())
        .merge(api_keys::router())
        .layer(api_cors);

    Router::new()
        .nest("/auth/v1", auth)
        .nest("/v1", v1)
        .merge(health::router())
        .merge(openapi::router())
        .fallback(envelope::not_found)
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(middleware::from_fn(envelope::request_context))
        .with_state(state)
}

/// Writes `X-RateLimit-*` for the window closest to exhaustion.
pub fn rate_limit_headers(headers: &mut HeaderMap, d: &Decision) {
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-ratelimit-limit", d.limit.to_string());
    put("x-ratelimit-remaining", d.remaining.to_string());
    put("x-ratelimit-reset", d.reset_at.to_string());
}
