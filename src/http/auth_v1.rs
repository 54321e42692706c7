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

use crate::accounts::{Device, IssuedSession, SignUp};
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
        .routes(gated(state, routes!(reauthenticate)))
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
    /// Until when the user is banned (admin API answers, while banned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned_until: Option<String>,
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
    /// The user's MFA factors (absent when there are none, as GoTrue omits it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factors: Option<Vec<FactorBody>>,
    /// The user's UUID.
    pub id: String,
    /// The `email` identity (a password or emailed-link account; none for an anonymous user)
    /// and the external ones.
    pub identities: Vec<IdentityBody>,
    /// Made by an anonymous sign-in and not yet given a confirmed address.
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

/// An MFA factor, as the user object lists it.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthFactor)]
pub struct FactorBody {
    /// Enrolment time.
    pub created_at: String,
    /// `totp`.
    pub factor_type: String,
    /// The name the user gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    /// The factor's UUID.
    pub id: String,
    /// The last challenge.
    pub last_challenged_at: Option<String>,
    /// Always empty (phone factors are not offered).
    pub phone: &'static str,
    /// `unverified` or `verified`.
    pub status: String,
    /// Last update.
    pub updated_at: String,
}

/// A factor in GoTrue's JSON shape.
pub fn factor_json(f: &crate::store::Factor) -> FactorBody {
    FactorBody {
        created_at: rfc3339(f.created_at),
        factor_type: f.factor_type.clone(),
        friendly_name: f.friendly_name.clone(),
        id: f.id.clone(),
        last_challenged_at: f.last_challenged_at.map(rfc3339),
        phone: "",
        status: f.status.clone(),
        updated_at: rfc3339(f.updated_at),
    }
}

/// A user with their factors (`factors` absent when there are none).
pub fn user_with_factors(u: &User, factors: &[crate::store::Factor]) -> UserBody {
    let mut body = user_json(u);
    if !factors.is_empty() {
        body.factors = Some(factors.iter().map(factor_json).collect());
    }
    body
}

/// One of a user's identities: `email`, or an external provider's.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthIdentity)]
pub struct IdentityBody {
    /// Creation time.
    pub created_at: String,
    /// The address.
    pub email: String,
    /// The provider's id of the person (the user's UUID for `email`).
    pub id: String,
    /// What the provider says of the user.
    #[schema(value_type = Object)]
    pub identity_data: Value,
    /// The identity's UUID (for `email`, one derived from the user's).
    pub identity_id: String,
    /// The last sign-in, else the creation time.
    pub last_sign_in_at: String,
    /// `email` or the provider's configured name.
    pub provider: String,
    /// Last update.
    pub updated_at: String,
    /// The user's UUID.
    pub user_id: String,
}

/// `identity_data` of an `email` identity.
#[derive(Serialize)]
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
        identity_data: serde_json::to_value(IdentityData {
            email: u.email.clone(),
            email_verified: u.email_confirmed_at.is_some(),
            phone_verified: false,
            sub: u.id.clone(),
        })
        .unwrap_or_default(),
        identity_id: identity_id(&u.id),
        last_sign_in_at: opt(u.last_sign_in_at).unwrap_or_else(|| rfc3339(u.created_at)),
        provider: "email".into(),
        updated_at: rfc3339(u.updated_at),
        user_id: u.id.clone(),
    };
    // A user made by an external provider has no `email` identity until one is linked.
    let identities = if !u.is_anonymous && crate::store::has_email_identity(&u.app_metadata) {
        vec![identity]
    } else {
        Vec::new()
    };
    UserBody {
        app_metadata: u.app_metadata.clone(),
        aud: "authenticated",
        banned_until: None,
        confirmation_sent_at: opt(u.confirmation_sent_at),
        confirmed_at: opt(u.email_confirmed_at),
        created_at: rfc3339(u.created_at),
        email: u.email.clone(),
        email_change_sent_at: None,
        email_confirmed_at: opt(u.email_confirmed_at),
        factors: None,
        id: u.id.clone(),
        identities,
        is_anonymous: u.is_anonymous,
        last_sign_in_at: opt(u.last_sign_in_at),
        new_email: None,
        phone: "",
        role: "authenticated",
        updated_at: rfc3339(u.updated_at),
        user_metadata: u.user_metadata.clone(),
    }
}

/// An external identity in GoTrue's JSON shape.
pub fn identity_json(i: &crate::store::Identity, user_email: &str) -> IdentityBody {
    IdentityBody {
        created_at: rfc3339(i.created_at),
        email: i.email.clone().unwrap_or_else(|| user_email.to_string()),
        id: i.provider_id.clone(),
        identity_data: i.identity_data.clone(),
        identity_id: i.id.clone(),
        last_sign_in_at: rfc3339(i.last_sign_in_at.unwrap_or(i.created_at)),
        provider: i.provider.clone(),
        updated_at: rfc3339(i.updated_at),
        user_id: i.user_id.clone(),
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
        user: user_with_factors(&s.user, &s.factors),
    }
}

/// A session with all the user's identities, the external ones included (GoTrue's token
/// answers list them; `session_json` alone has only the `email` identity).
pub(crate) async fn full_session(
    state: &AppState,
    s: &IssuedSession,
) -> Result<SessionBody, GoTrueError> {
    let mut body = session_json(s);
    let external = state.external.identities(&s.user.id).await?;
    body.user
        .identities
        .extend(external.iter().map(|i| identity_json(i, &s.user.email)));
    Ok(body)
}

/// The device a sign-in comes from, as the session list will show it.
pub(crate) fn device(ip: &ClientIp, headers: &HeaderMap) -> Device {
    Device::new(
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        Some(ip.0.to_string()),
    )
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
    /// PKCE: the challenge (43 to 128 characters); the link then lands with `?code=`.
    code_challenge: Option<String>,
    /// PKCE: `s256` or `plain`, with `code_challenge`.
    code_challenge_method: Option<String>,
    /// The captcha token, when `captcha_provider` is set.
    #[schema(value_type = Option<Object>)]
    gotrue_meta_security: Option<crate::http::captcha::MetaSecurity>,
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
    responses((status = 200, description = "A session (autoconfirm, or an anonymous sign-in: neither email nor phone, with anonymous_sign_ins on), else the new user", content_type = "application/json", body = inline(SignUpAnswer)),
              (status = 400, description = "bad_json, validation_failed, phone_provider_disabled or captcha_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "user_already_exists, weak_password, or anonymous_provider_disabled (neither email nor phone, `signInAnonymously`, with anonymous_sign_ins off)", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit (rate_limit_sign_up, or rate_limit_anonymous for an anonymous sign-in) or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn signup(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<SignUpBody>,
) -> Result<Json<SignUpAnswer>, GoTrueError> {
    let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if empty(&body.email) && empty(&body.phone) {
        // `signInAnonymously`: neither address nor phone. Refused while off; then its own
        // per-IP limit and the captcha, the cheap refusals before the call to the provider.
        if !state.config.anonymous_sign_ins {
            return Err(GoTrueError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::AnonymousProviderDisabled,
                "Anonymous sign-ins are disabled",
            ));
        }
        limited(&state, Policy::Anonymous, &ip).await?;
        crate::http::captcha::check(&state, &ip, &headers, body.gotrue_meta_security.as_ref())
            .await?;
        let session = state
            .accounts
            .sign_up_anonymously(body.data, &device(&ip, &headers))
            .await?;
        return Ok(Json(SignUpAnswer::Session(Box::new(session_json(
            &session,
        )))));
    }
    limited(&state, Policy::SignUp, &ip).await?;
    crate::http::captcha::check(&state, &ip, &headers, body.gotrue_meta_security.as_ref()).await?;
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
    let pkce = crate::http::auth_email::challenge(
        body.code_challenge.as_deref(),
        body.code_challenge_method.as_deref(),
    )?;
    let device = device(&ip, &headers);
    match state
        .accounts
        .sign_up(&email, password, body.data, &device)
        .await?
    {
        SignUp::Session(s) => Ok(Json(SignUpAnswer::Session(Box::new(session_json(&s))))),
        SignUp::Unconfirmed {
            mut user,
            password_hash,
        } => {
            crate::http::auth_email::signup_mail(
                &state,
                &user.email,
                password_hash,
                redirect_to,
                pkce,
            )
            .await?;
            user.confirmation_sent_at = Some(state.edge.clock.now_ms());
            Ok(Json(SignUpAnswer::User(Box::new(user_json(&user)))))
        }
        SignUp::Existing {
            user,
            password_hash,
            metadata,
        } => {
            crate::http::auth_email::signup_mail(
                &state,
                &user.email,
                password_hash,
                redirect_to,
                pkce,
            )
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
                banned_until: None,
                is_anonymous: false,
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
    /// A PKCE auth code with its verifier.
    Pkce,
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
    /// The auth code a PKCE flow's link landed with (pkce grant).
    auth_code: Option<String>,
    /// The verifier the flow's challenge was made from (pkce grant).
    code_verifier: Option<String>,
    /// The captcha token, when `captcha_provider` is set.
    #[schema(value_type = Option<Object>)]
    gotrue_meta_security: Option<crate::http::captcha::MetaSecurity>,
}

#[utoipa::path(post, path = "/auth/v1/token", tag = "auth",
    security(("apikey" = [])),
    params(("grant_type" = inline(GrantType), Query, description = "password, refresh_token or pkce (anything else: 400 unsupported_grant_type)")),
    request_body(content = TokenBody, content_type = "application/json"),
    responses((status = 200, description = "A session", content_type = "application/json", body = SessionBody),
              (status = 400, description = "bad_json, validation_failed, unsupported_grant_type, invalid_credentials, email_not_confirmed, user_banned, captcha_failed (password grant), refresh_token_not_found, refresh_token_already_used, session_expired or bad_code_verifier (pkce: the code is used up)", body = GoTrueError),
              (status = 404, description = "flow_state_not_found: an unknown or used PKCE auth code", body = GoTrueError),
              (status = 422, description = "flow_state_expired: a PKCE auth code past pkce_code_expiry_seconds", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit (the route's limit or the failure budget)", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable, or refresh contention; retry", body = GoTrueError)))]
pub(crate) async fn token(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<TokenBody>,
) -> Result<Response, GoTrueError> {
    match q.get("grant_type").map(String::as_str) {
        Some("password") => {
            limited(&state, Policy::SignIn, &ip).await?;
            crate::http::captcha::check(&state, &ip, &headers, body.gotrue_meta_security.as_ref())
                .await?;
            let (Some(email), Some(password)) = (body.email, body.password) else {
                return Err(GoTrueError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::ValidationFailed,
                    "missing email or phone",
                ));
            };
            crate::http::failures::admit(&state, &ip).await?;
            let s = state
                .accounts
                .sign_in(&email, password, &device(&ip, &headers))
                .await;
            if let Err(crate::accounts::AccountError::InvalidCredentials) = &s {
                state.edge.metrics.auth_failure("invalid_credentials");
                crate::http::failures::spend(&state, &ip).await;
            }
            Ok(Json(full_session(&state, &s?).await?).into_response())
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
            Ok(Json(full_session(&state, &s).await?).into_response())
        }
        Some("pkce") => {
            limited(&state, Policy::Verify, &ip).await?;
            let (Some(code), Some(verifier)) = (
                body.auth_code.filter(|c| !c.is_empty()),
                body.code_verifier.filter(|v| !v.is_empty()),
            ) else {
                return Err(GoTrueError::validation(
                    "invalid request: both auth code and code verifier should be non-empty",
                ));
            };
            crate::http::failures::admit(&state, &ip).await?;
            let exchanged = match state.email.exchange_auth_code(&code, &verifier).await {
                Ok(x) => x,
                Err(e) => {
                    if !matches!(
                        e,
                        crate::mail::flows::FlowError::Busy
                            | crate::mail::flows::FlowError::Internal
                    ) {
                        // An unknown, used or mismatched code is a failed credential.
                        crate::http::failures::spend(&state, &ip).await;
                    }
                    return Err(e.into());
                }
            };
            let s = state
                .accounts
                .code_session(&exchanged.user_id, &exchanged.method, &device(&ip, &headers))
                .await?;
            Ok(Json(full_session(&state, &s).await?).into_response())
        }
        Some(_) | None => Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::UnsupportedGrantType,
            "unsupported_grant_type: use grant_type=password, grant_type=refresh_token or grant_type=pkce",
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

pub(crate) fn verify(state: &AppState, headers: &HeaderMap) -> Result<Claims, GoTrueError> {
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
pub(crate) async fn signed_in(
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
    let factors = state.accounts.factors(&user.id).await?;
    let external = state.external.identities(&user.id).await?;
    let mut body = user_with_factors(&user, &factors);
    body.identities
        .extend(external.iter().map(|i| identity_json(i, &user.email)));
    Ok(Json(body))
}

/// `PUT /auth/v1/user`: any of a new address, a new password and new metadata.
#[derive(Deserialize, ToSchema)]
pub(crate) struct UpdateUserBody {
    /// A new address: confirmation mails go out; the change applies once confirmed.
    email: Option<String>,
    /// A new password, checked against the password policy.
    password: Option<String>,
    /// The code `/reauthenticate` mailed (needed with `secure_password_change` from a session
    /// older than 24 hours; checked whenever sent with a password).
    nonce: Option<String>,
    /// Metadata merged into `user_metadata`: a JSON object.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// PKCE: the challenge (43 to 128 characters); the email-change link then lands with `?code=`.
    code_challenge: Option<String>,
    /// PKCE: `s256` or `plain`, with `code_challenge`.
    code_challenge_method: Option<String>,
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
              (status = 422, description = "weak_password, same_password, or validation_failed: an anonymous user's password without an email (an address of another account answers like a free one)", body = GoTrueError),
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
    let given = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    if user.is_anonymous && given(&body.password) && !given(&body.email) {
        // GoTrue's rule: an anonymous user sets a password only with the address it goes
        // with (the password signs in once that address is confirmed).
        return Err(GoTrueError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ValidationFailed,
            "Updating password of an anonymous user without an email or phone is not allowed",
        ));
    }
    if body.password.is_some() {
        password_change_allowed(&state, &claims, &user, body.nonce.as_deref()).await?;
    }
    let mut new_email = None;
    if let Some(email) = body.email.as_deref() {
        let same = crate::domain::Email::parse(email)
            .map(|e| e.as_str() == user.email)
            .unwrap_or(false);
        if !same {
            let redirect_to = q.get("redirect_to").map(String::as_str);
            let pkce = crate::http::auth_email::challenge(
                body.code_challenge.as_deref(),
                body.code_challenge_method.as_deref(),
            )?;
            new_email = Some(
                crate::http::auth_email::email_change(&state, &ip, &user, email, redirect_to, pkce)
                    .await?,
            );
        }
    }
    let (user, ended) = state
        .accounts
        .update_user(user, body.password, body.data, Some(&claims.session_id))
        .await?;
    state.end_sessions(ended).await;
    let factors = state.accounts.factors(&user.id).await?;
    let mut out = user_with_factors(&user, &factors);
    let external = state.external.identities(&user.id).await?;
    out.identities
        .extend(external.iter().map(|i| identity_json(i, &user.email)));
    if let Some(new) = new_email {
        out.new_email = Some(new);
        out.email_change_sent_at = Some(rfc3339(state.edge.clock.now_ms()));
    }
    Ok(Json(out))
}

/// How long after its sign-in a session may change the password without a nonce, with
/// `secure_password_change` on (GoTrue's rule).
const RECENT_SIGN_IN_MS: i64 = 24 * 3600 * 1000;

/// `secure_password_change`: a nonce that is sent must be the live one from `/reauthenticate`
/// (it is used up); none is needed from a session that signed in within 24 hours.
async fn password_change_allowed(
    state: &AppState,
    claims: &Claims,
    user: &User,
    nonce: Option<&str>,
) -> Result<(), GoTrueError> {
    if !state.config.secure_password_change {
        return Ok(());
    }
    match nonce.filter(|n| !n.trim().is_empty()) {
        Some(nonce) => state
            .email
            .check_reauthentication(&user.id, nonce)
            .await
            .map_err(|e| match e {
                crate::mail::flows::FlowError::Invalid => GoTrueError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::ReauthenticationNotValid,
                    "Nonce has expired or is invalid",
                ),
                other => other.into(),
            }),
        None => {
            let started = state.accounts.session_started(&claims.session_id).await?;
            let now = state.edge.clock.now_ms();
            match started {
                Some(t) if now - t < RECENT_SIGN_IN_MS => Ok(()),
                _ => Err(GoTrueError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::ReauthenticationNeeded,
                    "Password update requires reauthentication",
                )),
            }
        }
    }
}

#[utoipa::path(get, path = "/auth/v1/reauthenticate", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    responses((status = 200, description = "A mail with a six-digit nonce is on its way to the user's address: {}", content_type = "application/json", body = Object),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 422, description = "email_not_confirmed", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit (per IP, or the failure budget) or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn reauthenticate(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
) -> Result<Json<Value>, GoTrueError> {
    let (_, user) = signed_in(&state, &ip, &headers).await?;
    if user.email_confirmed_at.is_none() {
        return Err(GoTrueError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::EmailNotConfirmed,
            "Please verify your email first.",
        ));
    }
    limited(&state, Policy::MagicLink, &ip).await?;
    state.email.address_slot(&user.email).await?;
    state.email.send_reauthentication(&user).await?;
    Ok(Json(json!({})))
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
    // `supabase.auth.admin.signOut(jwt)`: an admin call, logged as one.
    if let Some(audit) = crate::http::auth_admin::service_apikey(&state, &ip, &headers) {
        state
            .accounts
            .admin_record(
                &audit,
                crate::store::AdminAction::UserSignedOut,
                Some(&claims.sub),
                json!({ "scope": scope, "sessions": ended.len() }),
            )
            .await?;
    }
    for id in ended {
        state
            .invalidate(crate::fanout::Invalidation::Session(id))
            .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The providers GoTrue's `/settings` names; configured `external_providers` are added.
const GOTRUE_PROVIDERS: [&str; 25] = [
    "apple",
    "azure",
    "bitbucket",
    "discord",
    "facebook",
    "figma",
    "fly",
    "github",
    "gitlab",
    "google",
    "kakao",
    "keycloak",
    "linkedin",
    "linkedin_oidc",
    "notion",
    "phone",
    "slack",
    "slack_oidc",
    "snapchat",
    "spotify",
    "twitch",
    "twitter",
    "workos",
    "zoom",
    "email",
];

/// What `GET /auth/v1/settings` answers, in GoTrue's shape.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthSettings)]
pub(crate) struct SettingsBody {
    /// Each provider GoTrue names, and whether it signs in here: `email` always,
    /// `anonymous_users` when anonymous sign-in is on, every other one `false`.
    #[schema(value_type = Object)]
    external: std::collections::BTreeMap<String, bool>,
    /// Always `false`: sign-up is open.
    disable_signup: bool,
    /// Whether sign-ups are confirmed at once (`autoconfirm`).
    mailer_autoconfirm: bool,
    /// Always `false` (no phone sign-in).
    phone_autoconfirm: bool,
    /// Always empty (no SMS).
    sms_provider: &'static str,
    /// Always `false` (no SAML).
    saml_enabled: bool,
    /// Always `false`.
    saml_private_key_next_configured: bool,
    /// Always `false` (no passkeys yet).
    passkeys_enabled: bool,
}

#[utoipa::path(get, path = "/auth/v1/settings", tag = "auth",
    security(("apikey" = [])),
    responses((status = 200, description = "Which providers sign in here, as GoTrue reports them", content_type = "application/json", body = SettingsBody),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError)))]
pub(crate) async fn settings(State(state): State<AppState>) -> Json<SettingsBody> {
    let mut external: std::collections::BTreeMap<String, bool> = GOTRUE_PROVIDERS
        .iter()
        .map(|p| (p.to_string(), *p == "email"))
        .collect();
    external.insert("anonymous_users".into(), state.config.anonymous_sign_ins);
    // Configured external providers, each as it is: on, or off (`enabled = false`).
    for (name, on) in state.external.enabled() {
        external.insert(name.to_string(), on);
    }
    Json(SettingsBody {
        external,
        disable_signup: false,
        mailer_autoconfirm: state.config.autoconfirm,
        phone_autoconfirm: false,
        sms_provider: "",
        saml_enabled: false,
        saml_private_key_next_configured: false,
        passkeys_enabled: false,
    })
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
            banned_until: None,
            is_anonymous: false,
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
            factors: Vec::new(),
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
