//! `GET /openapi.json`, generated from the handlers' annotations.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use crate::app::AppState;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse",
        description = "Authentication for multi-tenant AI-assistant platforms."
    ),
    paths(
        crate::http::health::healthz,
        crate::http::health::readyz,
        crate::http::me::me,
        crate::http::session::sign_in,
        crate::http::session::sign_out,
        crate::http::auth_v1::signup,
        crate::http::auth_v1::token,
        crate::http::auth_v1::logout,
        crate::http::auth_v1::get_user,
        crate::http::auth_v1::update_user,
        crate::http::auth_v1::settings,
        crate::http::auth_v1::health,
        crate::http::auth_v1::jwks,
        openapi_json,
    ),
    components(schemas(crate::http::me::Me, crate::http::session::SignInBody))
)]
pub struct ApiDoc;

/// `/openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
