//! `GET /openapi.json`, generated from the handlers' annotations.

use std::sync::Arc;

use axum::{Extension, Json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    modifiers(&SecuritySchemes),
    info(
        title = "Gatehouse",
        description = "Authentication for multi-tenant AI-assistant platforms."
    ),
    paths(
        crate::http::session::sign_in,
        crate::http::session::sign_out,
        crate::http::api_keys::update_key,
        crate::http::chat::chat,
        crate::http::chat::list_threads,
        crate::http::chat::get_thread,
        crate::http::chat::delete_thread,
        crate::http::usage::usage,
        crate::http::usage::export,
        crate::http::metrics::metrics,
        crate::http::api_keys::create_key,
        crate::http::api_keys::list_keys,
        crate::http::api_keys::get_key,
        crate::http::api_keys::revoke_key,
        crate::http::api_keys::roll_key,
        crate::http::api_keys::verify_key,
        crate::http::api_keys::audit_log,
        crate::http::auth_v1::signup,
        crate::http::auth_v1::token,
        crate::http::auth_v1::logout,
        crate::http::auth_v1::get_user,
        crate::http::auth_v1::update_user,
        crate::http::auth_v1::settings,
        crate::http::auth_v1::health,
        crate::http::auth_v1::jwks,
        crate::http::auth_email::otp,
        crate::http::auth_email::magiclink,
        crate::http::auth_email::recover,
        crate::http::auth_email::verify,
        crate::http::auth_email::verify_link,
        crate::http::widgets::create_widget,
        crate::http::widgets::list_widgets,
        crate::http::widgets::get_widget,
        crate::http::widgets::update_widget,
        crate::http::widgets::delete_widget,
        crate::http::widgets::rotate_secret,
        crate::http::widgets::mint_token,
        crate::http::widget_public::config,
        crate::http::widget_public::open_session,
        crate::http::widget_public::renew_session,
        crate::http::widget_public::chat,
        crate::http::widget_public::history,
        crate::http::webhooks::create_endpoint,
        crate::http::webhooks::list_endpoints,
        crate::http::webhooks::get_endpoint,
        crate::http::webhooks::update_endpoint,
        crate::http::webhooks::delete_endpoint,
        crate::http::webhooks::rotate_secret,
        crate::http::webhooks::send_test,
        crate::http::webhooks::list_deliveries,
        crate::http::webhooks::retry_delivery,
    ),
    components(schemas(
        crate::http::session::SignInBody,
        crate::http::api_keys::CreateKeyBody,
        crate::http::api_keys::CreatedKey,
        crate::http::api_keys::KeyView,
        crate::http::api_keys::RollBody,
        crate::http::api_keys::VerifyBody,
        crate::http::api_keys::Verdict,
        crate::store::AuditEntry,
        crate::http::widgets::WidgetSettings,
        crate::http::widgets::WidgetView,
        crate::http::widgets::WidgetWithSecret,
        crate::http::widgets::CreateWidgetBody,
        crate::http::widgets::UpdateWidgetBody,
        crate::http::widgets::WidgetToken,
        crate::http::widget_public::PublicConfig,
        crate::http::widget_public::SessionBody,
        crate::http::widget_public::SessionAnswer,
        crate::http::widget_public::History,
        crate::http::webhooks::EndpointView,
        crate::http::webhooks::EndpointWithSecret,
        crate::http::webhooks::CreateEndpointBody,
        crate::http::webhooks::UpdateEndpointBody,
        crate::http::webhooks::Queued,
        crate::store::WebhookAttempt,
    ))
)]
pub struct ApiDoc;

/// The credentials routes name in `security(...)`: `bearer` (a Supabase-compatible access
/// token, or an API key sent as a bearer token), `api_key` (`X-API-Key`), `cookie` (the
/// dashboard session; state-changing requests must come from the dashboard's origin) and
/// `apikey` (the publishable key `/auth/v1` callers send).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An access token from /auth/v1/token, or an API key."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An organization's API key.",
            ))),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::http::extract::SESSION_COOKIE,
                "The dashboard session (POST /v1/session).",
            ))),
        );
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "apikey",
                "The deployment's publishable key (/auth/v1 routes).",
            ))),
        );
    }
}

/// `/openapi.json`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object)))]
pub async fn openapi_json(
    Extension(spec): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*spec).clone())
}
