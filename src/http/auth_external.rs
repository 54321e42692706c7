//! `/auth/v1/authorize`, `/auth/v1/callback` and `/auth/v1/user/identities`: sign-in with
//! external providers and linked identities, as GoTrue answers them (supabase-js
//! `signInWithOAuth`, `linkIdentity`, `unlinkIdentity`, `getUserIdentities`).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::config::Policy;
use crate::external::{Callback, ExternalError, Landing, Start};
use crate::http::auth_email::land;
use crate::http::auth_v1::{device, limited, signed_in};
use crate::http::extract::ClientIp;
use crate::http::gotrue::{gated, ErrorCode, GoTrueError};

/// The routes that need the `apikey` (and a signed-in user).
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(gated(state, routes!(link_identity)))
        .routes(gated(state, routes!(unlink_identity)))
}

/// The routes a browser navigates to: no `apikey` (Supabase's gateway opens them too).
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(callback))
}

impl From<ExternalError> for GoTrueError {
    fn from(e: ExternalError) -> Self {
        use ErrorCode as C;
        let bad = StatusCode::BAD_REQUEST;
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        let (status, code, message) = match e {
            ExternalError::UnsupportedProvider(name) => (
                bad,
                C::ValidationFailed,
                format!("Unsupported provider: Provider {name} could not be found"),
            ),
            ExternalError::StateMissing => (
                bad,
                C::BadOauthCallback,
                "OAuth state parameter missing".into(),
            ),
            ExternalError::StateNotFound => (
                bad,
                C::BadOauthState,
                "OAuth state not found or expired".into(),
            ),
            ExternalError::StateExpired => {
                (bad, C::BadOauthState, "OAuth state has expired".into())
            }
            ExternalError::ProviderRefused(_, description) => {
                (bad, C::BadOauthCallback, description)
            }
            ExternalError::CodeMissing => (
                bad,
                C::BadOauthCallback,
                "OAuth callback with missing authorization code".into(),
            ),
            ExternalError::ExchangeRefused => (
                bad,
                C::BadOauthCallback,
                "Unable to exchange external code".into(),
            ),
            ExternalError::ProviderUnavailable => (
                StatusCode::BAD_GATEWAY,
                C::UnexpectedFailure,
                "The external provider could not be reached".into(),
            ),
            ExternalError::IdToken(check) => (
                bad,
                C::BadOauthCallback,
                format!("The provider's ID token failed its {check} check"),
            ),
            ExternalError::Profile => (
                bad,
                C::BadOauthCallback,
                "Error getting user profile from external provider".into(),
            ),
            ExternalError::NoEmail => (
                bad,
                C::BadOauthCallback,
                "Error getting user email from external provider".into(),
            ),
            ExternalError::EmailUnverified(p) => (
                unprocessable,
                C::ProviderEmailNeedsVerification,
                format!("Unverified email with {p}. Verify the email with {p} in order to sign in"),
            ),
            ExternalError::IdentityExists(mine) => (
                unprocessable,
                C::IdentityAlreadyExists,
                if mine {
                    "Identity is already linked".into()
                } else {
                    "Identity is already linked to another user".into()
                },
            ),
            ExternalError::LinkTargetGone => (
                unprocessable,
                C::UserNotFound,
                "Linking target user not found".into(),
            ),
            ExternalError::IdentityNotFound => (
                unprocessable,
                C::IdentityNotFound,
                "Identity doesn't exist".into(),
            ),
            ExternalError::LastIdentity => (
                unprocessable,
                C::SingleIdentityNotDeletable,
                "User must have at least 1 identity after unlinking".into(),
            ),
            ExternalError::Challenge(_) => {
                (bad, C::ValidationFailed, "Invalid code_challenge".into())
            }
            ExternalError::Account(a) => return a.into(),
            ExternalError::Busy => return crate::accounts::AccountError::Busy.into(),
            ExternalError::Internal => return crate::accounts::AccountError::Internal.into(),
        };
        GoTrueError::new(status, code, message)
    }
}

/// Query parameters `/authorize` reads itself; every other one goes on to the provider.
const OWN_PARAMS: [&str; 16] = [
    "provider",
    "scopes",
    "redirect_to",
    "code_challenge",
    "code_challenge_method",
    "skip_http_redirect",
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "nonce",
    "scope",
    "apikey",
    "invite_token",
    "flow_type",
    "code_verifier",
];

async fn start(
    state: &AppState,
    ip: &ClientIp,
    q: &HashMap<String, String>,
    link_user_id: Option<&str>,
) -> Result<String, GoTrueError> {
    limited(state, Policy::SignIn, ip).await?;
    let get = |k: &str| q.get(k).map(String::as_str);
    crate::http::auth_email::challenge(get("code_challenge"), get("code_challenge_method"))?;
    let redirect_to = state.email.mailer.redirects().resolve(get("redirect_to"));
    let mut extra: Vec<(String, String)> = q
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            !OWN_PARAMS.contains(&k.as_str())
                && !k.starts_with("code_challenge")
                && k.len() <= 64
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    extra.sort();
    Ok(state
        .external
        .start(Start {
            provider: get("provider").unwrap_or(""),
            scopes: get("scopes"),
            redirect_to,
            code_challenge: get("code_challenge"),
            code_challenge_method: get("code_challenge_method"),
            extra,
            link_user_id,
        })
        .await?)
}

fn found(url: &str) -> Response {
    match axum::http::HeaderValue::from_str(url) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => {
            GoTrueError::validation("the provider's URL is not a valid header").into_response()
        }
    }
}

#[utoipa::path(get, path = "/auth/v1/authorize", tag = "auth", operation_id = "external_authorize",
    security(()),
    params(("provider" = String, Query, description = "A configured external provider (`external_providers`)"),
           ("redirect_to" = Option<String>, Query, description = "Where to land afterwards (checked against redirect_allowlist; else site_url)"),
           ("scopes" = Option<String>, Query, description = "Scopes asked for beside the provider's configured ones (space separated)"),
           ("code_challenge" = Option<String>, Query, description = "PKCE (flowType 'pkce'): the callback then lands with `?code=`"),
           ("code_challenge_method" = Option<String>, Query, description = "`s256` or `plain`, with code_challenge")),
    responses((status = 302, description = "To the provider's authorization page, with `state`, `nonce` (OpenID Connect) and a PKCE S256 challenge of Gatehouse's own",
               headers(("Location" = String, description = "The provider's authorization URL"))),
              (status = 400, description = "validation_failed: unsupported or disabled provider, or a malformed code_challenge", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit", body = GoTrueError),
              (status = 502, description = "unexpected_failure: the provider's discovery document could not be read", body = GoTrueError),
              (status = 503, description = "request_timeout: storage or the limiter is unavailable", body = GoTrueError)))]
pub(crate) async fn authorize(
    State(state): State<AppState>,
    ip: ClientIp,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, GoTrueError> {
    let url = start(&state, &ip, &q, None).await?;
    Ok(found(&url))
}

/// The `error` of a failed callback's redirect, as GoTrue derives it from the status.
fn oauth_error(status: StatusCode, code: ErrorCode) -> &'static str {
    if matches!(
        code,
        ErrorCode::ProviderEmailNeedsVerification | ErrorCode::UserBanned
    ) {
        return "access_denied";
    }
    match status.as_u16() {
        400 => "invalid_request",
        401 => "unauthorized_client",
        403 => "access_denied",
        429 => "over_request_rate_limit",
        503 => "temporarily_unavailable",
        _ => "server_error",
    }
}

#[utoipa::path(get, path = "/auth/v1/callback", tag = "auth", operation_id = "external_callback",
    security(()),
    params(("state" = String, Query, description = "The state /authorize sent the provider (single use, 10 minutes)"),
           ("code" = Option<String>, Query, description = "The provider's authorization code"),
           ("error" = Option<String>, Query, description = "The provider's refusal"),
           ("error_description" = Option<String>, Query, description = "Its description")),
    responses((status = 302, description = "To the flow's redirect_to (site_url when the state is unknown): signed in, the session in the fragment (`access_token`, `refresh_token`, `expires_in`, `expires_at`, `token_type`, `provider_token`), or for a PKCE flow `?code=` for `POST /auth/v1/token?grant_type=pkce`; a failure as `error`, `error_code` and `error_description` in the query and the fragment (bad_oauth_state, bad_oauth_callback, provider_email_needs_verification, identity_already_exists, user_banned, …)",
               headers(("Location" = String, description = "The landing page")))))]
pub(crate) async fn callback(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).map(String::as_str);
    if let Err(e) = limited(&state, Policy::SignIn, &ip).await {
        return failed(&state.email.mailer.redirects().resolve(None), true, e, None);
    }
    let finished = state
        .external
        .finish(
            Callback {
                code: get("code"),
                state: get("state"),
                error: get("error"),
                error_description: get("error_description"),
            },
            &device(&ip, &headers),
        )
        .await;
    let target = finished
        .redirect_to
        .unwrap_or_else(|| state.email.mailer.redirects().resolve(None));
    match finished.outcome {
        Ok(Landing::Code(code)) => with_status(land(&target, &[("code", code)], &[])),
        Ok(Landing::Session {
            session,
            provider_token,
            provider_refresh_token,
        }) => {
            let mut fragment = vec![
                ("access_token", session.access_token.clone()),
                ("expires_at", session.expires_at.to_string()),
                ("expires_in", session.expires_in.to_string()),
                ("provider_token", provider_token),
            ];
            if let Some(r) = provider_refresh_token {
                fragment.push(("provider_refresh_token", r));
            }
            fragment.push(("refresh_token", session.refresh_token.clone()));
            fragment.push(("token_type", "bearer".into()));
            with_status(land(&target, &[], &fragment))
        }
        Err(e) => {
            let provider_error = match &e {
                ExternalError::ProviderRefused(error, _) => Some(error.clone()),
                _ => None,
            };
            failed(&target, finished.pkce, e.into(), provider_error)
        }
    }
}

/// GoTrue redirects with 302 where the verify link answers 303.
fn with_status(mut res: Response) -> Response {
    if res.status() == StatusCode::SEE_OTHER {
        *res.status_mut() = StatusCode::FOUND;
    }
    res
}

/// A failed callback: the error in the query and the fragment (GoTrue sets both).
fn failed(target: &str, _pkce: bool, e: GoTrueError, provider_error: Option<String>) -> Response {
    let (status, code, message) = e.parts();
    let error = provider_error.unwrap_or_else(|| oauth_error(status, code).to_string());
    let pairs = [
        ("error", error),
        ("error_code", code.to_string()),
        ("error_description", message),
    ];
    with_status(land(target, &pairs, &pairs))
}

/// `{url}`: where the browser goes to link (`skip_http_redirect=true`).
#[derive(Serialize, ToSchema)]
pub(crate) struct LinkUrl {
    /// The provider's authorization URL.
    url: String,
}

#[utoipa::path(get, path = "/auth/v1/user/identities/authorize", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    params(("provider" = String, Query, description = "A configured external provider"),
           ("redirect_to" = Option<String>, Query, description = "Where to land afterwards (checked against redirect_allowlist)"),
           ("scopes" = Option<String>, Query, description = "Extra scopes"),
           ("skip_http_redirect" = Option<bool>, Query, description = "`true` (supabase-js): answer `{url}` instead of a redirect"),
           ("code_challenge" = Option<String>, Query, description = "PKCE challenge"),
           ("code_challenge_method" = Option<String>, Query, description = "`s256` or `plain`")),
    responses((status = 200, description = "`{url}`: the provider's authorization URL; its callback links the identity to the signed-in user and signs in again", content_type = "application/json", body = LinkUrl),
              (status = 302, description = "To the provider (without skip_http_redirect)"),
              (status = 400, description = "validation_failed: unsupported provider or malformed code_challenge", body = GoTrueError),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit", body = GoTrueError),
              (status = 502, description = "unexpected_failure: the provider could not be reached", body = GoTrueError),
              (status = 503, description = "request_timeout", body = GoTrueError)))]
pub(crate) async fn link_identity(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, GoTrueError> {
    let (_, user) = signed_in(&state, &ip, &headers).await?;
    let url = start(&state, &ip, &q, Some(&user.id)).await?;
    if q.get("skip_http_redirect").map(String::as_str) == Some("true") {
        return Ok(Json(LinkUrl { url }).into_response());
    }
    Ok(found(&url))
}

#[utoipa::path(delete, path = "/auth/v1/user/identities/{identity_id}", tag = "auth",
    security(("apikey" = [], "bearer" = [])),
    params(("identity_id" = String, Path, description = "The identity's `identity_id`")),
    responses((status = 200, description = "Unlinked: `{}`", content_type = "application/json", body = Object),
              (status = 401, description = "no_api_key, invalid_api_key or no_authorization", body = GoTrueError),
              (status = 403, description = "bad_jwt or session_not_found", body = GoTrueError),
              (status = 404, description = "validation_failed: identity_id is not a UUID", body = GoTrueError),
              (status = 422, description = "single_identity_not_deletable (the user's only identity) or identity_not_found (none of the user's external identities; the email identity is not unlinked here)", body = GoTrueError),
              (status = 429, description = "over_request_rate_limit: the failure budget", body = GoTrueError),
              (status = 503, description = "request_timeout", body = GoTrueError)))]
pub(crate) async fn unlink_identity(
    State(state): State<AppState>,
    ip: ClientIp,
    headers: HeaderMap,
    Path(identity_id): Path<String>,
) -> Result<Json<Value>, GoTrueError> {
    let (_, user) = signed_in(&state, &ip, &headers).await?;
    if uuid::Uuid::try_parse(&identity_id).is_err() {
        return Err(GoTrueError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ValidationFailed,
            "identity_id must be an UUID",
        ));
    }
    state
        .external
        .unlink(&user.id, &identity_id, Some(ip.0.to_string()))
        .await?;
    Ok(Json(json!({})))
}
