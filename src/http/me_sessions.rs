//! `/v1/me/sessions`: the signed-in person's sessions, one per device that signed in through
//! `/auth/v1`, and ending them (one, or every one but the caller's).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::AccountError;
use crate::app::AppState;
use crate::error::{ApiError, Code};
use crate::fanout::Invalidation;
use crate::http::envelope::{errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::Principal;
use crate::http::orgs::user_only;

/// `/v1/me/sessions`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions, end_sessions))
        .routes(routes!(end_session))
}

/// A session as its owner sees it.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    /// The session id: the `session_id` claim of its access tokens.
    pub id: String,
    /// Whether the request was made with this session's access token.
    pub current: bool,
    /// How it signed in: `password`, `otp` (an emailed link or code), `recovery` or
    /// `email_change`.
    pub sign_in_method: String,
    /// The `User-Agent` that signed in (up to 512 characters).
    pub user_agent: Option<String>,
    /// The address that signed in (behind `trusted_proxies`, the client's).
    pub ip: Option<String>,
    /// Sign-in time (unix ms).
    pub created_at: i64,
    /// Last refresh of its tokens (unix ms; the sign-in until one).
    pub last_refreshed_at: i64,
}

fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::Busy => ApiError::from(crate::store::StoreError::Busy),
        other => ApiError::internal(other),
    }
}

/// The caller's current token session, if the request carries an access token.
fn current(principal: &Principal) -> Option<&str> {
    match principal {
        Principal::User { session_id, .. } => session_id.as_deref(),
        Principal::ApiKey { .. } | Principal::OAuthClient { .. } => None,
    }
}

/// The caller's sessions, the most recently refreshed first (at most 100).
#[utoipa::path(get, path = "/v1/me/sessions", tag = "me",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "The sessions; `current` marks the caller's", body = Envelope<Vec<SessionView>>),
              (status = 403, description = "`forbidden`: an API key (sessions are people's)", body = ErrorEnvelope),
              errors::Auth))]
pub async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Success<Vec<SessionView>>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    let mine = current(&principal);
    let sessions = state
        .accounts
        .device_sessions(user_id)
        .await
        .map_err(account_error)?;
    Ok(ok(sessions
        .into_iter()
        .map(|s| SessionView {
            current: mine == Some(s.id.as_str()),
            id: s.id,
            sign_in_method: s.amr_method,
            user_agent: s.user_agent,
            ip: s.ip,
            created_at: s.created_at,
            last_refreshed_at: s.updated_at,
        })
        .collect()))
}

/// Ends one session: its refresh token is refused at once, its access tokens at their next
/// use (on every instance).
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "me",
    security(("bearer" = []), ("cookie" = [])),
    params(("id" = String, Path, description = "The session id")),
    responses((status = 204, description = "Ended"),
              (status = 403, description = "`forbidden`: an API key", body = ErrorEnvelope),
              (status = 404, description = "`not_found`: the caller has no session with this id", body = ErrorEnvelope),
              errors::Auth))]
pub async fn end_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    if id.len() > 64 {
        return Err(ApiError::not_found("Session"));
    }
    let ended = state
        .accounts
        .end_device_session(user_id, &id)
        .await
        .map_err(account_error)?;
    if !ended {
        return Err(ApiError::not_found("Session"));
    }
    state.invalidate(Invalidation::Session(id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/me/sessions?others=true`.
#[derive(Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndSessionsQuery {
    /// Must be `true`: every session but the caller's ends (from the dashboard, whose
    /// cookie is no token session, every one).
    pub others: Option<String>,
}

/// Signs out everywhere else.
#[utoipa::path(delete, path = "/v1/me/sessions", tag = "me",
    security(("bearer" = []), ("cookie" = [])),
    params(EndSessionsQuery),
    responses((status = 200, description = "The number of sessions ended", body = Envelope<EndedCount>),
              (status = 400, description = "`invalid_request`: `others=true` is missing", body = ErrorEnvelope),
              (status = 403, description = "`forbidden`: an API key", body = ErrorEnvelope),
              errors::Auth))]
pub async fn end_sessions(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<EndSessionsQuery>,
) -> Result<Success<EndedCount>, ApiError> {
    let (user_id, _) = user_only(&principal)?;
    if q.others.as_deref() != Some("true") {
        return Err(ApiError::msg(
            Code::InvalidRequest,
            "Only others=true is supported: every session but the caller's ends.",
        ));
    }
    let ended = state
        .accounts
        .end_other_sessions(user_id, current(&principal))
        .await
        .map_err(account_error)?;
    let count = ended.len();
    for id in ended {
        state.invalidate(Invalidation::Session(id)).await;
    }
    Ok(ok(EndedCount { ended: count }))
}

/// How many sessions ended.
#[derive(Serialize, ToSchema)]
pub struct EndedCount {
    /// The number.
    pub ended: usize,
}
