//! `/v1/session`: the dashboard's cookie session.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::CookieJar;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::AccountError;
use crate::app::AppState;
use crate::error::Reason;
use crate::error::{ApiError, Code};
use crate::http::envelope::{errors, ok, Envelope, ErrorEnvelope};
use crate::http::extract::{check_origin, ApiJson, ClientIp, SESSION_COOKIE};

/// `/v1/session`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sign_in, sign_out))
}

/// Dashboard sign-in: with a password, or with an access token an `/auth/v1` flow has just
/// issued (a confirmed sign-up, an emailed code or link, a password recovery), so the
/// dashboard offers every way in while keeping its session in the HttpOnly cookie.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignInBody {
    /// Email and password.
    Password(PasswordSignIn),
    /// An access token from `/auth/v1`.
    AccessToken(TokenSignIn),
}

/// Sign-in with email and password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordSignIn {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// Sign-in with an access token issued at most [`TOKEN_MAX_AGE_SECS`] ago.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSignIn {
    /// The `access_token` an `/auth/v1` flow answered.
    pub access_token: String,
}

/// How old an access token may be to open a dashboard session. The cookie outlives the
/// token, so only a token just issued (by a flow the person has just completed) is
/// accepted: one stolen later cannot be turned into a longer-lived session.
pub const TOKEN_MAX_AGE_SECS: i64 = 300;

/// Who signed in.
#[derive(Serialize, ToSchema)]
pub struct SignedIn {
    /// The user's id.
    pub user_id: String,
    /// The user's email.
    pub email: String,
}

fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::InvalidCredentials => {
            ApiError::unauthorized(Reason::InvalidCredentials, "Invalid email or password.")
        }
        AccountError::EmailNotConfirmed => ApiError::msg(Code::Forbidden, "Email not confirmed."),
        AccountError::Banned(_) => ApiError::msg(Code::Forbidden, "User is banned."),
        AccountError::Busy => ApiError::from(crate::store::StoreError::Busy),
        AccountError::Validation(invalid) => ApiError::msg(
            Code::ValidationFailed,
            crate::http::gotrue::invalid_message(invalid),
        ),
        other => ApiError::internal(other),
    }
}

/// Signs in with email and password, or with a fresh access token, and sets an HttpOnly
/// session cookie.
#[utoipa::path(post, path = "/v1/session", tag = "session",
    security(()),
    request_body = SignInBody,
    responses((status = 200, description = "Signed in; the session cookie is set", body = Envelope<SignedIn>,
               headers(("Set-Cookie" = String, description = "The HttpOnly session cookie"))),
              errors::Body,
              (status = 401, description = "`unauthorized`: invalid email or password (`details.reason` `invalid_credentials`); an access token that is malformed, expired, revoked or older than 5 minutes (`malformed`, `expired`, `revoked`)", body = ErrorEnvelope),
              (status = 403, description = "`forbidden`: the email is not confirmed, or a cross-site request (`details.reason` `csrf`)", body = ErrorEnvelope),
              (status = 429, description = "`rate_limited`: the sign-in limit or the failure budget (`Retry-After`)", body = ErrorEnvelope),
              (status = 503, description = "`service_unavailable`: storage or the limiter is unavailable (`Retry-After`)", body = ErrorEnvelope)))]
pub async fn sign_in(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    ApiJson(body): ApiJson<SignInBody>,
) -> Result<Response, ApiError> {
    // Login CSRF: a browser always sends Origin on a cross-site POST; clients without a
    // browser (curl, SDKs) send none and are not at risk.
    if headers.contains_key(header::ORIGIN) {
        check_origin(&headers, &state.config)?;
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
    let (user_id, email, aal2) = match body {
        SignInBody::Password(body) => {
            let user = state
                .accounts
                .authenticate(&body.email, body.password)
                .await;
            if let Err(crate::accounts::AccountError::InvalidCredentials) = &user {
                state.edge.metrics.auth_failure("invalid_credentials");
                crate::http::failures::spend(&state, &ip).await;
            }
            let user = user.map_err(account_error)?;
            (user.id, user.email, false)
        }
        SignInBody::AccessToken(body) => {
            let checked = fresh_token_user(&state, &body.access_token).await;
            if let Err(e) = &checked {
                if e.code == Code::Unauthorized {
                    state.edge.metrics.auth_failure("invalid_access_token");
                    crate::http::failures::spend(&state, &ip).await;
                }
            }
            checked?
        }
    };
    let (secret, ttl) = state
        .accounts
        .start_web_session(&user_id, aal2)
        .await
        .map_err(account_error)?;
    let cookie = Cookie::build((SESSION_COOKIE, secret))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.config.secure_cookies())
        .path("/")
        .max_age(time::Duration::seconds(ttl))
        .build();
    let res = (jar.add(cookie), ok(SignedIn { user_id, email })).into_response();
    Ok(res)
}

/// The user of a live access token issued at most [`TOKEN_MAX_AGE_SECS`] ago, and whether
/// the token is aal2.
async fn fresh_token_user(
    state: &AppState,
    token: &str,
) -> Result<(String, String, bool), ApiError> {
    let crate::credentials::Principal::User {
        user_id,
        email,
        aal2,
        ..
    } = state.credentials.principal_from_jwt(token).await?
    else {
        return Err(ApiError::unauthorized(
            Reason::Malformed,
            "Not a person's access token.",
        ));
    };
    let now = state.edge.clock.now_secs();
    let issued = state
        .accounts
        .jwt
        .verify(token, now)
        .map(|c| c.iat)
        .map_err(|_| ApiError::unauthorized(Reason::Malformed, "The access token is invalid."))?;
    if now.saturating_sub(issued) > TOKEN_MAX_AGE_SECS {
        return Err(ApiError::unauthorized(
            Reason::Expired,
            "The access token is too old to open a dashboard session; sign in again.",
        ));
    }
    Ok((user_id, email, aal2))
}

/// Ends the dashboard session and clears the cookie.
#[utoipa::path(delete, path = "/v1/session", tag = "session",
    security(("cookie" = [])),
    responses((status = 204, description = "Signed out; the cookie is cleared"),
              (status = 401, description = "`unauthorized`: no session cookie (`details.reason` `missing`)", body = ErrorEnvelope),
              (status = 403, description = "`forbidden`: a cross-site request (`details.reason` `csrf`)", body = ErrorEnvelope),
              (status = 503, description = "`service_unavailable`: storage is unavailable (`Retry-After`)", body = ErrorEnvelope)))]
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
    check_origin(&headers, &state.config)?;
    let hash = state
        .accounts
        .end_web_session(&value)
        .await
        .map_err(account_error)?;
    state
        .invalidate(crate::fanout::Invalidation::WebSession(hash.clone()))
        .await;
    let removal = Cookie::build((SESSION_COOKIE, "")).path("/").build();
    Ok((StatusCode::NO_CONTENT, jar.remove(removal)).into_response())
}
