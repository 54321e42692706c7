//! `/v1/session`: the dashboard's cookie session.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::accounts::AccountError;
use crate::app::AppState;
use crate::auth::tokens;
use crate::error::Reason;
use crate::error::{ApiError, Code};
use crate::http::envelope::ok;
use crate::http::extract::{csrf_refused, same_origin, ApiJson, ClientIp, SESSION_COOKIE};

/// `/v1/session`.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/session", post(sign_in).delete(sign_out))
}

/// Dashboard sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::InvalidCredentials => {
            ApiError::unauthorized(Reason::InvalidCredentials, "Invalid email or password.")
        }
        AccountError::EmailNotConfirmed => ApiError::msg(Code::Forbidden, "Email not confirmed."),
        AccountError::Busy => ApiError::from(crate::store::StoreError::Busy),
        AccountError::Validation(m) => ApiError::msg(Code::ValidationFailed, m),
        other => ApiError::internal(other),
    }
}

/// Signs in with email and password and sets an HttpOnly session cookie.
#[utoipa::path(post, path = "/v1/session", tag = "session", request_body = SignInBody,
    responses((status = 200, description = "Signed in; cookie set"), (status = 401, description = "Invalid credentials"),
              (status = 429, description = "rate_limited")))]
pub async fn sign_in(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    ApiJson(body): ApiJson<SignInBody>,
) -> Result<Response, ApiError> {
    // Login CSRF: a browser always sends Origin on a cross-site POST; clients without a
    // browser (curl, SDKs) send none and are not at risk.
    if headers.contains_key(header::ORIGIN) && !same_origin(&headers, &state.config.public_origin())
    {
        return Err(csrf_refused());
    }
    match state
        .limits
        .ip(crate::config::Policy::SignIn, &ip.key())
        .await
    {
        Ok(d) if d.allowed => {}
        Ok(d) => return Err(crate::http::limits::refused(&d)),
        Err(_) => return Err(crate::http::limits::unavailable()),
    }
    crate::http::failures::admit(&state, &ip).await?;
    let user = state
        .accounts
        .authenticate(&body.email, body.password)
        .await;
    if let Err(crate::accounts::AccountError::InvalidCredentials) = &user {
        state.metrics.auth_failure("invalid_credentials");
        crate::http::failures::spend(&state, &ip).await;
    }
    let user = user.map_err(account_error)?;
    let secret = tokens::random_token(32);
    let now = state.clock.now_ms();
    // A dashboard session is bounded by session_max_seconds too.
    let ttl = state
        .config
        .session_max_seconds
        .map_or(state.config.web_session_seconds, |max| {
            max.min(state.config.web_session_seconds)
        });
    state
        .store
        .create_web_session(
            &tokens::sha256_hex(&secret),
            &user.id,
            now,
            now + ttl * 1000,
        )
        .await?;
    let cookie = Cookie::build((SESSION_COOKIE, secret))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.secure_cookies())
        .path("/")
        .max_age(time::Duration::seconds(ttl))
        .build();
    let res = (
        jar.add(cookie),
        ok(json!({ "user_id": user.id, "email": user.email })),
    )
        .into_response();
    Ok(res)
}

/// Ends the dashboard session and clears the cookie.
#[utoipa::path(delete, path = "/v1/session", tag = "session",
    responses((status = 204, description = "Signed out"), (status = 401, description = "No session")))]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<Response, ApiError> {
    let Some(value) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return Err(ApiError::unauthorized(
            Reason::Missing,
            "No dashboard session.",
        ));
    };
    if !same_origin(&headers, &state.config.public_origin()) {
        return Err(csrf_refused());
    }
    let hash = tokens::sha256_hex(&value);
    match state.store.delete_web_session(&hash).await {
        Ok(()) | Err(crate::store::StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    state
        .invalidate(crate::fanout::Invalidation::WebSession(hash.clone()))
        .await;
    let removal = Cookie::build((SESSION_COOKIE, "")).path("/").build();
    Ok((StatusCode::NO_CONTENT, jar.remove(removal)).into_response())
}
