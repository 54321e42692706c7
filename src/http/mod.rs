//! HTTP: one file per resource, each with its `router()`; extractors; the envelope.

pub mod api_keys;
pub mod auth_admin;
pub mod auth_email;
pub mod auth_external;
pub mod auth_mfa;
pub mod auth_v1;
pub mod captcha;
pub mod challenge;
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
pub mod me_sessions;
pub mod metrics;
pub mod models;
pub mod oauth;
pub mod openapi;
pub mod orgs;
pub mod proxy;
pub mod session;
pub mod spend;
pub mod usage;
pub mod webhooks;
pub mod widget_public;
pub mod widgets;

use std::sync::{Arc, OnceLock};

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
///
/// Every route gets the edge ([`envelope::request_context`] with its CORS rules, and the body
/// limit) as one layer of its group, not as a layer per concern: axum clones a route's whole
/// stack of layers on every request at every level (each `Router::layer` is a boxed service
/// that clones the levels below it), so five levels cost about fifteen boxed clones per
/// request on the hottest routes; one level costs one.
pub fn router(state: AppState) -> Router {
    // `/openapi.json` serves the description of every route, its own included: it reads it
    // from this slot, filled once the routes are split from their description.
    let spec = Arc::new(OnceLock::new());
    let mut all = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi());
    for (group, cors) in groups(&state, Some(&spec)) {
        all = all.merge(group.layer(edge(&state, cors)));
    }
    let (app, description) = all.split_for_parts();
    let _ = spec.set(Arc::new(description));
    app.merge(
        Router::new()
            .fallback(envelope::not_found)
            .layer(edge(&state, None)),
    )
    .with_state(state)
}

/// The one layer every route has: the request context (request id, span, metrics, rate-limit
/// headers, the Bearer challenge and, for `cors`, CORS) and the body limit.
fn edge(state: &AppState, cors: Option<CorsLayer>) -> envelope::Edge {
    envelope::Edge::new(
        state.clone(),
        cors,
        DefaultBodyLimit::max(state.config.body_limit_bytes),
    )
}

/// The description `/openapi.json` serves.
pub fn spec(state: &AppState) -> utoipa::openapi::OpenApi {
    routes(state).into_openapi()
}

/// Every route with its description, before the edge layer.
fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    let mut all = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi());
    for (group, _) in groups(state, None) {
        all = all.merge(group);
    }
    all
}

/// The routes in groups, each with the CORS rules its requests get (`None`: no CORS).
/// `spec` is the slot `/openapi.json` reads the description from (`None` when only the
/// description is wanted).
fn groups(
    state: &AppState,
    spec: Option<&Arc<OnceLock<Arc<utoipa::openapi::OpenApi>>>>,
) -> Vec<(OpenApiRouter<AppState>, Option<CorsLayer>)> {
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
        .merge(auth_mfa::router(state))
        .merge(auth_admin::router(state))
        .merge(auth_external::router(state))
        .merge(auth_external::public_router())
        .merge(auth_v1::public_router())
        .merge(auth_email::public_router())
        .layer(middleware::from_fn(gotrue::api_version));

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
            [
                envelope::X_REQUEST_ID.clone(),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ]
            .into_iter()
            .chain(limits::EXPOSED.map(HeaderName::from_static))
            .collect::<Vec<_>>(),
        );
    // Full paths merged, not nested: a nested router rewrites every request's URI and adds
    // a layer of services cloned per request, on the API's hottest routes.
    let v1 = OpenApiRouter::new()
        .merge(me::router())
        .merge(me_sessions::router())
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
        .merge(oauth::v1_router());

    let openapi = match spec {
        Some(slot) => openapi::router().layer(Extension(slot.clone())),
        None => openapi::router(),
    };
    vec![
        (auth, Some(auth_cors)),
        (v1, Some(api_cors.clone())),
        (dashboard::router(), None),
        (oauth::router(), None),
        (health::router(), None),
        (openapi, None),
        (metrics::router(state), None),
        (widget_public::router(state.clone()), None),
        (
            chat::api_router()
                // `/api/{*rest}` is not in `/openapi.json`: it forwards whatever the backend
                // at `proxy_target` serves, which Gatehouse does not know.
                .merge(proxy::router().into()),
            Some(api_cors),
        ),
    ]
}
