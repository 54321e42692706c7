//! `/auth/v1` email flows, as Supabase Auth (GoTrue) answers them: `otp`, `magiclink`,
//! `recover`, `verify` (POST with a code or token hash; GET for the link in the mail), and
//! the mails sent by sign-up and by an email change.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::auth::tokens::ct_eq;
use crate::config::Policy;
use crate::domain::Email;
use crate::http::auth_v1::{limited, session_json, SessionBody};
use crate::http::extract::ClientIp;
use crate::http::gotrue::{gated, ErrorCode, GoTrueError, GoTrueJson};
use crate::mail::flows::{FlowError, MailRequest, Verified, VerifyType, ONE_SIDE_CONFIRMED};
use crate::store::User;

/// Routes behind the `apikey` gate.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(gated(state, routes!(otp)))
        .routes(gated(state, routes!(magiclink)))
        .routes(gated(state, routes!(recover)))
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

fn parse_address(raw: Option<&str>) -> Result<Email, GoTrueError> {
    let raw = raw
        .filter(|e| !e.trim().is_empty())
        .ok_or_else(|| GoTrueError::validation("An email address is required"))?;
    Email::parse(raw)
        .map_err(|m| GoTrueError::validation(format!("Unable to validate email address: {m}")))
}

fn metadata(data: Option<Value>) -> Result<Value, GoTrueError> {
    match data {
        Some(Value::Object(m)) => Ok(Value::Object(m)),
        None | Some(Value::Null) => Ok(json!({})),
        Some(_) => Err(GoTrueError::validation("data must be a JSON object")),
    }
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
}

#[utoipa::path(post, path = "/auth/v1/otp", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the link lands (checked against redirect_allowlist)")),
    request_body(content = OtpBody, content_type = "application/json"),
    responses((status = 200, description = "A mail with a sign-in link and a six-digit code is on its way (the same answer for an unknown address): {}", content_type = "application/json", body = Object),
              (status = 400, description = "bad_json, validation_failed or phone_provider_disabled", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit (per IP) or over_email_send_rate_limit (per address)", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn otp(
    State(state): State<AppState>,
    ip: ClientIp,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<OtpBody>,
) -> Result<Response, GoTrueError> {
    limited(&state, Policy::MagicLink, &ip).await?;
    if body.email.is_none() && body.phone.as_deref().is_some_and(|p| !p.is_empty()) {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::PhoneProviderDisabled,
            "Phone logins are disabled",
        ));
    }
    let email = parse_address(body.email.as_deref())?;
    let data = metadata(body.data)?;
    sign_in_mail(&state, &email, body.create_user.unwrap_or(true), &data, &q).await
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
}

#[utoipa::path(post, path = "/auth/v1/magiclink", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the link lands")),
    request_body(content = MagicLinkBody, content_type = "application/json"),
    responses((status = 200, description = "A sign-in mail is on its way: {}", content_type = "application/json", body = Object),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn magiclink(
    State(state): State<AppState>,
    ip: ClientIp,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<MagicLinkBody>,
) -> Result<Response, GoTrueError> {
    limited(&state, Policy::MagicLink, &ip).await?;
    let email = parse_address(body.email.as_deref())?;
    let data = metadata(body.data)?;
    sign_in_mail(&state, &email, true, &data, &q).await
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
}

#[utoipa::path(post, path = "/auth/v1/recover", tag = "auth",
    security(("apikey" = [])),
    params(("redirect_to" = Option<String>, Query, description = "Where the link lands")),
    request_body(content = RecoverBody, content_type = "application/json"),
    responses((status = 200, description = "A recovery mail is on its way (the same answer for an unknown address): {}", content_type = "application/json", body = Object),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key or invalid_api_key", body = GoTrueError),
              (status = 413, description = "request_too_large", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit or over_email_send_rate_limit", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn recover(
    State(state): State<AppState>,
    ip: ClientIp,
    Query(q): Query<HashMap<String, String>>,
    GoTrueJson(body): GoTrueJson<RecoverBody>,
) -> Result<Response, GoTrueError> {
    limited(&state, Policy::MagicLink, &ip).await?;
    let email = parse_address(body.email.as_deref())?;
    state.email.address_slot(email.as_str()).await?;
    state
        .email
        .request(
            MailRequest::Recovery {
                email: email.as_str().to_string(),
            },
            redirect(&q),
        )
        .await?;
    Ok(sent())
}

/// `POST /auth/v1/verify`: a `token_hash` (from a link), or an `email` and its six-digit
/// `token`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AuthVerifyBody)]
pub(crate) struct VerifyBody {
    /// signup, magiclink, email, recovery or email_change.
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
            "Verify requires a verification type: signup, magiclink, email, recovery or email_change",
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

async fn open_session(state: &AppState, v: Verified) -> Result<VerifyAnswer, GoTrueError> {
    state.end_sessions(v.ended).await;
    if v.pending {
        // GoTrue's answer to the first of an email change's two links: no session yet.
        return Ok(VerifyAnswer::Pending {
            code: 200,
            msg: ONE_SIDE_CONFIRMED,
        });
    }
    let s = state.accounts.email_session(v.user, v.kind.amr()).await?;
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
    Ok(Json(open_session(&state, verified).await?).into_response())
}

fn require_apikey(state: &AppState, headers: &HeaderMap) -> Result<(), GoTrueError> {
    match headers.get("apikey").and_then(|v| v.to_str().ok()) {
        None => Err(GoTrueError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::NoApiKey,
            "No API key found in request",
        )),
        Some(k) if ct_eq(k, state.edge.publishable_key.expose_secret()) => Ok(()),
        Some(_) => Err(GoTrueError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidApiKey,
            "Invalid API key",
        )),
    }
}

fn see_other(target: &str, fragment: &[(&str, String)]) -> Response {
    let base = target.split('#').next().unwrap_or(target);
    let frag = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fragment.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let location = format!("{base}#{frag}");
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[utoipa::path(get, path = "/auth/v1/verify", tag = "auth",
    security(()),
    params(("token" = String, Query, description = "The token hash from the mail's link"),
           ("type" = String, Query, description = "signup, magiclink, email, recovery or email_change"),
           ("redirect_to" = Option<String>, Query, description = "Where to land (checked against redirect_allowlist; else site_url)")),
    responses((status = 303, description = "To redirect_to with the session, or the error (`error`, `error_code`, `error_description`), in the URL fragment: a browser follows the link, so every outcome is a redirect",
               headers(("Location" = String, description = "The landing page, with the outcome in its fragment"))),
              (status = 400, description = "The landing page cannot be put in a Location header (no body)")))]
pub(crate) async fn verify_link(
    State(state): State<AppState>,
    ip: ClientIp,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let target = state.email.mailer.redirects().resolve(redirect(&q));
    let outcome = async {
        limited(&state, Policy::Verify, &ip).await?;
        let vtype = verify_type(q.get("type").map(String::as_str))?;
        let token = q.get("token").map(String::as_str).unwrap_or("");
        let v = state.email.verify_link(token, vtype).await?;
        state.end_sessions(v.ended).await;
        if v.pending {
            return Ok(None);
        }
        let s = state.accounts.email_session(v.user, v.kind.amr()).await?;
        Ok::<_, GoTrueError>(Some((s, vtype)))
    }
    .await;
    match outcome {
        Ok(None) => see_other(&target, &[("message", ONE_SIDE_CONFIRMED.to_string())]),
        Ok(Some((s, vtype))) => see_other(
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
            see_other(
                &target,
                &[
                    ("error", error.to_string()),
                    ("error_code", code.to_string()),
                    ("error_description", message),
                ],
            )
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
        )
        .await?;
    Ok(new.as_str().to_string())
}
