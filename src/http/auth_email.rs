//! `/auth/v1` email flows, as Supabase Auth (GoTrue) answers them: `otp`, `magiclink`,
//! `recover`, `verify` (POST with a code or token hash; GET for the link in the mail), and
//! the mails sent by sign-up and by an email change.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::config::Policy;
use crate::domain::Email;
use crate::http::auth_v1::{limited, session_json, SessionBody};
use crate::http::extract::ClientIp;
use crate::http::gotrue::{gated, ErrorCode, GoTrueError, GoTrueJson};
use crate::mail::flows::{
    FlowError, MailRequest, Verified, VerifyType, ONE_SIDE_CONFIRMED, PKCE_PREFIX,
};
use crate::store::User;

/// Routes behind the `apikey` gate.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(gated(state, routes!(otp)))
        .routes(gated(state, routes!(magiclink)))
        .routes(gated(state, routes!(recover)))
        .routes(gated(state, routes!(resend)))
}

/// `/verify`: the link in a mail is opened by a browser, which sends no `apikey`; the POST
/// form checks the key itself.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(verify_link, verify))
}

/// GoTrue's wire text for each outcome lives here, not in the domain's `FlowError`.
impl From<FlowError> for GoTrueError {
    fn from(e: FlowError) -> Self {
        match e {
            FlowError::Invalid => GoTrueError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::OtpExpired,
                "Token has expired or is invalid",
            ),
            FlowError::TooSoon(secs) => GoTrueError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::OverEmailSendRateLimit,
                format!("For security purposes, you can only request this after {secs} seconds."),
            ),
            FlowError::EmailExists => GoTrueError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::EmailExists,
                "A user with this email address has already been registered",
            ),
            FlowError::CodeNotFound => GoTrueError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::FlowStateNotFound,
                "invalid flow state, no valid flow state found",
            ),
            FlowError::CodeExpired => GoTrueError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::FlowStateExpired,
                "invalid flow state, flow state has expired",
            ),
            FlowError::BadCodeVerifier => GoTrueError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadCodeVerifier,
                "code challenge does not match previously saved code verifier",
            ),
            FlowError::Busy => GoTrueError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RequestTimeout,
                "The service is busy; retry shortly.",
            ),
            FlowError::Internal => GoTrueError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::UnexpectedFailure,
                "internal error",
            ),
        }
    }
}

/// An address from a GoTrue body: present, and a valid email address (`validation_failed`
/// otherwise).
pub(crate) fn parse_address(raw: Option<&str>) -> Result<Email, GoTrueError> {
    let raw = raw
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| GoTrueError::validation("An email address is required"))?;
    Email::parse(raw)
        .map_err(|m| GoTrueError::validation(format!("Unable to validate email address: {m}")))
}

/// `data` from a GoTrue body: a JSON object, `{}` when absent or null.
pub(crate) fn metadata(data: Option<Value>) -> Result<Value, GoTrueError> {
    match data {
        Some(Value::Object(m)) => Ok(Value::Object(m)),
        None | Some(Value::Null) => Ok(json!({})),
        Some(_) => Err(GoTrueError::validation("data must be a JSON object")),
    }
}

/// A PKCE challenge as sent (`code_challenge` and `code_challenge_method`), checked and in
/// its stored form; `None` for the implicit flow (neither sent, or both null or empty).
pub(crate) fn challenge(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<Option<String>, GoTrueError> {
    use crate::auth::pkce::{stored_challenge, ChallengeError, MAX_LEN, MIN_LEN};
    stored_challenge(challenge, method).map_err(|e| {
        GoTrueError::validation(match e {
            ChallengeError::Incomplete => {
                "PKCE flow requires code_challenge_method and code_challenge".to_string()
            }
            ChallengeError::Length => {
                format!("code challenge has to be between {MIN_LEN} and {MAX_LEN} characters")
            }
            ChallengeError::Charset => "code challenge can only contain alphanumeric characters, hyphens, periods, underscores and tildes".to_string(),
            ChallengeError::Method => "code challenge method not supported".to_string(),
        })
    })
}

/// What GoTrue answers once a mail is on its way (or would be, for an unknown address).
fn sent() -> Response {
    Json(json!({})).into_response()
}

/// `POST /auth/v1/otp`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct OtpBody {
    /// The address (phone sign-ins are disabled).
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    /// Refused with `phone_provider_disabled` when sent without an email.
    phone: Option<String>,
    /// Metadata for an account the mail creates: a JSON object.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// Whether following the link may create the account (default true).
    create_user: Option<bool>,
    /// PKCE: the challenge (43 to 128 characters); the link then lands with `?code=`.
    code_challenge: Option<String>,
    /// PKCE: `s256` or `plain`, with `code_challenge`.
    code_challenge_method: Option<String>,
    /// The captcha token, when `captcha_provider` is set.
    #[schema(value_type = Option<Object>)]
    gotrue_meta_security: Option<crate::http::captcha::MetaSecurity>,
}

#[utoipa::path(post, path = "/auth/v1/otp", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the link lands (checked against redirect_allowlist)")),
    request_body(content = OtpBody, content_type = "application/json"),
    responses((status = 200, description = "A mail with a sign-in link and a six-digit code is on its way (the same answer for an unknown address): {}", content_type = "application/json", body = Object),
              (status = 400, description = "bad_json, validation_failed, phone_provider_disabled or captcha_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit (per IP) or over_email_send_rate_limit (per address)", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn otp(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<OtpBody>,
) -> Result<Response, GoTrueError> {
    limited(&state, Policy::MagicLink, &ip).await?;
    crate::http::captcha::check(&state, &ip, &headers, body.gotrue_meta_security.as_ref()).await?;
    if body.email.is_none() && body.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::PhoneProviderDisabled,
            "Phone logins are disabled",
        ));
    }
    let email = parse_address(body.email.as_deref())?;
    let data = metadata(body.data)?;
    let pkce = challenge(
        body.code_challenge.as_deref(),
        body.code_challenge_method.as_deref(),
    )?;
    let create = body.create_user.unwrap_or(true);
    sign_in_mail(&state, &email, create, &data, &q, pkce).await
}

/// `POST /auth/v1/magiclink`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct MagicLinkBody {
    /// The address.
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    /// Metadata for an account the mail creates: a JSON object.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    /// PKCE: the challenge (43 to 128 characters); the link then lands with `?code=`.
    code_challenge: Option<String>,
    /// PKCE: `s256` or `plain`, with `code_challenge`.
    code_challenge_method: Option<String>,
    /// The captcha token, when `captcha_provider` is set.
    #[schema(value_type = Option<Object>)]
    gotrue_meta_security: Option<crate::http::captcha::MetaSecurity>,
}

#[utoipa::path(post, path = "/auth/v1/magiclink", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the link lands")),
    request_body(content = MagicLinkBody, content_type = "application/json"),
    responses((status = 200, description = "A sign-in mail is on its way: {}", content_type = "application/json", body = Object),
              (status = 400, description = "bad_json, validation_failed or captcha_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn magiclink(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<MagicLinkBody>,
) -> Result<Response, GoTrueError> {
    limited(&state, Policy::MagicLink, &ip).await?;
    crate::http::captcha::check(&state, &ip, &headers, body.gotrue_meta_security.as_ref()).await?;
    let email = parse_address(body.email.as_deref())?;
    let data = metadata(body.data)?;
    let pkce = challenge(
        body.code_challenge.as_deref(),
        body.code_challenge_method.as_deref(),
    )?;
    sign_in_mail(&state, &email, true, &data, &q, pkce).await
}

/// A sign-in mail. Known and unknown addresses cost the route the same (the per-address slot
/// and a stored request); whether a mail goes out, and whether `create_user` makes an
/// account, is decided by the mail worker, so the route reveals no accounts, not even by time.
async fn sign_in_mail(
    state: &AppState,
    email: &Email,
    create_user: bool,
    data: &Value,
    q: &HashMap<String, String>,
    pkce: Option<String>,
) -> Result<Response, GoTrueError> {
    state.email.address_slot(email.as_str()).await?;
    state
        .email
        .request(
            MailRequest::SignIn {
                email: email.as_str().to_string(),
                create_user,
                data: data.clone(),
            },
            redirect(q),
            pkce,
        )
        .await?;
    Ok(sent())
}

fn redirect(q: &HashMap<String, String>) -> Option<&str> {
    q.get("redirect_to").map(String::as_str)
}

/// `POST /auth/v1/recover`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct RecoverBody {
    /// The address.
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    /// PKCE: the challenge (43 to 128 characters); the link then lands with `?code=`.
    code_challenge: Option<String>,
    /// PKCE: `s256` or `plain`, with `code_challenge`.
    code_challenge_method: Option<String>,
    /// The captcha token, when `captcha_provider` is set.
    #[schema(value_type = Option<Object>)]
    gotrue_meta_security: Option<crate::http::captcha::MetaSecurity>,
}

#[utoipa::path(post, path = "/auth/v1/recover", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the link lands")),
    request_body(content = RecoverBody, content_type = "application/json"),
    responses((status = 200, description = "A recovery mail is on its way (the same answer for an unknown address): {}", content_type = "application/json", body = Object),
              (status = 400, description = "bad_json, validation_failed or captcha_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn recover(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<RecoverBody>,
) -> Result<Response, GoTrueError> {
    limited(&state, Policy::MagicLink, &ip).await?;
    crate::http::captcha::check(&state, &ip, &headers, body.gotrue_meta_security.as_ref()).await?;
    let email = parse_address(body.email.as_deref())?;
    let pkce = challenge(
        body.code_challenge.as_deref(),
        body.code_challenge_method.as_deref(),
    )?;
    state.email.address_slot(email.as_str()).await?;
    state
        .email
        .request(
            MailRequest::Recovery {
                email: email.as_str().to_string(),
            },
            redirect(&q),
            pkce,
        )
        .await?;
    Ok(sent())
}

/// `POST /auth/v1/resend`.
#[derive(Deserialize, ToSchema)]
pub(crate) struct ResendBody {
    /// `signup` or `email_change` (`sms` and `phone_change`: phone sign-ins are disabled).
    #[serde(rename = "type")]
    #[schema(value_type = String, required = true)]
    kind: Option<String>,
    /// The account's address (its current one, for `email_change`).
    #[schema(value_type = String, required = true)]
    email: Option<String>,
    /// Refused with `phone_provider_disabled`.
    phone: Option<String>,
    /// PKCE: the challenge; the new link then lands with `?code=`.
    code_challenge: Option<String>,
    /// PKCE: `s256` or `plain`, with `code_challenge`.
    code_challenge_method: Option<String>,
    /// The captcha token, when `captcha_provider` is set.
    #[schema(value_type = Option<Object>)]
    gotrue_meta_security: Option<crate::http::captcha::MetaSecurity>,
}

#[utoipa::path(post, path = "/auth/v1/resend", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the new link lands")),
    request_body(content = ResendBody, content_type = "application/json"),
    responses((status = 200, description = "A new confirmation mail is on its way when the address's sign-up is unconfirmed (`signup`) or its account has an email change pending (`email_change`); the same answer otherwise: {}", content_type = "application/json", body = Object),
              (status = 400, description = "bad_json, validation_failed, phone_provider_disabled or captcha_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn resend(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<ResendBody>,
) -> Result<Response, GoTrueError> {
    limited(&state, Policy::MagicLink, &ip).await?;
    crate::http::captcha::check(&state, &ip, &headers, body.gotrue_meta_security.as_ref()).await?;
    let phone_disabled = || {
        GoTrueError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::PhoneProviderDisabled,
            "Phone logins are disabled",
        )
    };
    let email_change = match body.kind.as_deref() {
        Some("signup") => false,
        Some("email_change") => true,
        Some("sms" | "phone_change") => return Err(phone_disabled()),
        _ => {
            return Err(GoTrueError::validation(
                "Missing one of these types: signup, email_change, sms, phone_change",
            ))
        }
    };
    let email = body.email.filter(|e| !e.trim().is_empty());
    if email.is_none() && body.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(phone_disabled());
    }
    let Some(email) = email else {
        return Err(GoTrueError::validation(
            "Missing email address or phone number",
        ));
    };
    let email = parse_address(Some(&email))?;
    let pkce = challenge(
        body.code_challenge.as_deref(),
        body.code_challenge_method.as_deref(),
    )?;
    state.email.address_slot(email.as_str()).await?;
    state
        .email
        .request(
            MailRequest::Resend {
                email: email.as_str().to_string(),
                email_change,
            },
            redirect(&q),
            pkce,
        )
        .await?;
    Ok(sent())
}

/// `POST /auth/v1/verify`: a `token_hash` (from a link), or an `email` and its six-digit
/// `token`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AuthVerifyBody)]
pub(crate) struct VerifyBody {
    /// signup, magiclink, email, recovery, email_change or invite.
    #[serde(rename = "type")]
    #[schema(value_type = String, required = true)]
    kind: Option<String>,
    /// The six-digit code from the mail (with `email`).
    token: Option<String>,
    /// The hash from the mail's link.
    token_hash: Option<String>,
    /// The address the code went to (with `token`).
    email: Option<String>,
}

fn verify_type(raw: Option<&str>) -> Result<VerifyType, GoTrueError> {
    raw.and_then(VerifyType::parse).ok_or_else(|| {
        GoTrueError::validation(
            "Verify requires a verification type: signup, magiclink, email, recovery, email_change or invite",
        )
    })
}

/// What `POST /auth/v1/verify` answers.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum VerifyAnswer {
    /// Signed in, as the password grant answers.
    Session(Box<SessionBody>),
    /// The first of an email change's two links: GoTrue's `{"code": 200, "msg": …}`.
    Pending {
        /// Always 200.
        code: u16,
        /// That the other address must confirm too.
        msg: &'static str,
    },
}

async fn open_session(
    state: &AppState,
    v: Verified,
    device: &crate::accounts::Device,
) -> Result<VerifyAnswer, GoTrueError> {
    state.end_sessions(v.ended).await;
    if v.pending {
        // GoTrue's answer to the first of an email change's two links: no session yet.
        return Ok(VerifyAnswer::Pending {
            code: 200,
            msg: ONE_SIDE_CONFIRMED,
        });
    }
    let s = state
        .accounts
        .email_session(v.user, v.kind.amr(), device)
        .await?;
    Ok(VerifyAnswer::Session(Box::new(session_json(&s))))
}

#[utoipa::path(post, path = "/auth/v1/verify", tag = "auth",
    security(("apikey" = [])),
    request_body(content = VerifyBody, content_type = "application/json"),
    responses((status = 200, description = "A session, as the password grant answers; after the first of an email change's two links, {\"msg\", \"code\": 200} and no session", content_type = "application/json", body = VerifyAnswer),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 403, description = "otp_expired: unknown, used, expired or wrong token", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 422, description = "email_exists: the new address was taken meanwhile", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    GoTrueJson(body): GoTrueJson<VerifyBody>,
) -> Result<Response, GoTrueError> {
    require_apikey(&state, &headers)?;
    limited(&state, Policy::Verify, &ip).await?;
    let vtype = verify_type(body.kind.as_deref())?;
    let verified = match (body.token_hash.filter(|t| !t.is_empty()), body.token) {
        (Some(hash), _) => state.email.verify_link(&hash, vtype).await?,
        (None, Some(code)) => {
            let email = parse_address(body.email.as_deref())?;
            state
                .email
                .verify_code(email.as_str(), &code, vtype)
                .await?
        }
        (None, None) => {
            return Err(GoTrueError::validation(
                "Verify requires either a token_hash, or an email and a token",
            ))
        }
    };
    let device = crate::http::auth_v1::device(&ip, &headers);
    Ok(Json(open_session(&state, verified, &device).await?).into_response())
}

fn require_apikey(state: &AppState, headers: &HeaderMap) -> Result<(), GoTrueError> {
    crate::http::gotrue::check_apikey(state, headers)
}

fn see_other(target: &str, fragment: &[(&str, String)]) -> Response {
    land(target, &[], fragment)
}

/// A 303 to `target` with `query` pairs set in its query (replacing those of the same name)
/// and `fragment` as its fragment.
pub(crate) fn land(
    target: &str,
    query: &[(&str, String)],
    fragment: &[(&str, String)],
) -> Response {
    let base = target.split('#').next().unwrap_or(target);
    let base = if query.is_empty() {
        base.to_string()
    } else {
        match url::Url::parse(base) {
            Ok(mut u) => {
                let kept: Vec<(String, String)> = u
                    .query_pairs()
                    .filter(|(k, _)| !query.iter().any(|(q, _)| q == k))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                u.query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
                u.to_string()
            }
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    };
    let location = if fragment.is_empty() {
        base
    } else {
        let frag = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fragment.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        format!("{base}#{frag}")
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Where a followed link lands.
enum Landing {
    /// One side of an email change confirmed.
    Pending,
    /// Signed in (the implicit flow): the session goes in the fragment.
    Session(Box<crate::accounts::IssuedSession>, VerifyType),
    /// A PKCE flow: the auth code goes in the query.
    Code(String),
}

#[utoipa::path(get, path = "/auth/v1/verify", tag = "auth",
    security(()),
    params(("token" = String, Query, description = "The token hash from the mail's link"),
           ("type" = String, Query, description = "signup, magiclink, email, recovery, email_change or invite"),
           ("redirect_to" = Option<String>, Query, description = "Where to land (checked against redirect_allowlist; else site_url)")),
    responses((status = 303, description = "To redirect_to with the session, or the error (`error`, `error_code`, `error_description`), in the URL fragment: a browser follows the link, so every outcome is a redirect. A PKCE flow's link lands with `?code=` (exchanged by `POST /auth/v1/token?grant_type=pkce`) and its errors in the query too",
               headers(("Location" = String, description = "The landing page, with the outcome in its fragment (and query, for PKCE)"))),
              (status = 400, description = "The landing page cannot be put in a Location header (no body)")))]
pub(crate) async fn verify_link(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let target = state.email.mailer.redirects().resolve(redirect(&q));
    let token = q.get("token").map(String::as_str).unwrap_or("");
    let pkce = token.starts_with(PKCE_PREFIX);
    let outcome = async {
        limited(&state, Policy::Verify, &ip).await?;
        let vtype = verify_type(q.get("type").map(String::as_str))?;
        let v = state.email.verify_link(token, vtype).await?;
        state.end_sessions(v.ended).await;
        if v.pending {
            return Ok(Landing::Pending);
        }
        if let Some(challenge) = &v.code_challenge {
            let code = state
                .email
                .issue_auth_code(&v.user, v.kind, challenge)
                .await?;
            return Ok(Landing::Code(code));
        }
        let device = crate::http::auth_v1::device(&ip, &headers);
        let s = state
            .accounts
            .email_session(v.user, v.kind.amr(), &device)
            .await?;
        Ok::<_, GoTrueError>(Landing::Session(Box::new(s), vtype))
    }
    .await;
    match outcome {
        Ok(Landing::Pending) => {
            let message = [("message", ONE_SIDE_CONFIRMED.to_string())];
            land(&target, if pkce { &message } else { &[] }, &message)
        }
        Ok(Landing::Code(code)) => land(&target, &[("code", code)], &[]),
        Ok(Landing::Session(s, vtype)) => see_other(
            &target,
            &[
                ("access_token", s.access_token.clone()),
                ("expires_at", s.expires_at.to_string()),
                ("expires_in", s.expires_in.to_string()),
                ("refresh_token", s.refresh_token.clone()),
                ("token_type", "bearer".into()),
                ("type", vtype.name().into()),
            ],
        ),
        Err(e) => {
            let (status, code, message) = e.parts();
            let error = match status.as_u16() {
                403 | 401 => "access_denied",
                429 => "over_request_rate_limit",
                400..=499 => "invalid_request",
                _ => "server_error",
            };
            let message = if code == ErrorCode::OtpExpired {
                "Email link is invalid or has expired".to_string()
            } else {
                message
            };
            let pairs = [
                ("error", error.to_string()),
                ("error_code", code.to_string()),
                ("error_description", message),
            ];
            // A PKCE client reads the outcome from the query (GoTrue sets both).
            land(&target, if pkce { &pairs } else { &[] }, &pairs)
        }
    }
}

/// The confirmation mail of a sign-up, new address or not: the same stored request either
/// way (the worker sends it only while the account is unconfirmed). Its link sets this
/// sign-up's password and no other, so one who signed up somebody else's address first
/// never gets to sign in with it.
pub(crate) async fn signup_mail(
    state: &AppState,
    email: &str,
    password_hash: String,
    redirect_to: Option<&str>,
    pkce: Option<String>,
) -> Result<(), GoTrueError> {
    state.email.address_slot(email).await?;
    state
        .email
        .request(
            MailRequest::SignUp {
                email: email.to_string(),
                password_hash,
            },
            redirect_to,
            pkce,
        )
        .await?;
    Ok(())
}

/// `PUT /user {email}`: confirmation mails to the new address and (with
/// `email_change_double_confirm`) the current one; the change applies once each has followed
/// its link (type `email_change`). The answer is the same when the new address belongs to
/// another account (whose owner gets a notice instead). Returns the normalised new address.
pub(crate) async fn email_change(
    state: &AppState,
    ip: &ClientIp,
    user: &User,
    new: &str,
    redirect_to: Option<&str>,
    pkce: Option<String>,
) -> Result<String, GoTrueError> {
    limited(state, Policy::MagicLink, ip).await?;
    let new = parse_address(Some(new))?;
    state.email.address_slot(new.as_str()).await?;
    state
        .email
        .request(
            MailRequest::EmailChange {
                user_id: user.id.clone(),
                new: new.as_str().to_string(),
            },
            redirect_to,
            pkce,
        )
        .await?;
    Ok(new.as_str().to_string())
}
