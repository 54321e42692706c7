//! `GET /v1/me`: who the caller is.

use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::ApiError;
use crate::http::envelope::{ok, Success};
use crate::http::extract::{Principal, Via};

/// `/v1/me`.
pub fn router() -> Router<AppState> {
    Router::new().route("/me", get(me))
}

/// The caller as `/v1/me` describes it.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// `user` (more kinds come with API keys and widgets).
    pub kind: &'static str,
    /// The user's id.
    pub user_id: String,
    /// The user's email.
    pub email: String,
    /// `jwt` or `cookie`.
    pub via: &'static str,
    /// The session of a JWT.
    pub session_id: Option<String>,
    /// Organizations the user belongs to.
    pub organizations: Vec<serde_json::Value>,
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/me", tag = "me",
    responses((status = 200, description = "The caller", body = Me), (status = 401, description = "unauthorized")))]
pub async fn me(principal: Principal) -> Result<Success<Me>, ApiError> {
    let kind = principal.kind();
    match principal {
        Principal::User {
            user_id,
            email,
            session_id,
            via,
        } => Ok(ok(Me {
            kind,
            user_id,
            email,
            via: match via {
                Via::Jwt => "jwt",
                Via::Cookie => "cookie",
            },
            session_id,
            organizations: Vec::new(),
        })),
    }
}
