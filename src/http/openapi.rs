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
    components(schemas(
        // Every kind of id, each with its pattern: parameters refer to them by name.
        crate::ids::OrgId,
        crate::ids::KeyId,
        crate::ids::WidgetId,
        crate::ids::EndpointId,
        crate::ids::WebhookMessageId,
        crate::ids::DeliveryId,
        crate::ids::AttemptId,
        crate::ids::InvitationId,
        crate::ids::AuditId,
        crate::ids::ThreadId,
        crate::ids::ChatMessageId,
        crate::ids::VisitorId,
        crate::ids::OAuthClientId,
        crate::ids::OAuthGrantId,
        crate::ids::OAuthRequestId,
    ))
)]
pub struct ApiDoc;

/// The credentials routes name in `security(...)`: `bearer` (a Supabase-compatible access
/// token, or an API key sent as a bearer token), `api_key` (`X-API-Key`), `cookie` (the
/// dashboard session; state-changing requests must come from the dashboard's origin) and
/// `apikey` (the publishable key `/auth/v1` callers send), `service_key` (the admin API's
/// `Authorization: Bearer <service key>`), and `metrics_token` (what
/// `/metrics` needs when the setting of that name is set).
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
            "client_secret_basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "An OAuth client's id and secret (RFC 6749 section 2.3.1).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "apikey",
                "The deployment's publishable key (/auth/v1 routes).",
            ))),
        );
        components.add_security_scheme(
            "service_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A service key (/auth/v1/admin): a service_role JWT from `gatehouse service-key`, or the `service_key` setting.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The `metrics_token` setting, when it is set."))
                    .build(),
            ),
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
    Extension(spec): Extension<Arc<std::sync::OnceLock<Arc<utoipa::openapi::OpenApi>>>>,
) -> Json<utoipa::openapi::OpenApi> {
    // The slot is filled as soon as the router is built, before it serves anything.
    Json(spec.get().map(|s| (**s).clone()).unwrap_or_default())
}
