//! `/auth/v1`: the Supabase Auth (GoTrue) compatible routes.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::{IssuedSession, SignUp};
use crate::app::AppState;
use crate::auth::jwt::{Claims, JwtError};
use crate::clock::rfc3339;
use crate::config::Policy;
use crate::http::extract::ClientIp;
use crate::http::gotrue::{gated, ErrorCode, GoTrueError, GoTrueJson};
use crate::store::User;

/// `/auth/v1` routes behind the `apikey` gate (API-version handling wraps them in
/// `http::router`).
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(gated(state, routes!(signup)))
        .routes(gated(state, routes!(token)))
        .routes(gated(state, routes!(logout)))
        .routes(gated(state, routes!(get_user, update_user)))
        .routes(gated(state, routes!(settings)))
        .routes(gated(state, routes!(health)))
}

/// Routes that need no `apikey`: public keys are public.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(jwks))
}

fn identity_id(user_id: &str) -> String {
    let d = Sha256::digest(format!("email-identity:{user_id}").as_bytes());
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

// GoTrue's success bodies. Fields are declared in alphabetical order: that is the order the
// `serde_json::Value` maps they replace were written in (no `preserve_order`), so the bytes on
// the wire did not change when they became types (`the_user_body_keeps_its_wire_form`).

/// A user in GoTrue's JSON shape (supabase-py validates it strictly).
#[derive(Serialize, ToSchema)]
#[schema(as = AuthUser)]
pub struct UserBody {
    /// `{"provider": "email", "providers": ["email"]}` and whatever the operator set.
    #[schema(value_type = Object)]
    pub app_metadata: Value,
    /// Always `authenticated`.
    pub aud: &'static str,
    /// When a confirmation mail was last sent.
    pub confirmation_sent_at: Option<String>,
    /// When the address was confirmed (GoTrue's older name for `email_confirmed_at`).
    pub confirmed_at: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// The address.
    pub email: String,
    /// When the email-change mails went out (`PUT /auth/v1/user` with a new address only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_change_sent_at: Option<String>,
    /// When the address was confirmed.
    pub email_confirmed_at: Option<String>,
    /// The user's UUID.
    pub id: String,
    /// One `email` identity.
    pub identities: Vec<IdentityBody>,
    /// Always `false`.
    pub is_anonymous: bool,
    /// The last sign-in.
    pub last_sign_in_at: Option<String>,
    /// The address waiting for confirmation (`PUT /auth/v1/user` with a new address only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_email: Option<String>,
    /// Always empty (phone sign-ups are disabled).
    pub phone: &'static str,
    /// Always `authenticated`.
    pub role: &'static str,
    /// Last update.
    pub updated_at: String,
    /// The user's own metadata.
    #[schema(value_type = Object)]
    pub user_metadata: Value,
}

/// A user's `email` identity.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthIdentity)]
pub struct IdentityBody {
    /// Creation time.
    pub created_at: String,
    /// The address.
    pub email: String,
    /// The user's UUID (GoTrue's provider id for `email`).
    pub id: String,
    /// What the provider says of the user.
    pub identity_data: IdentityData,
    /// A UUID derived from the user's.
    pub identity_id: String,
    /// The last sign-in, else the creation time.
    pub last_sign_in_at: String,
    /// Always `email`.
    pub provider: &'static str,
    /// Last update.
    pub updated_at: String,
    /// The user's UUID.
    pub user_id: String,
}

/// `identity_data` of an `email` identity.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthIdentityData)]
pub struct IdentityData {
    /// The address.
    pub email: String,
    /// Whether it is confirmed.
    pub email_verified: bool,
    /// Always `false`.
    pub phone_verified: bool,
    /// The user's UUID.
    pub sub: String,
}

/// A session as the token grant answers it.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthSession)]
pub struct SessionBody {
    /// The access token (a JWT).
    pub access_token: String,
    /// Unix seconds at which the access token expires.
    pub expires_at: i64,
    /// Seconds until then.
    pub expires_in: i64,
    /// The refresh token (single use).
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
    /// The signed-in user.
    pub user: UserBody,
}

/// A user in GoTrue's JSON shape.
pub fn user_json(u: &User) -> UserBody {
    let opt = |v: Option<i64>| v.map(rfc3339);
    let identity = IdentityBody {
        created_at: rfc3339(u.created_at),
        email: u.email.clone(),
        id: u.id.clone(),
        identity_data: IdentityData {
            email: u.email.clone(),
            email_verified: u.email_confirmed_at.is_some(),
            phone_verified: false,
            sub: u.id.clone(),
        },
        identity_id: identity_id(&u.id),
        last_sign_in_at: opt(u.last_sign_in_at).unwrap_or_else(|| rfc3339(u.created_at)),
        provider: "email",
        updated_at: rfc3339(u.updated_at),
        user_id: u.id.clone(),
    };
    UserBody {
        app_metadata: u.app_metadata.clone(),
        aud: "authenticated",
        confirmation_sent_at: opt(u.confirmation_sent_at),
        confirmed_at: opt(u.email_confirmed_at),
        created_at: rfc3339(u.created_at),
        email: u.email.clone(),
        email_change_sent_at: None,
        email_confirmed_at: opt(u.email_confirmed_at),
        id: u.id.clone(),
        identities: vec![identity],
        is_anonymous: false,
        last_sign_in_at: opt(u.last_sign_in_at),
        new_email: None,
        phone: "",
        role: "authenticated",
        updated_at: rfc3339(u.updated_at),
        user_metadata: u.user_metadata.clone(),
    }
}

/// A session in GoTrue's JSON shape.
pub(crate) fn session_json(s: &IssuedSession) -> SessionBody {
    SessionBody {
        access_token: s.access_token.clone(),
        expires_at: s.expires_at,
        expires_in: s.expires_in,
        refresh_token: s.refresh_token.clone(),
        token_type: "bearer",
        user: user_json(&s.user),
    }
}

/// A per-IP policy; the response carries its headers whatever the outcome.
pub(crate) async fn limited(
    state: &AppState,
    policy: Policy,
    ip: &ClientIp,
) -> Result<(), GoTrueError> {
    match state.limits.ip(policy, &ip.key()).await {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => Err(GoTrueError::rate_limited(&d)),
        Err(_) => Err(GoTrueError::limiter_unavailable()),
    }
}

/// `POST /auth/v1/signup`. Unknown fields are ignored, as GoTrue ignores them.
#[derive(Deserialize, ToSchema)]
pub(crate) struct SignUpBody {
    /// The address (phone sign-ups are disabled).
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    /// The password, checked against the password policy.
    #[schema(value_type = String, required = true)]
    password: Option<String>,
    /// The user's metadata (`user_metadata`): a JSON object.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// Refused with `phone_provider_disabled` when sent without an email.
    phone: Option<String>,
}

/// What sign-up answers: a session when addresses need no confirmation, else the user (the
/// same shape whether or not the address already had an account).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum SignUpAnswer {
    /// Signed in at once (`autoconfirm`).
    Session(Box<SessionBody>),
    /// The confirmation mail is on its way.
    User(Box<UserBody>),
}

#[utoipa::path(post, path = "/auth/v1/signup", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the confirmation link lands (checked against redirect_allowlist)")),
    request_body(content = SignUpBody, content_type = "application/json"),
    responses((status = 200, description = "A session (autoconfirm), else the new user", content_type = "application/json", body = inline(SignUpAnswer)),
              (status = 400, description = "bad_json, validation_failed or phone_provider_disabled", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "user_already_exists or weak_password", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ip: ClientIp,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<SignUpBody>,
) -> Result<Json<SignUpAnswer>, GoTrueError> {
    limited(&state, Policy::SignUp, &ip).await?;
    if body.phone.as_deref().is_some_and(|p| !p.is_empty()) && body.email.is_none() {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::PhoneProviderDisabled,
            "Phone signups are disabled",
        ));
    }
    let email = body
        .email
        .ok_or_else(|| GoTrueError::validation("To signup, please provide your email"))?;
    let password = body
        .password
        .ok_or_else(|| GoTrueError::validation("Signup requires a valid password"))?;
    let redirect_to = q.get("redirect_to").map(String::as_str);
    match state.accounts.sign_up(&email, password, body.data).await? {
        SignUp::Session(s) => Ok(Json(SignUpAnswer::Session(Box::new(session_json(&s))))),
        SignUp::Unconfirmed {
            mut user,
            password_hash,
        } => {
            crate::http::auth_email::signup_mail(&state, &user.email, password_hash, redirect_to)
                .await?;
            user.confirmation_sent_at = Some(state.edge.clock.now_ms());
            Ok(Json(SignUpAnswer::User(Box::new(user_json(&user)))))
        }
        SignUp::Existing {
            user,
            password_hash,
            metadata,
        } => {
            crate::http::auth_email::signup_mail(&state, &user.email, password_hash, redirect_to)
                .await?;
            // Answer exactly as a fresh sign-up does (as GoTrue does with confirmation on,
            // but with the identity too), so the route does not reveal who has an account.
            let now = state.edge.clock.now_ms();
            let look_alike = User {
                id: uuid::Uuid::new_v4().to_string(),
                email: user.email,
                password_hash: None,
                email_confirmed_at: None,
                confirmation_sent_at: Some(now),
                last_sign_in_at: None,
                user_metadata: metadata,
                app_metadata: json!({"provider": "email", "providers": ["email"]}),
                created_at: now,
                updated_at: now,
            };
            Ok(Json(SignUpAnswer::User(Box::new(user_json(&look_alike)))))
        }
    }
}

/// `grant_type` of `POST /auth/v1/token`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GrantType {
    /// Email and password.
    Password,
    /// A refresh token.
    RefreshToken,
}

/// `scope` of `POST /auth/v1/logout`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogoutScope {
    /// Every session of the user (the default).
    Global,
    /// This session.
    Local,
    /// Every session but this one.
    Others,
}

/// `POST /auth/v1/token`: email and password (`grant_type=password`) or a refresh token
/// (`grant_type=refresh_token`).
#[derive(Deserialize, ToSchema)]
#[schema(as = AuthTokenBody)]
pub(crate) struct TokenBody {
    /// The address (password grant).
    email: Option<String>,
    /// The password (password grant).
    password: Option<String>,
    /// The refresh token (refresh grant).
    refresh_token: Option<String>,
}

#[utoipa::path(post, path = "/auth/v1/token", tag = "auth",
    security(("apikey" = [])),
    params(("grant_type" = inline(GrantType), Query, description = "password or refresh_token (anything else: 400 unsupported_grant_type)")),
    request_body(content = TokenBody, content_type = "application/json"),
    responses((status = 200, description = "A session", content_type = "application/json", body = SessionBody),
              (status = 400, description = "bad_json, validation_failed, unsupported_grant_type, invalid_credentials, email_not_confirmed, refresh_token_not_found, refresh_token_already_used or session_expired", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit (the route's limit or the failure budget)", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable, or refresh contention; retry", body = GoTrueError)))]
pub(crate) async fn token(
    State(state): State<AppState>,
    ip: ClientIp,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<TokenBody>,
) -> Result<Response, GoTrueError> {
    match q.get("grant_type").map(String::as_str) {
        Some("password") => {
            limited(&state, Policy::SignIn, &ip).await?;
            let (Some(email), Some(password)) = (body.email, body.password) else {
                return Err(GoTrueError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::ValidationFailed,
                    "missing email or phone",
                ));
            };
            crate::http::failures::admit(&state, &ip).await?;
            let s = state.accounts.sign_in(&email, password).await;
            if let Err(crate::accounts::AccountError::InvalidCredentials) = &s {
                state.edge.metrics.auth_failure("invalid_credentials");
                crate::http::failures::spend(&state, &ip).await;
            }
            Ok(Json(session_json(&s?)).into_response())
        }
        Some("refresh_token") => {
            limited(&state, Policy::TokenRefresh, &ip).await?;
            let rt = body
                .refresh_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    GoTrueError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::ValidationFailed,
                        "refresh_token required",
                    )
                })?;
            crate::http::failures::admit(&state, &ip).await?;
            let s = match state.accounts.refresh(&rt).await {
                Ok(s) => s,
                Err(
                    e @ (crate::accounts::AccountError::RefreshNotFound
                    | crate::accounts::AccountError::RefreshAlreadyUsed),
                ) => {
                    // An unknown or reused refresh token is a failed credential.
                    crate::http::failures::spend(&state, &ip).await;
                    return Err(e.into());
                }
                Err(crate::accounts::AccountError::SessionExpired(id)) => {
                    state
                        .invalidate(crate::fanout::Invalidation::Session(id.clone()))
                        .await;
                    return Err(crate::accounts::AccountError::SessionExpired(id).into());
                }
                Err(e) => return Err(e.into()),
            };
            Ok(Json(session_json(&s)).into_response())
        }
        Some(_) | None => Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedGrantType,
            "unsupported_grant_type: use grant_type=password or grant_type=refresh_token",
        )),
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, GoTrueError> {
    let v = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            Ok(t.trim())
        }
        _ => Err(GoTrueError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::NoAuthorization,
            "This endpoint requires a Bearer token",
        )),
    }
}

fn verify(state: &AppState, headers: &HeaderMap) -> Result<Claims, GoTrueError> {
    let token = bearer(headers)?;
    let now = state.edge.clock.now_secs();
    state.accounts.jwt.verify(token, now).map_err(|e| match e {
        JwtError::Expired => GoTrueError::bad_jwt("token is expired"),
        JwtError::Invalid => GoTrueError::bad_jwt("token is invalid"),
    })
}

/// The access token's claims and its live session's user, held to the client's failure
/// budget (`rate_limit_auth_failures`): a bad or expired token, or one whose session ended,
/// spends a unit; a missing one does not.
async fn signed_in(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
) -> Result<(Claims, User), GoTrueError> {
    bearer(headers)?;
    crate::http::failures::admit(state, ip).await?;
    let checked = match verify(state, headers) {
        Ok(claims) => match state.accounts.session_user(&claims).await {
            Ok(user) => Ok((claims, user)),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = &checked {
        if e.parts().0 != StatusCode::SERVICE_UNAVAILABLE {
            crate::http::failures::spend(state, ip).await;
        }
    }
    checked
}

#[utoipa::path(get, path = "/auth/v1/user", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    responses((status = 200, description = "The signed-in user", content_type = "application/json", body = UserBody),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<UserBody>, GoTrueError> {
    let (_, user) = signed_in(&state, &ip, &headers).await?;
    Ok(Json(user_json(&user)))
}

/// `PUT /auth/v1/user`: any of a new address, a new password and new metadata.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateUserBody {
    /// A new address: confirmation mails go out; the change applies once confirmed.
    email: Option<String>,
    /// A new password, checked against the password policy.
    password: Option<String>,
    /// Metadata merged into `user_metadata`: a JSON object.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

#[utoipa::path(put, path = "/auth/v1/user", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the email-change link lands")),
    request_body(content = UpdateUserBody, content_type = "application/json"),
    responses((status = 200, description = "The updated user (with new_email and email_change_sent_at while an email change waits for confirmation)", content_type = "application/json", body = UserBody),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "weak_password or same_password (an address of another account answers like a free one)", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit (the failure budget) or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn update_user(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<UpdateUserBody>,
) -> Result<Json<UserBody>, GoTrueError> {
    let (claims, user) = signed_in(&state, &ip, &headers).await?;
    let mut new_email = None;
    if let Some(email) = body.email.as_deref() {
        let same = crate::domain::Email::parse(email)
            .map(|e| e.as_str() == user.email)
            .unwrap_or(false);
        if !same {
            let redirect_to = q.get("redirect_to").map(String::as_str);
            new_email = Some(
                crate::http::auth_email::email_change(&state, &ip, &user, email, redirect_to)
                    .await?,
            );
        }
    }
    let (user, ended) = state
        .accounts
        .update_user(user, body.password, body.data, Some(&claims.session_id))
        .await?;
    state.end_sessions(ended).await;
    let mut out = user_json(&user);
    if let Some(new) = new_email {
        out.new_email = Some(new);
        out.email_change_sent_at = Some(rfc3339(state.edge.clock.now_ms()));
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/auth/v1/logout", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    params(("scope" = inline(Option<LogoutScope>), Query, description = "global (default), local or others (anything else: 400 validation_failed)")),
    responses((status = 204, description = "Signed out"),
              (status = 400, description = "validation_failed: an unknown scope", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<StatusCode, GoTrueError> {
    bearer(&headers)?;
    crate::http::failures::admit(&state, &ip).await?;
    let claims = match verify(&state, &headers) {
        Ok(claims) => claims,
        Err(e) => {
            crate::http::failures::spend(&state, &ip).await;
            return Err(e);
        }
    };
    let scope = q.get("scope").map(String::as_str).unwrap_or("global");
    let ended = state.accounts.sign_out(&claims, scope).await?;
    for id in ended {
        state
            .invalidate(crate::fanout::Invalidation::Session(id))
            .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/auth/v1/settings", tag = "auth",
    security(("apikey" = [])),
    responses((status = 200, description = "Enabled providers", content_type = "application/json", body = Object),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError)))]
pub(crate) async fn settings(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "external": { "email": true, "phone": false, "anonymous_users": false },
        "disable_signup": false,
        "mailer_autoconfirm": state.config.autoconfirm,
        "phone_autoconfirm": false,
        "sms_provider": "",
        "saml_enabled": false,
    }))
}

#[utoipa::path(get, path = "/auth/v1/health", tag = "auth",
    security(("apikey" = [])),
    responses((status = 200, description = "Up", content_type = "application/json", body = Object),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError)))]
pub(crate) async fn health() -> Json<Value> {
    Json(
        json!({ "version": env!("CARGO_PKG_VERSION"), "name": "GoTrue", "description": "Gatehouse: a GoTrue-compatible auth API" }),
    )
}

#[utoipa::path(get, path = "/auth/v1/.well-known/jwks.json", tag = "auth",
    security(()),
    responses((status = 200, description = "Public signing keys (JWKS)", content_type = "application/json", body = Object)))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let mut res = Json(state.accounts.jwt.jwks()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=600"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bodies as they were written before they were types: a `json!` map, whose keys
    /// serde_json writes in sorted order.
    fn reference_user(u: &User) -> Value {
        let opt = |v: Option<i64>| v.map(rfc3339);
        let identity = json!({
            "identity_id": identity_id(&u.id),
            "id": u.id,
            "user_id": u.id,
            "identity_data": { "email": u.email, "email_verified": u.email_confirmed_at.is_some(), "phone_verified": false, "sub": u.id },
            "provider": "email",
            "last_sign_in_at": opt(u.last_sign_in_at).unwrap_or_else(|| rfc3339(u.created_at)),
            "created_at": rfc3339(u.created_at),
            "updated_at": rfc3339(u.updated_at),
            "email": u.email,
        });
        json!({
            "id": u.id,
            "aud": "authenticated",
            "role": "authenticated",
            "email": u.email,
            "email_confirmed_at": opt(u.email_confirmed_at),
            "confirmed_at": opt(u.email_confirmed_at),
            "confirmation_sent_at": opt(u.confirmation_sent_at),
            "last_sign_in_at": opt(u.last_sign_in_at),
            "phone": "",
            "app_metadata": u.app_metadata,
            "user_metadata": u.user_metadata,
            "identities": [identity],
            "created_at": rfc3339(u.created_at),
            "updated_at": rfc3339(u.updated_at),
            "is_anonymous": false,
        })
    }

    fn user(confirmed: Option<i64>) -> User {
        User {
            id: "0192f0c5-a1b2-7c3d-8e4f-5a6b7c8d9e0f".into(),
            email: "ada@example.com".into(),
            password_hash: None,
            email_confirmed_at: confirmed,
            confirmation_sent_at: Some(1_700_000_000_000),
            last_sign_in_at: None,
            user_metadata: json!({"name": "Ada", "age": 36}),
            app_metadata: json!({"provider": "email", "providers": ["email"]}),
            created_at: 1_700_000_000_000,
            updated_at: 1_700_000_100_000,
        }
    }

    #[test]
    fn the_user_body_keeps_its_wire_form() {
        for u in [user(None), user(Some(1_700_000_050_000))] {
            let typed = serde_json::to_string(&user_json(&u)).unwrap();
            assert_eq!(typed, serde_json::to_string(&reference_user(&u)).unwrap());
        }
        let u = user(None);
        let mut typed = user_json(&u);
        typed.new_email = Some("new@example.com".into());
        typed.email_change_sent_at = Some(rfc3339(1_700_000_200_000));
        let mut reference = reference_user(&u);
        reference["new_email"] = json!("new@example.com");
        reference["email_change_sent_at"] = json!(rfc3339(1_700_000_200_000));
        assert_eq!(
            serde_json::to_string(&typed).unwrap(),
            serde_json::to_string(&reference).unwrap()
        );
    }

    #[test]
    fn the_session_body_keeps_its_wire_form() {
        let s = IssuedSession {
            access_token: "eyJ.a.b".into(),
            refresh_token: "r1".into(),
            expires_in: 3600,
            expires_at: 1_700_003_600,
            user: user(Some(1)),
            session_id: "s".into(),
        };
        let reference = json!({
            "access_token": s.access_token,
            "token_type": "bearer",
            "expires_in": s.expires_in,
            "expires_at": s.expires_at,
            "refresh_token": s.refresh_token,
            "user": reference_user(&s.user),
        });
        assert_eq!(
            serde_json::to_string(&session_json(&s)).unwrap(),
            serde_json::to_string(&reference).unwrap()
        );
        let answer = SignUpAnswer::User(Box::new(user_json(&s.user)));
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            reference_user(&s.user)
        );
    }
}
