//! `GET /v1/me`: who the caller is.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::error::ApiError;
use crate::http::envelope::{errors, ok, Envelope, Success};
use crate::http::extract::{Principal, Via};
use crate::orgs::Membership;

/// `/v1/me`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// The caller as `/v1/me` describes it.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// `user` or `api_key`.
    pub kind: &'static str,
    /// The user's id (people).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The user's email (people).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `jwt`, `cookie` or `api_key`.
    pub via: &'static str,
    /// The session of a JWT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Organizations a person belongs to, with their role and its permissions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organizations: Option<Vec<Membership>>,
    /// The key's organization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// The key's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The key's scopes (its permissions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// `live` or `test`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// A key's rate-limit windows (its own and its organization's) after this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Vec<crate::http::limits::WindowView>>,
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/me", tag = "me",
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The caller", body = Envelope<Me>), errors::Auth))]
pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Success<Me>, ApiError> {
    let kind = principal.kind();
    let blank = Me {
        kind,
        user_id: None,
        email: None,
        via: "api_key",
        session_id: None,
        organizations: None,
        org_id: None,
        key_id: None,
        scopes: None,
        environment: None,
        rate_limit: None,
    };
    match principal {
        Principal::User {
            user_id,
            email,
            session_id,
            via,
        } => {
            let organizations = state.orgs.memberships(&user_id).await?.as_ref().clone();
            Ok(ok(Me {
                user_id: Some(user_id),
                email: Some(email),
                via: match via {
                    Via::Jwt => "jwt",
                    Via::Cookie => "cookie",
                },
                session_id,
                organizations: Some(organizations),
                ..blank
            }))
        }
        Principal::ApiKey { key } => Ok(ok(Me {
            org_id: Some(key.org_id.clone()),
            key_id: Some(key.id.clone()),
            scopes: Some(key.scopes.clone()),
            environment: Some(key.environment.clone()),
            rate_limit: crate::http::limits::peek_views(),
            ..blank
        })),
    }
}
