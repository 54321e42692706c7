//! The captcha hook (`captcha_provider`): sign-up, password sign-in, `/otp`, `/magiclink` and
//! `/recover` carry `gotrue_meta_security.captcha_token`, which the provider's verify
//! endpoint must accept (Turnstile and hCaptcha share the form: `secret`, `response`,
//! `remoteip`, answering `{"success": …, "error-codes": […]}`). A request with a service key
//! skips it, as GoTrue's does.

use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::http::extract::ClientIp;
use crate::http::gotrue::{ErrorCode, GoTrueError};

/// `gotrue_meta_security` of a request body.
#[derive(Deserialize, ToSchema, Default)]
pub(crate) struct MetaSecurity {
    /// The token the captcha widget produced.
    pub(crate) captcha_token: Option<String>,
}

/// What the provider answers.
#[derive(Deserialize)]
struct Verdict {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

/// The longest token sent on (Turnstile's are up to 2048 characters).
const MAX_TOKEN: usize = 4096;

fn failed(why: &str) -> GoTrueError {
    GoTrueError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::CaptchaFailed,
        format!("captcha protection: request disallowed ({why})"),
    )
}

/// Passes when no captcha is configured, when the request carries a service key, or when the
/// provider accepts the token; else `captcha_failed`. A provider that cannot be reached in
/// `captcha_timeout_ms`, or answers something else than its JSON, refuses the request too
/// (fail closed).
pub(crate) async fn check(
    state: &AppState,
    ip: &ClientIp,
    headers: &HeaderMap,
    meta: Option<&MetaSecurity>,
) -> Result<(), GoTrueError> {
    let (Some(provider), Some(secret)) =
        (state.config.captcha_provider, &state.config.captcha_secret)
    else {
        return Ok(());
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if bearer.is_some_and(|t| crate::http::auth_admin::service_key_kind(state, t).is_some()) {
        return Ok(());
    }
    let token = meta
        .and_then(|m| m.captcha_token.as_deref())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| failed("no captcha_token found"))?;
    if token.len() > MAX_TOKEN {
        return Err(failed("invalid-input-response"));
    }
    let url = state
        .config
        .captcha_verify_url
        .as_deref()
        .unwrap_or(provider.verify_url());
    let remote_ip = ip.0.to_string();
    let form = [
        ("secret", secret.expose_secret()),
        ("response", token),
        ("remoteip", remote_ip.as_str()),
    ];
    let sent = state
        .edge
        .proxy_client
        .post(url)
        .timeout(Duration::from_millis(state.config.captcha_timeout_ms))
        .form(&form)
        .send()
        .await;
    let verdict = match sent {
        Ok(res) => res.json::<Verdict>().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match verdict {
        Ok(v) if v.success => Ok(()),
        Ok(v) => {
            let codes = if v.error_codes.is_empty() {
                "invalid-input-response".to_string()
            } else {
                v.error_codes
                    .iter()
                    .map(|c| {
                        c.chars()
                            .filter(|c| c.is_ascii_graphic())
                            .take(64)
                            .collect::<String>()
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Err(failed(&codes))
        }
        Err(e) => {
            tracing::warn!(error = %e, "captcha verification failed; request refused");
            Err(failed("verification unavailable"))
        }
    }
}
