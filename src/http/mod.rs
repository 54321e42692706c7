//! HTTP: one file per resource, each with its `router()`; extractors; the envelope.

pub mod api_keys;
pub mod auth_email;
pub mod auth_v1;
pub mod chat;
pub mod dashboard;
pub mod envelope;
pub mod extract;
pub mod failures;
pub mod gotrue;
pub mod health;
pub mod invitations;
pub mod limits;
pub mod me;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod orgs;
pub mod proxy;
pub mod session;
pub mod spend;
pub mod usage;
pub mod webhooks;
pub mod widget_public;
pub mod widgets;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method};
use axum::{middleware, Extension, Router};
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The whole application. Each route is declared once, with its OpenAPI description, in its
/// file's `router()` (`OpenApiRouter::routes(routes!(handler, …))`); `/openapi.json` is the
/// description the routes gave.
pub fn router(state: AppState) -> Router {
    let (app, spec) = routes(&state).split_for_parts();
    app.layer(Extension(std::sync::Arc::new(spec)))
        .fallback(envelope::not_found)
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            envelope::request_context,
        ))
        .with_state(state)
}

/// The description `/openapi.json` serves.
pub fn spec(state: &AppState) -> utoipa::openapi::OpenApi {
    routes(state).into_openapi()
}

/// Every route with its description, before the outer layers.
fn routes(state: &AppState) -> OpenApiRouter<AppState> {
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
        .expose_headers(
            [
                gotrue::API_VERSION.clone(),
                envelope::X_REQUEST_ID.clone(),
                header::RETRY_AFTER,
            ]
            .into_iter()
            .chain(limits::EXPOSED.map(HeaderName::from_static))
            .collect::<Vec<_>>(),
        );
    // Full paths merged, as for /v1 below. The `apikey` gate wraps each gated route's
    // methods (`gotrue::gated`), so an unserved method answers 405.
    let auth = auth_v1::router(state)
        .merge(auth_email::router(state))
        .merge(auth_v1::public_router())
        .merge(auth_email::public_router())
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
        .expose_headers(
            [envelope::X_REQUEST_ID.clone(), header::RETRY_AFTER]
                .into_iter()
                .chain(limits::EXPOSED.map(HeaderName::from_static))
                .collect::<Vec<_>>(),
        );
    // Full paths merged, not nested: a nested router rewrites every request's URI and adds
    // a layer of services cloned per request, on the API's hottest routes.
    let v1 = OpenApiRouter::new()
        .merge(me::router())
        .merge(session::router())
        .merge(orgs::router())
        .merge(invitations::router())
        .merge(api_keys::router())
        .merge(chat::router())
        .merge(models::router())
        .merge(usage::router())
        .merge(spend::router())
        .merge(widgets::router())
        .merge(webhooks::router())
        .layer(api_cors.clone());

    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(auth)
        .merge(v1)
        .merge(dashboard::router())
        .merge(health::router())
        .merge(openapi::router())
        .merge(metrics::router(state))
        .merge(widget_public::router(state.clone()))
        .merge(
            chat::api_router()
                // `/api/{*rest}` is not in `/openapi.json`: it forwards whatever the backend
                // at `proxy_target` serves, which Gatehouse does not know.
                .merge(proxy::router().into())
                .layer(api_cors),
        )
}
