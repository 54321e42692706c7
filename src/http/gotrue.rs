//! Supabase Auth (GoTrue) wire formats: errors, the API-version header and the `apikey` gate.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::accounts::{AccountError, BanSeen, Invalid};
use crate::app::AppState;
use crate::auth::tokens::ct_eq;
use crate::http::extract::{read_json, BodyProblem};
use crate::ratelimit::Decision;

/// The header both Supabase clients send and read back.
pub static API_VERSION: HeaderName = HeaderName::from_static("x-supabase-api-version");

/// The only API version defined so far.
const VERSION_2024: &str = "2024-01-01";

tokio::task_local! {
    static VERSIONED: bool;
}

/// Declares [`ErrorCode`] and its wire strings: the one table of them.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident => $wire:literal,)*) => {
        /// A GoTrue error code, as `code` (API version 2024-01-01) or `error_code` (legacy)
        /// carries it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $wire)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    /// A field is missing or invalid.
    ValidationFailed => "validation_failed",
    /// The client's address is over a rate limit.
    OverRequestRateLimit => "over_request_rate_limit",
    /// Storage or the limiter is busy or unreachable; retry.
    RequestTimeout => "request_timeout",
    /// The access token does not verify.
    BadJwt => "bad_jwt",
    /// Unknown email or wrong password.
    InvalidCredentials => "invalid_credentials",
    /// Sign-in before the address was confirmed.
    EmailNotConfirmed => "email_not_confirmed",
    /// Sign-up with a taken address.
    UserAlreadyExists => "user_already_exists",
    /// The password fails the policy.
    WeakPassword => "weak_password",
    /// The new password equals the old one.
    SamePassword => "same_password",
    /// The refresh token is unknown or its session ended.
    RefreshTokenNotFound => "refresh_token_not_found",
    /// A rotated refresh token came back after the reuse interval.
    RefreshTokenAlreadyUsed => "refresh_token_already_used",
    /// The session named by the access token no longer exists.
    SessionNotFound => "session_not_found",
    /// The session passed its time limit.
    SessionExpired => "session_expired",
    /// An unexpected failure (details logged).
    UnexpectedFailure => "unexpected_failure",
    /// The body is over the size limit.
    RequestTooLarge => "request_too_large",
    /// The body is not JSON, or not the expected shape.
    BadJson => "bad_json",
    /// No `apikey` header.
    NoApiKey => "no_api_key",
    /// The `apikey` header is not the publishable key.
    InvalidApiKey => "invalid_api_key",
    /// No bearer token where one is required.
    NoAuthorization => "no_authorization",
    /// The emailed link or code is wrong, used or expired.
    OtpExpired => "otp_expired",
    /// Another mail was sent to the address too recently.
    OverEmailSendRateLimit => "over_email_send_rate_limit",
    /// The new address belongs to another user.
    EmailExists => "email_exists",
    /// Phone sign-up and sign-in are not offered.
    PhoneProviderDisabled => "phone_provider_disabled",
    /// The token endpoint's `grant_type` is not one of those offered.
    UnsupportedGrantType => "unsupported_grant_type",
    /// A PKCE auth code that is unknown or already used.
    FlowStateNotFound => "flow_state_not_found",
    /// A PKCE auth code past its lifetime.
    FlowStateExpired => "flow_state_expired",
    /// A PKCE auth code with a verifier its challenge was not made from.
    BadCodeVerifier => "bad_code_verifier",
    /// A password change that needs the nonce of `/reauthenticate`.
    ReauthenticationNeeded => "reauthentication_needed",
    /// A wrong, used or expired reauthentication nonce.
    ReauthenticationNotValid => "reauthentication_not_valid",
    /// TOTP enrolment is off (no `mfa_encryption_key`).
    MfaTotpEnrollNotEnabled => "mfa_totp_enroll_not_enabled",
    /// TOTP verification is off (no `mfa_encryption_key`).
    MfaTotpVerifyNotEnabled => "mfa_totp_verify_not_enabled",
    /// Another factor of the user has this friendly name.
    MfaFactorNameConflict => "mfa_factor_name_conflict",
    /// The user has `mfa_max_enrolled_factors` factors.
    TooManyEnrolledMfaFactors => "too_many_enrolled_mfa_factors",
    /// The session must be aal2 for this.
    InsufficientAal => "insufficient_aal",
    /// No such factor (or challenge) for this user.
    MfaFactorNotFound => "mfa_factor_not_found",
    /// The challenge was opened from another address, or already used.
    MfaIpAddressMismatch => "mfa_ip_address_mismatch",
    /// The challenge expired or took too many wrong codes.
    MfaChallengeExpired => "mfa_challenge_expired",
    /// The code is wrong or was already used.
    MfaVerificationFailed => "mfa_verification_failed",
    /// The bearer token is not a service key (admin API).
    NotAdmin => "not_admin",
    /// The admin API named a user that does not exist.
    UserNotFound => "user_not_found",
    /// The user is banned.
    UserBanned => "user_banned",
    /// The captcha token is missing or did not verify.
    CaptchaFailed => "captcha_failed",
    /// A sign-up with neither email nor phone (`signInAnonymously`) while anonymous sign-in
    /// is off.
    AnonymousProviderDisabled => "anonymous_provider_disabled",
    /// The provider's callback lacks its `state` or `code`, or the provider refused.
    BadOauthCallback => "bad_oauth_callback",
    /// The callback's `state` is unknown, used or expired.
    BadOauthState => "bad_oauth_state",
    /// The provider did not verify the address; nothing was created or linked.
    ProviderEmailNeedsVerification => "provider_email_needs_verification",
    /// The identity is linked already (to this user or another).
    IdentityAlreadyExists => "identity_already_exists",
    /// No such identity of the user.
    IdentityNotFound => "identity_not_found",
    /// The identity is the user's only one.
    SingleIdentityNotDeletable => "single_identity_not_deletable",
    /// The request conflicts with the state of things (the admin API deleting the only
    /// owner of an organization).
    Conflict => "conflict",
}

/// A string enum of the wire strings (derived, the schema would list the variants' names).
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A GoTrue error code."))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered in GoTrue's format.
#[derive(Debug)]
pub struct GoTrueError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    weak_password: Option<Vec<&'static str>>,
    retry_after: Option<u64>,
}

impl GoTrueError {
    /// An error with status, GoTrue error code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            weak_password: None,
            retry_after: None,
        }
    }
    /// Status, code and message (for answers that are not JSON, e.g. a redirect).
    pub fn parts(&self) -> (StatusCode, ErrorCode, String) {
        (self.status, self.code, self.message.clone())
    }
    /// 400 `validation_failed`.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::ValidationFailed,
            message,
        )
    }
    /// 429 `over_request_rate_limit`.
    /// The headers come from the decision noted for the request.
    pub fn rate_limited(d: &Decision) -> Self {
        let retry = d.retry_after();
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::OverRequestRateLimit,
            format!(
                "Request rate limit reached. Try again in {retry} second{}.",
                if retry == 1 { "" } else { "s" }
            ),
        );
        e.retry_after = Some(retry);
        e
    }
    /// 503 when a fail-closed limit cannot be decided.
    pub fn limiter_unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RequestTimeout,
            "Rate limiting is unavailable; retry shortly.",
        );
        e.retry_after = Some(1);
        e
    }
    /// 401/403 for a bad access token.
    pub fn bad_jwt(message: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::BadJwt,
            format!("invalid JWT: unable to parse or verify signature, {message}"),
        )
    }
}

/// The body of every `/auth/v1` error, in `/openapi.json`: `{code, message}` when the request
/// sent `X-Supabase-Api-Version: 2024-01-01`, else the legacy shape `{code (the status),
/// error_code, msg, error, error_description}`; `weak_password.reasons` with `weak_password`.
impl utoipa::PartialSchema for GoTrueError {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        let text = || ObjectBuilder::new().schema_type(Type::String);
        let code = || <ErrorCode as utoipa::PartialSchema>::schema();
        let weak = || {
            ObjectBuilder::new()
                .description(Some("Why the password was refused (weak_password)."))
                .property("reasons", ArrayBuilder::new().items(text()))
                .required("reasons")
        };
        let versioned = ObjectBuilder::new()
            .title(Some("GoTrueErrorVersioned"))
            .description(Some("With X-Supabase-Api-Version: 2024-01-01."))
            .property("code", code())
            .required("code")
            .property("message", text())
            .required("message")
            .property("weak_password", weak());
        let legacy = ObjectBuilder::new()
            .title(Some("GoTrueErrorLegacy"))
            .description(Some("Without X-Supabase-Api-Version."))
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("The HTTP status.")),
            )
            .required("code")
            .property("error_code", code())
            .required("error_code")
            .property("msg", text())
            .required("msg")
            .property("error", code())
            .required("error")
            .property("error_description", text())
            .required("error_description")
            .property("weak_password", weak());
        OneOfBuilder::new()
            .item(versioned)
            .item(legacy)
            .description(Some("A Supabase Auth (GoTrue) error."))
            .into()
    }
}

impl utoipa::ToSchema for GoTrueError {}

/// GoTrue's words for an invalid account request (the dashboard's `/v1` sign-in shows them
/// too): the domain's `Invalid` carries none.
pub fn invalid_message(invalid: Invalid) -> String {
    match invalid {
        Invalid::Email(why) => format!("Unable to validate email address: {why}"),
        Invalid::PasswordTooLong => "Password cannot be longer than 1024 characters".into(),
        Invalid::DataNotObject => "data must be a JSON object".into(),
        Invalid::Scope => "scope must be one of global, local, others".into(),
        Invalid::FriendlyName => "friendly_name cannot be longer than 100 characters".into(),
        Invalid::Issuer => "issuer cannot be longer than 100 characters".into(),
        Invalid::BanDuration => {
            "invalid format for ban duration: use a duration such as 24h or 90m, or none".into()
        }
        Invalid::NoEmail => "Cannot create a user without either an email or phone".into(),
        Invalid::MetadataNotObject => "user_metadata and app_metadata must be JSON objects".into(),
        Invalid::PasswordHashFormat => "password_hash must be a bcrypt or argon2 hash".into(),
        Invalid::PasswordAndHash => "Only a password or a password hash should be provided".into(),
    }
}

impl From<AccountError> for GoTrueError {
    fn from(e: AccountError) -> Self {
        use ErrorCode as C;
        let (status, code, message) = match &e {
            AccountError::InvalidCredentials => (
                StatusCode::BAD_REQUEST,
                C::InvalidCredentials,
                "Invalid login credentials".to_string(),
            ),
            AccountError::EmailNotConfirmed => (
                StatusCode::BAD_REQUEST,
                C::EmailNotConfirmed,
                "Email not confirmed".to_string(),
            ),
            AccountError::UserExists => (
                StatusCode::UNPROCESSABLE_ENTITY,
                C::UserAlreadyExists,
                "User already registered".to_string(),
            ),
            AccountError::WeakPassword(w) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                C::WeakPassword,
                w.to_string(),
            ),
            AccountError::SamePassword => (
                StatusCode::UNPROCESSABLE_ENTITY,
                C::SamePassword,
                "New password should be different from the old password.".to_string(),
            ),
            AccountError::RefreshNotFound => (
                StatusCode::BAD_REQUEST,
                C::RefreshTokenNotFound,
                "Invalid Refresh Token: Refresh Token Not Found".to_string(),
            ),
            AccountError::RefreshAlreadyUsed => (
                StatusCode::BAD_REQUEST,
                C::RefreshTokenAlreadyUsed,
                "Invalid Refresh Token: Already Used".to_string(),
            ),
            AccountError::SessionNotFound => (
                StatusCode::FORBIDDEN,
                C::SessionNotFound,
                "Session from session_id claim in JWT does not exist".to_string(),
            ),
            AccountError::SessionExpired(_) => (
                StatusCode::BAD_REQUEST,
                C::SessionExpired,
                "Invalid Refresh Token: Session Expired".to_string(),
            ),
            AccountError::Banned(seen) => (
                if *seen == BanSeen::Link {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::BAD_REQUEST
                },
                C::UserBanned,
                if *seen == BanSeen::Refresh {
                    "Invalid Refresh Token: User Banned"
                } else {
                    "User is banned"
                }
                .to_string(),
            ),
            AccountError::UserNotFound => (
                StatusCode::NOT_FOUND,
                C::UserNotFound,
                "User not found".to_string(),
            ),
            AccountError::EmailExists => (
                StatusCode::UNPROCESSABLE_ENTITY,
                C::EmailExists,
                "A user with this email address has already been registered".to_string(),
            ),
            AccountError::SoleOwner { org_id, org_name } => (
                StatusCode::CONFLICT,
                C::Conflict,
                format!(
                    "User is the only owner of organization {org_name:?} ({org_id}); transfer its ownership or delete it first"
                ),
            ),
            AccountError::Validation(invalid) => (
                StatusCode::BAD_REQUEST,
                C::ValidationFailed,
                invalid_message(*invalid),
            ),
            AccountError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                C::RequestTimeout,
                "The service is busy; retry shortly.".to_string(),
            ),
            AccountError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                C::UnexpectedFailure,
                "internal error".to_string(),
            ),
        };
        let mut out = Self::new(status, code, message);
        if let AccountError::WeakPassword(w) = &e {
            out.weak_password = Some(w.reasons.clone());
        }
        if matches!(e, AccountError::Busy) {
            out.retry_after = Some(1);
        }
        out
    }
}

impl IntoResponse for GoTrueError {
    fn into_response(self) -> Response {
        let versioned = VERSIONED.try_with(|v| *v).unwrap_or(false);
        let mut body = if versioned {
            json!({ "code": self.code, "message": self.message })
        } else {
            // The legacy shape, plus the OAuth-style fields older clients still read.
            json!({ "code": self.status.as_u16(), "error_code": self.code, "msg": self.message,
                    "error": self.code, "error_description": self.message })
        };
        if let Some(reasons) = &self.weak_password {
            body["weak_password"] = json!({ "reasons": reasons });
        }
        let mut res = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        res
    }
}

/// A JSON body on `/auth/v1`. GoTrue ignores unknown fields, and so do the targets here.
pub struct GoTrueJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for GoTrueJson<T> {
    type Rejection = GoTrueError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state)
            .await
            .map(GoTrueJson)
            .map_err(|p| match p {
                BodyProblem::TooLarge => GoTrueError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::RequestTooLarge,
                    "Request body is too large",
                ),
                BodyProblem::NotJson => GoTrueError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadJson,
                    "Content-Type must be application/json",
                ),
                BodyProblem::Malformed(m) => GoTrueError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadJson,
                    format!("Could not parse request body as JSON: {m}"),
                ),
            })
    }
}

/// Runs `/auth/v1` requests in the client's API version (error shape) and echoes it back.
pub async fn api_version(req: Request, next: Next) -> Response {
    let versioned = req
        .headers()
        .get(&API_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim() >= VERSION_2024 && v.trim().len() == VERSION_2024.len())
        .unwrap_or(false);
    let mut res = VERSIONED.scope(versioned, next.run(req)).await;
    if versioned {
        res.headers_mut()
            .insert(API_VERSION.clone(), HeaderValue::from_static(VERSION_2024));
    }
    res
}

/// `routes` behind the `apikey` gate. The gate wraps each method the routes serve, not the
/// path's fallback, so a method no route serves answers 405 whatever the key (GoTrue answers
/// 401 `no_api_key` there first; 405 is what the path really answers).
pub fn gated(
    state: &AppState,
    routes: utoipa_axum::router::UtoipaMethodRouter<AppState>,
) -> utoipa_axum::router::UtoipaMethodRouter<AppState> {
    let (schemas, paths, method_router) = routes;
    let gate = axum::middleware::from_fn_with_state(state.clone(), require_apikey);
    (schemas, paths, method_router.route_layer(gate))
}

/// Refuses `/auth/v1` calls without the deployment's publishable key in `apikey`.
pub async fn require_apikey(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_apikey(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The `apikey` gate: the publishable key, or a service key (which a client made with
/// `createClient(url, serviceKey)` sends there, as Supabase's gateway accepts it).
pub fn check_apikey(state: &AppState, headers: &axum::http::HeaderMap) -> Result<(), GoTrueError> {
    match headers.get("apikey").and_then(|v| v.to_str().ok()) {
        None => Err(GoTrueError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::NoApiKey,
            "No API key found in request",
        )),
        Some(k) if ct_eq(k, state.edge.publishable_key.expose_secret()) => Ok(()),
        Some(k) if crate::http::auth_admin::service_key_kind(state, k).is_some() => Ok(()),
        Some(_) => Err(GoTrueError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidApiKey,
            "Invalid API key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    /// Clients match on these strings: a change here breaks them.
    #[test]
    fn the_code_table_is_stable() {
        let table: Vec<(String, &str)> = ErrorCode::ALL
            .iter()
            .map(|c| (format!("{c:?}"), c.as_str()))
            .collect();
        let expected = [
            ("ValidationFailed", "validation_failed"),
            ("OverRequestRateLimit", "over_request_rate_limit"),
            ("RequestTimeout", "request_timeout"),
            ("BadJwt", "bad_jwt"),
            ("InvalidCredentials", "invalid_credentials"),
            ("EmailNotConfirmed", "email_not_confirmed"),
            ("UserAlreadyExists", "user_already_exists"),
            ("WeakPassword", "weak_password"),
            ("SamePassword", "same_password"),
            ("RefreshTokenNotFound", "refresh_token_not_found"),
            ("RefreshTokenAlreadyUsed", "refresh_token_already_used"),
            ("SessionNotFound", "session_not_found"),
            ("SessionExpired", "session_expired"),
            ("UnexpectedFailure", "unexpected_failure"),
            ("RequestTooLarge", "request_too_large"),
            ("BadJson", "bad_json"),
            ("NoApiKey", "no_api_key"),
            ("InvalidApiKey", "invalid_api_key"),
            ("NoAuthorization", "no_authorization"),
            ("OtpExpired", "otp_expired"),
            ("OverEmailSendRateLimit", "over_email_send_rate_limit"),
            ("EmailExists", "email_exists"),
            ("PhoneProviderDisabled", "phone_provider_disabled"),
            ("UnsupportedGrantType", "unsupported_grant_type"),
            ("FlowStateNotFound", "flow_state_not_found"),
            ("FlowStateExpired", "flow_state_expired"),
            ("BadCodeVerifier", "bad_code_verifier"),
            ("ReauthenticationNeeded", "reauthentication_needed"),
            ("ReauthenticationNotValid", "reauthentication_not_valid"),
            ("MfaTotpEnrollNotEnabled", "mfa_totp_enroll_not_enabled"),
            ("MfaTotpVerifyNotEnabled", "mfa_totp_verify_not_enabled"),
            ("MfaFactorNameConflict", "mfa_factor_name_conflict"),
            ("TooManyEnrolledMfaFactors", "too_many_enrolled_mfa_factors"),
            ("InsufficientAal", "insufficient_aal"),
            ("MfaFactorNotFound", "mfa_factor_not_found"),
            ("MfaIpAddressMismatch", "mfa_ip_address_mismatch"),
            ("MfaChallengeExpired", "mfa_challenge_expired"),
            ("MfaVerificationFailed", "mfa_verification_failed"),
            ("NotAdmin", "not_admin"),
            ("UserNotFound", "user_not_found"),
            ("UserBanned", "user_banned"),
            ("CaptchaFailed", "captcha_failed"),
            ("AnonymousProviderDisabled", "anonymous_provider_disabled"),
            ("BadOauthCallback", "bad_oauth_callback"),
            ("BadOauthState", "bad_oauth_state"),
            (
                "ProviderEmailNeedsVerification",
                "provider_email_needs_verification",
            ),
            ("IdentityAlreadyExists", "identity_already_exists"),
            ("IdentityNotFound", "identity_not_found"),
            (
                "SingleIdentityNotDeletable",
                "single_identity_not_deletable",
            ),
            ("Conflict", "conflict"),
        ];
        assert_eq!(table.len(), expected.len());
        for ((name, wire), (want_name, want_wire)) in table.iter().zip(expected) {
            assert_eq!((name.as_str(), *wire), (want_name, want_wire));
        }
        for c in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(c).ok(),
                Some(serde_json::Value::String(c.as_str().to_string()))
            );
        }
    }
}
