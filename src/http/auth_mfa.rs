//! `/auth/v1/factors`: multi-factor authentication (TOTP) in GoTrue's wire format, as
//! supabase-js's `auth.mfa` calls it. Listing is the user object's `factors` (`GET /user`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::accounts::MfaError;
use crate::app::AppState;
use crate::config::Policy;
use crate::http::auth_v1::{session_json, signed_in, SessionBody};
use crate::http::extract::ClientIp;
use crate::http::gotrue::{gated, ErrorCode, GoTrueError, GoTrueJson};

/// The MFA routes, behind the `apikey` gate.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(gated(state, routes!(enroll_factor)))
        .routes(gated(state, routes!(challenge_factor)))
        .routes(gated(state, routes!(verify_factor)))
        .routes(gated(state, routes!(unenroll_factor)))
}

/// GoTrue's words for an MFA refusal; `verifying` picks the code of a disabled TOTP.
fn mfa_error(e: MfaError, verifying: bool) -> GoTrueError {
    use ErrorCode as C;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match e {
        MfaError::TotpDisabled if verifying => GoTrueError::new(
            unprocessable,
            C::MfaTotpVerifyNotEnabled,
            "MFA verification is disabled for TOTP",
        ),
        MfaError::TotpDisabled => GoTrueError::new(
            unprocessable,
            C::MfaTotpEnrollNotEnabled,
            "MFA enroll is disabled for TOTP",
        ),
        MfaError::UnsupportedType => GoTrueError::validation(
            "factor_type needs to be totp (phone and webauthn factors are not offered)",
        ),
        MfaError::NameConflict(name) => GoTrueError::new(
            unprocessable,
            C::MfaFactorNameConflict,
            format!("A factor with the friendly name {name:?} for this user already exists"),
        ),
        MfaError::TooManyFactors => GoTrueError::new(
            unprocessable,
            C::TooManyEnrolledMfaFactors,
            "Maximum number of verified factors reached, unenroll to continue",
        ),
        MfaError::InsufficientAal { enrolling: true } => GoTrueError::new(
            StatusCode::FORBIDDEN,
            C::InsufficientAal,
            "AAL2 required to enroll a new factor",
        ),
        MfaError::InsufficientAal { enrolling: false } => GoTrueError::new(
            unprocessable,
            C::InsufficientAal,
            "AAL2 required to unenroll verified factor",
        ),
        MfaError::FactorNotFound => GoTrueError::new(
            StatusCode::NOT_FOUND,
            C::MfaFactorNotFound,
            "Factor not found",
        ),
        MfaError::ChallengeNotFound => GoTrueError::new(
            unprocessable,
            C::MfaFactorNotFound,
            "MFA factor with the provided challenge ID not found",
        ),
        MfaError::IpMismatch => GoTrueError::new(
            unprocessable,
            C::MfaIpAddressMismatch,
            "Challenge and verify IP addresses mismatch.",
        ),
        MfaError::ChallengeExpired(id) => GoTrueError::new(
            unprocessable,
            C::MfaChallengeExpired,
            format!("MFA challenge {id} has expired, verify against another challenge or create a new challenge."),
        ),
        MfaError::VerificationFailed => GoTrueError::new(
            unprocessable,
            C::MfaVerificationFailed,
            "Invalid TOTP code entered",
        ),
        MfaError::Account(a) => a.into(),
    }
}

/// The per-factor limit on challenges and verification attempts.
async fn factor_limited(state: &AppState, factor_id: &str) -> Result<(), GoTrueError> {
    match state
        .limits
        .ip(Policy::MfaVerify, &format!("factor:{factor_id}"))
        .await
    {
        Ok(d) if d.allowed => Ok(()),
        Ok(d) => Err(GoTrueError::rate_limited(&d)),
        Err(_) => Err(GoTrueError::limiter_unavailable()),
    }
}

/// `POST /auth/v1/factors`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AuthEnrollBody)]
pub(crate) struct EnrollBody {
    /// `totp` (phone and webauthn are not offered).
    #[schema(value_type = String, required = true)]
    factor_type: Option<String>,
    /// A name for the factor, unique per user (up to 100 characters).
    friendly_name: Option<String>,
    /// The issuer shown in the app (default: the host of `public_url`).
    issuer: Option<String>,
}

/// What an authenticator app needs; shown once.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthTotpEnrolment)]
pub struct TotpBody {
    /// The `otpauth://` URI as an SVG QR code (the SVG document; supabase-js prefixes
    /// `data:image/svg+xml;utf-8,`).
    pub qr_code: String,
    /// The secret in base32, for manual entry.
    pub secret: String,
    /// The `otpauth://totp/…` URI.
    pub uri: String,
}

/// A factor just enrolled.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthEnrolledFactor)]
pub struct EnrolledBody {
    /// The factor's UUID.
    pub id: String,
    /// `totp`.
    #[serde(rename = "type")]
    pub factor_type: String,
    /// The name given (empty when none).
    pub friendly_name: String,
    /// The secret, URI and QR code.
    pub totp: TotpBody,
}

#[utoipa::path(post, path = "/auth/v1/factors", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    request_body(content = EnrollBody, content_type = "application/json"),
    responses((status = 200, description = "The new, unverified factor with its secret", content_type = "application/json", body = EnrolledBody),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt, session_not_found, or insufficient_aal (a verified factor exists and the session is aal1)", body = GoTrueError),
              (status = 422, description = "mfa_totp_enroll_not_enabled, mfa_factor_name_conflict or too_many_enrolled_mfa_factors", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn enroll_factor(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    GoTrueJson(body): GoTrueJson<EnrollBody>,
) -> Result<Json<EnrolledBody>, GoTrueError> {
    let (claims, user) = signed_in(&state, &ip, &headers).await?;
    if body.factor_type.as_deref() != Some("totp") {
        return Err(mfa_error(MfaError::UnsupportedType, false));
    }
    let e = state
        .accounts
        .enroll_totp(&user, claims.aal == "aal2", body.friendly_name, body.issuer)
        .await
        .map_err(|e| mfa_error(e, false))?;
    Ok(Json(EnrolledBody {
        id: e.factor.id,
        factor_type: e.factor.factor_type,
        friendly_name: e.factor.friendly_name.unwrap_or_default(),
        totp: TotpBody {
            qr_code: e.qr_code,
            secret: e.secret,
            uri: e.uri,
        },
    }))
}

/// A challenge to verify a code against.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthChallenge)]
pub struct ChallengeBody {
    /// The challenge's UUID.
    pub id: String,
    /// `totp`.
    #[serde(rename = "type")]
    pub factor_type: &'static str,
    /// Unix seconds after which it can no longer be verified.
    pub expires_at: i64,
}

#[utoipa::path(post, path = "/auth/v1/factors/{factor_id}/challenge", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    params(("factor_id" = String, Path, description = "The factor's UUID")),
    responses((status = 200, description = "A challenge", content_type = "application/json", body = ChallengeBody),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 404, description = "mfa_factor_not_found", body = GoTrueError),
              (status = 422, description = "mfa_totp_verify_not_enabled", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget or the factor's limit (rate_limit_mfa_verify)", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn challenge_factor(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(factor_id): Path<String>,
) -> Result<Json<ChallengeBody>, GoTrueError> {
    let (claims, _) = signed_in(&state, &ip, &headers).await?;
    factor_limited(&state, &factor_id).await?;
    let (c, expires_at) = state
        .accounts
        .challenge(&claims.sub, &factor_id, &ip.0.to_string())
        .await
        .map_err(|e| mfa_error(e, true))?;
    Ok(Json(ChallengeBody {
        id: c.id,
        factor_type: "totp",
        expires_at,
    }))
}

/// `POST /auth/v1/factors/{factor_id}/verify`.
#[derive(Deserialize, ToSchema)]
#[schema(as = AuthVerifyFactorBody)]
pub(crate) struct VerifyFactorBody {
    /// The challenge's UUID.
    #[schema(value_type = String, required = true)]
    challenge_id: Option<String>,
    /// The six-digit code.
    #[schema(value_type = String, required = true)]
    code: Option<String>,
}

#[utoipa::path(post, path = "/auth/v1/factors/{factor_id}/verify", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    params(("factor_id" = String, Path, description = "The factor's UUID")),
    request_body(content = VerifyFactorBody, content_type = "application/json"),
    responses((status = 200, description = "The session, now aal2, with a new refresh token", content_type = "application/json", body = SessionBody),
              (status = 400, description = "bad_json or validation_failed", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 404, description = "mfa_factor_not_found", body = GoTrueError),
              (status = 422, description = "mfa_verification_failed (wrong or already used code), mfa_challenge_expired, mfa_ip_address_mismatch, mfa_factor_not_found (unknown challenge) or mfa_totp_verify_not_enabled", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget or the factor's limit (rate_limit_mfa_verify)", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn verify_factor(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(factor_id): Path<String>,
    GoTrueJson(body): GoTrueJson<VerifyFactorBody>,
) -> Result<Json<SessionBody>, GoTrueError> {
    let (claims, _) = signed_in(&state, &ip, &headers).await?;
    factor_limited(&state, &factor_id).await?;
    let (Some(challenge_id), Some(code)) = (body.challenge_id, body.code) else {
        return Err(GoTrueError::validation(
            "challenge_id and code are required",
        ));
    };
    let verified = state
        .accounts
        .verify_factor(&claims, &factor_id, &challenge_id, &code, &ip.0.to_string())
        .await;
    match verified {
        Ok((session, ended)) => {
            state.end_sessions(ended).await;
            Ok(Json(session_json(&session)))
        }
        Err(e) => {
            if matches!(e, MfaError::VerificationFailed) {
                state.edge.metrics.auth_failure("mfa_verification_failed");
                crate::http::failures::spend(&state, &ip).await;
            }
            Err(mfa_error(e, true))
        }
    }
}

/// An unenrolled factor.
#[derive(Serialize, ToSchema)]
#[schema(as = AuthUnenrolled)]
pub struct UnenrolledBody {
    /// The factor's UUID.
    pub id: String,
}

#[utoipa::path(delete, path = "/auth/v1/factors/{factor_id}", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    params(("factor_id" = String, Path, description = "The factor's UUID")),
    responses((status = 200, description = "Removed; sessions it made aal2 are aal1 again at their next refresh", content_type = "application/json", body = UnenrolledBody),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 404, description = "mfa_factor_not_found", body = GoTrueError),
              (status = 422, description = "insufficient_aal: the factor is verified and the session is aal1", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn unenroll_factor(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(factor_id): Path<String>,
) -> Result<Json<UnenrolledBody>, GoTrueError> {
    let (claims, _) = signed_in(&state, &ip, &headers).await?;
    let id = state
        .accounts
        .unenroll(&claims, &factor_id)
        .await
        .map_err(|e| mfa_error(e, false))?;
    Ok(Json(UnenrolledBody { id }))
}
